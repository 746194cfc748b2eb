"""The wide-limit bound ``L_∞`` (THEORY §3) with every sum over points taken on Dask.

The solver is :func:`dictopt.wide.bound.solve_fast` itself (damped Newton with Armijo line
search, MM fallback); only its :class:`~dictopt.wide.bound.Sums` change: each value, gradient,
Hessian and MM sum is a map over partitions (:func:`~dictopt.wide.bound.chunk_pass` per chunk)
and a tree of additions. The iterates therefore equal the single-process ones up to the order
of floating-point additions.
"""

from __future__ import annotations

from typing import Any

import torch

from dictopt.distributed.cluster import DEFAULT_RETRIES, dask_client, map_reduce
from dictopt.distributed.sources import PartitionedSource, PartitionSource, partition_source
from dictopt.validation import DictoptInputError, check_lambda
from dictopt.wide.bound import DEFAULT_TOL, PassSums, WideBound, chunk_pass, chunk_value, solve_fast

F64 = torch.float64


def _row_sum(src: PartitionSource, start: int) -> torch.Tensor:
    return sum((c.data.sum(dim=0) for c in src.iter_chunks()), torch.zeros(src.d, dtype=F64))


def _value(src: PartitionSource, start: int, b: torch.Tensor, lam: float) -> float:
    return sum(chunk_value(c.data, b, lam) for c in src.iter_chunks())


def _full(src: PartitionSource, start: int, b: torch.Tensor, lam: float,
          hessian: bool) -> PassSums:
    total: PassSums | None = None
    for c in src.iter_chunks():
        part = chunk_pass(c.data, b, lam, hessian)
        total = part if total is None else total.merge(part)
    assert total is not None
    return total


def _add(a: Any, b: Any) -> Any:
    return a + b


def _merge(a: PassSums, b: PassSums) -> PassSums:
    return a.merge(b)


class DaskSums:
    """:class:`~dictopt.wide.bound.Sums` over the partitions of ``psrc`` on ``client``."""

    def __init__(self, client: Any, psrc: PartitionedSource, *, chunk_size: int = 65536,
                 retries: int = DEFAULT_RETRIES) -> None:
        self.client, self.psrc, self.n, self.d = client, psrc, psrc.n, psrc.d
        self.chunk_size, self.retries = chunk_size, retries

    def _sum(self, fn: Any, args: tuple[Any, ...], merge: Any, desc: str) -> Any:
        return map_reduce(self.client, fn, self.psrc, args, merge, chunk_size=self.chunk_size,
                          dtype=F64, desc=desc, retries=self.retries)

    def row_sum(self) -> torch.Tensor:
        return self._sum(_row_sum, (), _add, "bound mean")

    def value(self, b: torch.Tensor, lam: float) -> float:
        return self._sum(_value, (b, lam), _add, "bound value")

    def full(self, b: torch.Tensor, lam: float, hessian: bool) -> PassSums:
        return self._sum(_full, (b, lam, hessian), _merge, "bound pass")


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

    ``x`` is anything :func:`~dictopt.distributed.partition_source` accepts; ``method`` is
    ``"fast"`` or ``"mm"`` (the cvxpy reference needs the data in one process); ``client``,
    ``scheduler``, ``workers``, ``partition_rows``, ``retries``, ``timeout`` as for
    :func:`~dictopt.distributed.check_distributed`; the rest as for ``wide_limit_bound``.
    """
    lam = check_lambda(lam)
    if method not in ("fast", "mm"):
        raise DictoptInputError(f"method: expected 'fast' or 'mm', got {method!r}")
    if not (tol > 0):
        raise DictoptInputError(f"tol: must be > 0, got {tol!r}")
    psrc = partition_source(x, rows=partition_rows)
    with dask_client(client, scheduler=scheduler, workers=workers, timeout=timeout) as c:
        sums = DaskSums(c, psrc, chunk_size=chunk_size, retries=retries)
        return solve_fast(sums, lam, tol=tol, max_iter=max_iter, init=init,
                          newton=method == "fast")
