"""The checker and certificate measurement on Dask: :func:`dictopt.check.check` and
:func:`dictopt.check.certify.certify` with a :class:`~dictopt.distributed.DaskExecutor`.

Everything between and after the passes (pair decisions, C1–C5, certificates, labels, hull,
report) runs once on the client on statistics whose size does not depend on N; see
:mod:`dictopt.distributed.executor` for how the passes run and how results compare with the
single-process ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dictopt.check import CheckReport, Violation, check
from dictopt.check.certify import Measurement, certify
from dictopt.distributed.cluster import DEFAULT_RETRIES
from dictopt.distributed.executor import DaskExecutor
from dictopt.problem import Dictionary


def check_distributed(
    dictionary: Dictionary,
    source: Any,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    partition_rows: int | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 10.0,
    **kwargs: Any,
) -> CheckReport:
    """:func:`dictopt.check.check` on a Dask cluster, partition by partition.

    Parameters
    ----------
    dictionary:
        As for :func:`~dictopt.check.check`.
    source:
        Anything :func:`~dictopt.distributed.partition_source` accepts: a shard folder, a
        ``.npy`` file, a Zarr array or path, a Dask array, a :class:`PartitionedSource`.
    client, scheduler, workers, partition_rows, retries, timeout:
        As for :class:`~dictopt.distributed.DaskExecutor`.
    **kwargs:
        Every other argument of :func:`~dictopt.check.check` (``codes``: ``"own"``,
        ``"optimal"`` or a picklable callable; given code arrays are not shipped to workers).

    Returns
    -------
    CheckReport
        Equal to the single-process report (see :mod:`dictopt.distributed.executor`).
    """
    executor = DaskExecutor(client, scheduler=scheduler, workers=workers,
                            partition_rows=partition_rows, retries=retries, timeout=timeout)
    return check(dictionary, source, executor=executor, **kwargs)


def certify_distributed(
    dictionary: Dictionary,
    source: Any,
    violations: CheckReport | Sequence[Violation],
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = None,
    partition_rows: int | None = None,
    retries: int = DEFAULT_RETRIES,
    timeout: float = 10.0,
    **kwargs: Any,
) -> list[Measurement]:
    """:func:`dictopt.check.certify.certify` with the loss changes summed over partitions.

    Parameters
    ----------
    dictionary, source, violations:
        As for ``certify`` (``source`` as for :func:`check_distributed`).
    client, scheduler, workers, partition_rows, retries, timeout:
        As for :class:`~dictopt.distributed.DaskExecutor`.
    **kwargs:
        Every other argument of ``certify``.

    Returns
    -------
    list[Measurement]
    """
    executor = DaskExecutor(client, scheduler=scheduler, workers=workers,
                            partition_rows=partition_rows, retries=retries, timeout=timeout)
    return certify(dictionary, source, violations, executor=executor, **kwargs)


__all__ = ["certify_distributed", "check_distributed"]
