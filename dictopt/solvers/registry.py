"""Solvers by name: every way of learning a dictionary ends in a canonical ``Dictionary``.

A solver is a function ``fit(source, *, K, lam, seed, progress, **options) -> Dictionary``
registered under a name (``classical``, ``sklearn``, ``cvxpy``, ``sae-relu``, ...). The CLI's
``dictopt train --solver NAME`` looks it up here; ``options`` come from ``--set key=value``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dictopt.validation import DictoptInputError

#: Modules of this layer that register solvers when imported (imported by :func:`get_solver`).
#: Solvers of higher layers register themselves when their module is imported (the SAELens
#: trainer in :mod:`dictopt.integrations.saelens`, imported by the command line).
SOLVER_PROVIDERS: list[str] = [
    "dictopt.solvers.classical",
    "dictopt.solvers.convex",
    "dictopt.solvers.train",
]


@dataclass(frozen=True)
class SolverSpec:
    """A registered solver: its name, fit function and a one-line summary."""

    name: str
    fit: Callable[..., Any]
    summary: str
    needs_lam: bool = True


SOLVERS: dict[str, SolverSpec] = {}


def register_solver(
    name: str, summary: str, *, needs_lam: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fit(source, *, K, lam, seed, progress, **options)``.

    Parameters
    ----------
    name:
        The solver's name (``--solver NAME``).
    summary:
        One line for ``dictopt solvers``.
    needs_lam:
        Whether the solver needs λ.

    Returns
    -------
    Callable
        The decorator (it returns ``fit`` unchanged).
    """

    def wrap(fit: Callable[..., Any]) -> Callable[..., Any]:
        if name in SOLVERS and SOLVERS[name].fit is not fit:
            raise ValueError(f"solver {name!r} is registered twice")
        SOLVERS[name] = SolverSpec(name, fit, summary, needs_lam)
        return fit

    return wrap


def load_providers() -> None:
    """Import every solver module so that the registry is complete.

    Returns
    -------
    None
        The registry holds every solver of this layer afterwards.
    """
    for module in SOLVER_PROVIDERS:
        importlib.import_module(module)


def get_solver(name: str) -> SolverSpec:
    """The solver registered as ``name`` (clear error listing the known ones).

    Parameters
    ----------
    name:
        A registered name.

    Returns
    -------
    SolverSpec
        Its name, fit function and summary.
    """
    load_providers()
    try:
        return SOLVERS[name]
    except KeyError:
        known = ", ".join(sorted(SOLVERS))
        raise DictoptInputError(f"unknown solver {name!r}; known: {known}") from None
