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
from dictopt.distributed.executor import executor_from
from dictopt.problem import Dictionary


def check_distributed(dictionary: Dictionary, source: Any, **kwargs: Any) -> CheckReport:
    """:func:`dictopt.check.check` on a Dask cluster, partition by partition.

    Parameters
    ----------
    dictionary:
        As for :func:`~dictopt.check.check`.
    source:
        Anything :func:`~dictopt.distributed.partition_source` accepts: a shard folder, a
        ``.npy`` file, a Zarr array or path, a Dask array, a :class:`PartitionedSource`.
    **kwargs:
        ``client``, ``scheduler``, ``workers``, ``partition_rows``, ``retries``, ``timeout``
        as for :class:`~dictopt.distributed.DaskExecutor`; every other argument of
        :func:`~dictopt.check.check` (``codes``: ``"own"``, ``"optimal"`` or a picklable
        callable; given code arrays are not shipped to workers).

    Returns
    -------
    CheckReport
        Equal to the single-process report (see :mod:`dictopt.distributed.executor`).
    """
    return check(dictionary, source, executor=executor_from(kwargs), **kwargs)


def certify_distributed(
    dictionary: Dictionary,
    source: Any,
    violations: CheckReport | Sequence[Violation],
    **kwargs: Any,
) -> list[Measurement]:
    """:func:`dictopt.check.certify.certify` with the loss changes summed over partitions.

    Parameters
    ----------
    dictionary, source, violations:
        As for ``certify`` (``source`` as for :func:`check_distributed`).
    **kwargs:
        The cluster arguments of :class:`~dictopt.distributed.DaskExecutor` and every other
        argument of ``certify``.

    Returns
    -------
    list[Measurement]
    """
    return certify(dictionary, source, violations, executor=executor_from(kwargs), **kwargs)


__all__ = ["certify_distributed", "check_distributed"]
