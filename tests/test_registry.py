"""The catalogue is data: every entry loads, matches its class, and is listed."""

import pytest

from kfcpo.cli import main
from kfcpo.registry import COMPONENT_FAMILIES, FAMILIES, Catalogue, check_signature


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue()


def test_every_component_matches_its_class(catalogue) -> None:
    for family in COMPONENT_FAMILIES:
        assert catalogue.names(family), family
        for name in catalogue.names(family):
            assert check_signature(catalogue.get(family, name)) == [], (family, name)


def test_presets_name_known_components(catalogue) -> None:
    for name in catalogue.names("algorithm"):
        preset = catalogue.get("algorithm", name).config
        for family in COMPONENT_FAMILIES:
            assert preset[family]["name"] in catalogue.names(family), (name, family)


def test_registry_command_lists_every_entry(capsys, catalogue) -> None:
    assert main(["registry"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        assert f"{family}:" in out
        for name in catalogue.names(family):
            entry = catalogue.get(family, name)
            assert f"  {name}" in out and entry.description in out
    assert "defaults: lr=0.0003, max_grad_norm=40.0" in out
    # The composition rules validation applies are visible to the user too.
    for family in FAMILIES:
        for name in catalogue.names(family):
            entry = catalogue.get(family, name)
            if entry.traits:
                assert f"traits: {', '.join(entry.traits)}" in out, (family, name)
            for rule in entry.excludes:
                assert f"not with: {' + '.join(rule.traits)} ({rule.why})" in out, (family, name)
    assert "traits: optimizer_step" in out and "not with: single_step" in out


def test_extra_catalogue_folder_adds_components(tmp_path) -> None:
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "mine.yaml").write_text(
        "description: my guard\ntarget: kfcpo.guard.early_stop.EarlyStop\nparams: {target_kl: 0.1}\n"
    )
    cat = Catalogue([*Catalogue().roots, tmp_path])
    assert "mine" in cat.names("guard")
    assert cat.build("guard", "mine", {}).target_kl == 0.1
