"""`kfcpo fit`, `kfcpo registry`: the command line. Config errors exit 2, one line."""

from __future__ import annotations

import argparse
import sys

from omegaconf import OmegaConf

from kfcpo.config import ConfigError, load_config
from kfcpo.registry import FAMILIES, Catalogue, RegistryError, default_roots

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kfcpo", description="Safe RL on Lightning: KFCPO and baselines")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train an agent", description="kfcpo fit --config FILE [key=value ...]")
    fit.add_argument("--config", "-c", help="experiment YAML (e.g. conf/button.yaml)")
    fit.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    fit.add_argument("overrides", nargs="*", help="key=value overrides, e.g. env.num_envs=4")
    reg = sub.add_parser("registry", help="list the component catalogue")
    reg.add_argument("family", nargs="?", choices=FAMILIES, help="only this family")
    return parser


def _print_registry(family: str | None) -> None:
    catalogue = Catalogue(default_roots())
    for fam in [family] if family else FAMILIES:
        print(f"{fam}:")
        for name in catalogue.names(fam):
            entry = catalogue.get(fam, name)
            print(f"  {name:<14} {entry.description}")
            if entry.params:
                defaults = ", ".join(f"{k}={v}" for k, v in entry.params.items())
                print(f"  {'':<14} defaults: {defaults}")
            if entry.config:
                parts = [
                    f"{k}={v['name']}" for k, v in entry.config.items() if isinstance(v, dict) and "name" in v
                ]
                print(f"  {'':<14} composition: {', '.join(parts)}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "registry":
            _print_registry(args.family)
            return 0
        cfg, _ = load_config(args.config, args.overrides)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg), end="")
            return 0
        from kfcpo.train import fit  # heavy imports only when training

        from lightning.pytorch.utilities import rank_zero_only

        out_dir = fit(cfg)
        rank_zero_only(print)(f"run folder: {out_dir}")
        return 0
    except (ConfigError, RegistryError) as err:
        print(f"kfcpo: error: {err}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
