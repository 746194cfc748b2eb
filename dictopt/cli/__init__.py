"""The ``dictopt`` command.

Each subcommand lives in its own module of this package and defines
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` with
``run(args) -> int``. Modules are discovered automatically, so adding a command touches no
shared file. Bad input (:class:`~dictopt.validation.DictoptInputError`) exits with status 2 and
a one-line message; everything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import dictopt.integrations.saelens  # noqa: F401  (registers the saelens-* solvers)
from dictopt import __version__
from dictopt.validation import DictoptInputError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="dictopt",
        description="Check dictionaries and sparse autoencoders against the first-order "
        "optimality conditions of nonnegative L1 dictionary learning.",
    )
    parser.add_argument("--version", action="version", version=f"dictopt {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log progress (-v) or debug (-vv)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except DictoptInputError as err:
        sys.stderr.write(f"dictopt {args.command}: error: {err}\n")
        return 2
