"""``dictopt solvers``: list the registered solvers."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solvers", help="list the solvers `dictopt train --solver` accepts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.solvers.registry import SOLVERS, load_providers

    load_providers()
    width = max(len(name) for name in SOLVERS)
    for name in sorted(SOLVERS):
        print(f"{name:<{width}}  {SOLVERS[name].summary}")
    return 0
