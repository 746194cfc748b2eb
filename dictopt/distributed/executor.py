""":class:`DaskExecutor`: any :class:`~dictopt.check.StreamPass` mapped over partitions on Dask.

Each partition runs the pass's ``start``/``update`` on the worker that opens it
(:func:`dictopt.check.run_partition`); the states are merged with the pass's ``merge`` in a
pairwise tree in partition order (:func:`~dictopt.distributed.cluster.map_reduce`), so results
are bit-identical run to run. Choices a pass fixes on the stream's first chunk are fixed first,
on the first chunk of the first partition. Only public names of :mod:`dictopt.check` are used.

Results equal the single-process run up to the order of floating-point additions. One exception
by design: the step bounds ``t_max`` of C5 pairs left to pass 2 are computed against running
extremes (see :class:`~dictopt.check.stats.PassTwoStats`), so they are conservative in both
executors and may be smaller here (each partition starts from the pass-1 bounds, not from the
preceding partitions' extremes); a certificate is valid either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

from dictopt.check import StreamPass, first_rows, run_partition
from dictopt.data.sources import DEFAULT_CHUNK_SIZE
from dictopt.distributed.cluster import DEFAULT_RETRIES, dask_client, map_reduce, share
from dictopt.distributed.sources import PartitionedSource, PartitionSource, partition_source
from dictopt.validation import DictoptInputError

S = TypeVar("S")


class DaskStream:
    """A source opened for Dask: its partitions, the chunk size and dtype workers read with."""

    def __init__(self, psrc: PartitionedSource, chunk_size: int,
                 dtype: torch.dtype | None) -> None:
        self.psrc, self.chunk_size, self.dtype = psrc, chunk_size, dtype
        self.n, self.d = psrc.n, psrc.d

    def iter_chunks(self, *, progress: bool = False, desc: str = "chunks") -> Iterator[Any]:
        """Not for reading on the client: passes run on workers."""
        raise DictoptInputError("a Dask stream is read by its executor's workers, not directly")


def _run(src: PartitionSource, start: int, job: StreamPass[Any]) -> Any:
    return run_partition(job, src, start)


def _first(src: PartitionSource, start: int, job: StreamPass[Any]) -> StreamPass[Any]:
    return first_rows(job, src, start)


class DaskExecutor:
    """Passes mapped over the partitions of a source on a Dask cluster.

    Parameters
    ----------
    client:
        A ``distributed.Client`` (kept open).
    scheduler:
        Or the address of a running scheduler (connected for each job).
    workers:
        Or the number of local single-threaded worker processes to start for each job.
    partition_rows:
        Rows per partition (default: one partition per shard up to 65536 rows).
    retries:
        Extra tries of a failed partition before :class:`PartitionError` names it.
    timeout:
        Seconds to wait for ``scheduler``.
    """

    ships_arrays = False

    def __init__(self, client: Any = None, *, scheduler: str | None = None,
                 workers: int | None = None, partition_rows: int | None = None,
                 retries: int = DEFAULT_RETRIES, timeout: float = 10.0) -> None:
        if client is None and not scheduler and workers is None:
            raise DictoptInputError("give a Dask client, a scheduler address or a number of "
                                    "workers")
        self.client, self.scheduler, self.workers = client, scheduler, workers
        self.partition_rows, self.retries, self.timeout = partition_rows, retries, timeout
        self._active: Any = None

    @contextmanager
    def session(self) -> Iterator[Any]:
        """Connect (or start a local cluster) for the duration of a job; re-entrant."""
        if self._active is not None:
            yield self._active
            return
        with dask_client(self.client, scheduler=self.scheduler, workers=self.workers,
                         timeout=self.timeout) as client:
            self._active = client
            try:
                yield client
            finally:
                self._active = None

    def open(self, source: Any, *, dtype: torch.dtype | None,
             chunk_size: int | None) -> DaskStream:
        """The source's partitions (:func:`~dictopt.distributed.partition_source`)."""
        psrc = source.psrc if isinstance(source, DaskStream) else partition_source(
            source, rows=self.partition_rows)
        return DaskStream(psrc, chunk_size or DEFAULT_CHUNK_SIZE, dtype)

    def run(self, job: StreamPass[S], stream: Any, *, progress: bool = False) -> S:
        """``job`` on every partition, merged in partition order."""
        if self._active is None:
            with self.session():
                return self.run(job, stream, progress=progress)
        c, psrc = self._active, stream.psrc
        kw = dict(chunk_size=stream.chunk_size, dtype=stream.dtype, retries=self.retries)
        if job.fixes_first_chunk:
            job = map_reduce(c, _first, psrc, (share(c, job),), None,
                             desc=f"{job.desc} probe", partitions=psrc.partitions[:1], **kw)
        # the merge is the pass's staticmethod: shipped by reference, without the pass
        return map_reduce(c, _run, psrc, (share(c, job),), type(job).merge, desc=job.desc,
                          progress=progress, **kw)


CLUSTER_ARGS = ("client", "scheduler", "workers", "partition_rows", "retries", "timeout")
"""The keyword arguments of :class:`DaskExecutor` (the ``*_distributed`` wrappers take them)."""


def executor_from(kwargs: dict[str, Any]) -> DaskExecutor:
    """A :class:`DaskExecutor` from the cluster arguments in ``kwargs`` (removed from it).

    Parameters
    ----------
    kwargs:
        Keyword arguments of a ``*_distributed`` wrapper; :data:`CLUSTER_ARGS` are popped.

    Returns
    -------
    DaskExecutor
    """
    cluster = {k: kwargs.pop(k) for k in CLUSTER_ARGS if k in kwargs}
    return DaskExecutor(cluster.pop("client", None), **cluster)
