"""``spikeforge recipes``: the recipes and their defaults (every one can be overridden)."""

from __future__ import annotations

import argparse

HELP = "list the training recipes and their default settings"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="show every setting of this recipe")
    parser.add_argument("--json", action="store_true", help="print the defaults as JSON")


def run(args: argparse.Namespace) -> int:
    import json

    from ..train.recipes import RECIPES, recipe_defaults

    names = [args.name] if args.name else list(RECIPES)
    configs = {name: recipe_defaults(name).to_dict() for name in names}
    if args.json:
        print(json.dumps(configs, indent=2))
        return 0
    for name, config in configs.items():
        print(f"{name}: {config['description']}")
        keys = [k for k in config if k not in ("recipe", "description")] if args.name else \
            [k for k in RECIPES[name] if k != "description"]
        print("    " + "  ".join(f"{k}={_show(config[k])}" for k in keys))
    return 0


def _show(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}:{v:g}" for k, v in value.items())
    return str(value)
