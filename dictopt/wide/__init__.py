"""The wide-dictionary limit of THEORY.md §3: the bound ``L_∞``, the dictionary attaining it,
its Gram (representational-similarity) form, width sweeps and the one-dimensional model.

Modules: :mod:`.bound` (``wide_limit_bound``), :mod:`.limit_dictionary`, :mod:`.gram`
(exploratory, cvxpy, N ≤ 60), :mod:`.sweep`, :mod:`.one_d`, :mod:`.conditions` (compact C1–C5).
"""

from dictopt.wide.bound import WideBound, bound_objective, huber, wide_limit_bound
from dictopt.wide.limit_dictionary import LimitDictionary, limit_dictionary
from dictopt.wide.one_d import huber_location, predict_one_d
from dictopt.wide.sweep import SweepResult, WidthRow, sweep

__all__ = [
    "LimitDictionary",
    "SweepResult",
    "WideBound",
    "WidthRow",
    "bound_objective",
    "huber",
    "huber_location",
    "limit_dictionary",
    "predict_one_d",
    "sweep",
    "wide_limit_bound",
]
