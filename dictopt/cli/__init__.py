"""The ``dictopt`` command.

Each subcommand lives in its own module of this package and defines
``register(subparsers) -> None``, which adds its parser and sets ``func=run`` with
``run(args) -> int``. Modules are discovered automatically, so adding a command touches no
shared file. Bad input (:class:`~dictopt.validation.DictoptInputError`), an output that cannot
be written (full disk, read-only: :class:`OSError`) and a training run that diverged exit with
status 2 and a one-line message; everything else is a bug and shows its traceback.
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
    from dictopt.solvers.train import TrainingDivergedError

    try:
        return int(args.func(args) or 0)
    except (DictoptInputError, TrainingDivergedError) as err:
        return _error(args.command, str(err))
    except OSError as err:  # the environment, not a bug: disk full, permissions, ...
        where = f"{err.filename}: " if err.filename else ""
        return _error(args.command, f"{where}{err.strerror or err}")


def _error(command: str, message: str) -> int:
    """Write ``dictopt COMMAND: error: MESSAGE`` on one line; return exit status 2."""
    line = " ".join(message.split())
    sys.stderr.write(f"dictopt {command}: error: {line}\n")
    return 2
