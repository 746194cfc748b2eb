"""The wide-limit bound ``L_∞`` (THEORY §3) with every sum over points taken on Dask:
:func:`dictopt.wide.bound.wide_limit_bound` with a :class:`~dictopt.distributed.DaskExecutor`.

The iterates equal the single-process ones up to the order of floating-point additions.
"""

from __future__ import annotations

from typing import Any

from dictopt.distributed.executor import executor_from
from dictopt.validation import DictoptInputError
from dictopt.wide.bound import WideBound, wide_limit_bound


def wide_limit_bound_distributed(
    x: Any, lam: float, *, method: str = "fast", **kwargs: Any
) -> WideBound:
    """:func:`dictopt.wide.bound.wide_limit_bound` with its sums over points on Dask.

    Parameters
    ----------
    x:
        Anything :func:`~dictopt.distributed.partition_source` accepts.
    lam:
        λ > 0.
    method:
        ``"fast"`` or ``"mm"`` (the cvxpy reference needs the data in one process).
    **kwargs:
        The cluster arguments of :class:`~dictopt.distributed.DaskExecutor` and ``tol``,
        ``max_iter``, ``init``, ``chunk_size`` as for ``wide_limit_bound``.

    Returns
    -------
    WideBound
    """
    if method not in ("fast", "mm"):
        raise DictoptInputError(f"method: expected 'fast' or 'mm', got {method!r}")
    kwargs.setdefault("chunk_size", 65536)
    return wide_limit_bound(x, lam, method=method, executor=executor_from(kwargs), **kwargs)
