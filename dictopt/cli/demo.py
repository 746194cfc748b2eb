"""``dictopt demo``: the README's main job on built-in defaults."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="plant a feature hierarchy, check and repair it, learn and check a dictionary",
        description="Runs the built-in demonstration (a few minutes on 2 cores) and writes "
        "dictionaries, check reports and a summary to --out.",
    )
    p.add_argument("--out", default="dictopt-demo", help="output folder (default dictopt-demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.demo import run_demo

    def narrate(line: str) -> None:  # each line as its phase ends, not all at the end
        print(line, flush=True)

    run_demo(args.out, seed=args.seed, progress=not args.quiet, narrate=narrate)
    return 0
