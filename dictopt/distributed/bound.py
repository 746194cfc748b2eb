"""The wide-limit bound ``L_∞`` (THEORY §3) with every sum over points taken on Dask:
:func:`dictopt.wide.bound.wide_limit_bound` with a :class:`~dictopt.distributed.DaskExecutor`.

The iterates equal the single-process ones up to the order of floating-point additions.
"""

from __future__ import annotations

from typing import Any

from dictopt.distributed.cluster import DEFAULT_RETRIES
from dictopt.distributed.executor import DaskExecutor
from dictopt.validation import DictoptInputError
from dictopt.wide.bound import DEFAULT_TOL, WideBound, wide_limit_bound


def wide_limit_bound_distributed(
    x: Any,
    lam: float,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    partition_rows: int | None = None,
    method: str = "fast",
    tol: float = DEFAULT_TOL,
    max_iter: int = 200,
    init: Any | None = None,
    chunk_size: int = 65536,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 10.0,
) -> WideBound:
    """:func:`dictopt.wide.bound.wide_limit_bound` with its sums over points on Dask.

    Parameters
    ----------
    x:
        Anything :func:`~dictopt.distributed.partition_source` accepts.
    lam, tol, max_iter, init, chunk_size:
        As for ``wide_limit_bound``.
    method:
        ``"fast"`` or ``"mm"`` (the cvxpy reference needs the data in one process).
    client, scheduler, workers, partition_rows, retries, timeout:
        As for :class:`~dictopt.distributed.DaskExecutor`.

    Returns
    -------
    WideBound
    """
    if method not in ("fast", "mm"):
        raise DictoptInputError(f"method: expected 'fast' or 'mm', got {method!r}")
    executor = DaskExecutor(client, scheduler=scheduler, workers=workers,
                            partition_rows=partition_rows, retries=retries, timeout=timeout)
    return wide_limit_bound(x, lam, method=method, tol=tol, max_iter=max_iter, init=init,
                            chunk_size=chunk_size, executor=executor)
