"""``dictopt worlds``: list the synthetic worlds, their defaults and parameters."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worlds",
        help="list the worlds `--world` accepts, with their default parameters",
        description="List the built-in worlds. Override a parameter with --world-set KEY=VALUE.",
    )
    p.add_argument("name", nargs="?", help="show one world's parameters with their meaning")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.data.worlds import WORLDS
    from dictopt.validation import DictoptInputError

    if args.name:
        if args.name not in WORLDS:
            raise DictoptInputError(
                f"unknown world {args.name!r}; known worlds: {', '.join(sorted(WORLDS))}"
            )
        spec = WORLDS[args.name]
        sys.stdout.write(f"{spec.name}: {spec.summary}\n")
        width = max(len(key) for key in spec.defaults)
        for key, value in spec.defaults.items():
            sys.stdout.write(f"  {key:<{width}} = {json.dumps(value):<10} {spec.param_docs[key]}\n")
        return 0
    width = max(len(name) for name in WORLDS)
    for name in sorted(WORLDS):
        spec = WORLDS[name]
        defaults = " ".join(f"{k}={json.dumps(v)}" for k, v in spec.defaults.items())
        sys.stdout.write(f"{name:<{width}}  {spec.summary}\n{'':<{width}}  defaults: {defaults}\n")
    return 0
