"""The registry is data: every entry loads, matches its class, and is listed."""

from pathlib import Path

import pytest

from kfcpo.cli import main
from kfcpo.registry import COMPONENT_FAMILIES, FAMILIES, Registry, check_signature


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry()


def test_every_component_matches_its_class(registry) -> None:
    for family in COMPONENT_FAMILIES:
        assert registry.names(family), family
        for name in registry.names(family):
            assert check_signature(registry.get(family, name)) == [], (family, name)


def test_the_signature_check_names_a_parameter_the_class_lacks(tmp_path: Path) -> None:
    """The negative control of the test above: an entry whose params its class does not
    accept is reported, and only the unknown ones."""
    (tmp_path / "blender").mkdir()
    (tmp_path / "blender" / "typo.yaml").write_text(
        "description: margin blender with two misspelt params\n"
        "target: kfcpo.blender.margin.MarginBlender\n"
        "params: {k: 10.0, margn: 0.7, taget_kl: 0.01}\n")
    entry = Registry([tmp_path]).get("blender", "typo")
    assert check_signature(entry) == ["margn", "taget_kl"]


def test_presets_name_known_components(registry) -> None:
    for name in registry.names("algorithm"):
        preset = registry.get("algorithm", name).config
        for family in COMPONENT_FAMILIES:
            assert preset[family]["name"] in registry.names(family), (name, family)


def test_registry_command_lists_every_entry(capsys, registry) -> None:
    assert main(["registry"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        assert f"{family}:" in out
        for name in registry.names(family):
            entry = registry.get(family, name)
            assert f"  {name}" in out and entry.description in out
    assert "defaults: lr=0.0003, max_grad_norm=40.0" in out
    # The composition rules validation applies are visible to the user too.
    for family in FAMILIES:
        for name in registry.names(family):
            entry = registry.get(family, name)
            if entry.traits:
                assert f"traits: {', '.join(entry.traits)}" in out, (family, name)
            for rule in entry.excludes:
                assert f"not with: {' + '.join(rule.traits)} ({rule.why})" in out, (family, name)
    assert "traits: optimizer_step" in out and "not with: single_step" in out


def test_extra_registry_folder_adds_components(tmp_path) -> None:
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "mine.yaml").write_text(
        "description: my guard\ntarget: kfcpo.guard.early_stop.EarlyStop\nparams: {target_kl: 0.1}\n"
    )
    cat = Registry([*Registry().roots, tmp_path])
    assert "mine" in cat.names("guard")
    assert cat.build("guard", "mine", {}).target_kl == 0.1
