"""dictopt: verify the first-order optimality conditions of dictionary learning and SAEs.

The canonical objects live in :mod:`dictopt.problem`; data sources in :mod:`dictopt.data`;
solvers in :mod:`dictopt.solvers`; the checker in :mod:`dictopt.check`. Every subpackage is an
attribute (``dictopt.io.load``, ``dictopt.check.check``), imported on first use.
"""

import importlib
from typing import Any

from dictopt.data.evaluate import evaluate
from dictopt.problem import Dictionary, LossBreakdown, explained_variance, objective
from dictopt.validation import DictoptInputError

__version__ = "0.1.0"

#: Subpackages reachable as attributes after ``import dictopt`` (imported on first use, so
#: ``import dictopt`` stays as fast as importing :mod:`dictopt.problem`).
SUBMODULES = ("check", "coders", "data", "demo", "distributed", "evals", "integrations", "io",
              "lasso", "metrics", "plots", "problem",
              "solvers", "validation", "wide")


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"dictopt.{name}")
    raise AttributeError(f"module 'dictopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(SUBMODULES))

__all__ = [
    "Dictionary",
    "DictoptInputError",
    "LossBreakdown",
    "evaluate",
    "explained_variance",
    "objective",
    "__version__",
]
