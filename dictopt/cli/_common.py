"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

from dictopt.validation import DictoptInputError


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=1e-3", "tied=true"]`` → ``{"lr": 0.001, "tied": True}`` (JSON values, else str)."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DictoptInputError(f"--set: expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


#: Arguments every solver takes from the command line itself, never from --set.
_FIXED = {"source", "K", "lam", "seed", "progress"}


def check_solver_options(fit: Any, options: dict[str, Any], solver: str) -> dict[str, Any]:
    """Refuse ``--set`` keys ``fit`` does not take and values of the wrong kind.

    Solvers with an explicit signature are checked here, before any work: an unknown key is
    named with the known ones, and a value whose type differs from the default's (a string
    for an integer, a list for a number) is refused. Solvers taking ``**options`` check their
    own (the SAE trainer does).
    """
    params = inspect.signature(fit).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    settable = {k for k, p in params.items() if "Callable" not in str(p.annotation)}
    known = sorted(settable - _FIXED)
    for key, value in options.items():
        if key not in known:
            raise DictoptInputError(
                f"--set: unknown option {key!r} for solver {solver}; known: {', '.join(known)}"
            )
        default = params[key].default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = True
        if not ok:
            kind = {bool: "true or false", int: "an integer", float: "a number"}
            raise DictoptInputError(
                f"--set {key}: expected {kind[type(default)]} (default {default!r}), "
                f"got {value!r}"
            )
    return options


def nonnegative_int(text: str) -> int:
    """argparse type: an integer ≥ 0 (argparse itself exits 2 with the message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = nonnegative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value


def unit_interval(text: str) -> float:
    """argparse type: a number in (0, 1] (a cosine threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def add_data_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--world NAME`` or ``--activations PATH`` (a .npy file or a folder of shards)."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--world", help="a built-in synthetic world (see `dictopt worlds`)")
    group.add_argument(
        "--activations", help="a .npy file [N, d] or a folder of .npy shards of equal width"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--world-set",
        action="append",
        metavar="KEY=VALUE",
        help="override a world parameter (repeatable), e.g. --world-set n=5000",
    )


def load_data(args: argparse.Namespace) -> Any:
    """The activation source named by ``--world`` / ``--activations``."""
    from dictopt.data.sources import as_source

    if getattr(args, "activations", None):
        return as_source(args.activations)
    from dictopt.data.worlds import make_world

    world = make_world(args.world, seed=args.seed, **parse_options(args.world_set))
    return as_source(world.x)
