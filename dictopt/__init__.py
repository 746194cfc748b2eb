"""dictopt: verify the first-order optimality conditions of dictionary learning and SAEs.

The canonical objects live in :mod:`dictopt.problem`; data sources in :mod:`dictopt.data`;
solvers in :mod:`dictopt.solvers`; the checker in :mod:`dictopt.check`.
"""

from dictopt.data.evaluate import evaluate
from dictopt.problem import Dictionary, LossBreakdown, explained_variance, objective
from dictopt.validation import DictoptInputError

__version__ = "0.1.0"

__all__ = [
    "Dictionary",
    "DictoptInputError",
    "LossBreakdown",
    "evaluate",
    "explained_variance",
    "objective",
    "__version__",
]
