"""The streaming engine's seam: a pass is described once, an executor runs it.

A :class:`StreamPass` says how to start an empty state, how to add one chunk to it and how to
merge two states (the second one's rows come after the first one's). An :class:`Executor`
opens a source and runs a pass over it: :class:`LocalExecutor` streams the whole source in this
process as one partition, chunk by chunk; ``dictopt.distributed.DaskExecutor`` maps the same
``start``/``update`` over partitions on a Dask cluster and merges with ``merge`` in partition
order. The check's two passes, certificate measurement and the wide-limit bound's sums are all
:class:`StreamPass` objects, so each loop exists once whoever runs it.

A pass that fixes choices on the stream's first chunk (the check's τ and sparse kernels) does so
in :meth:`StreamPass.first_chunk`; an executor calls it on the first chunk of the whole stream
before any ``update`` (the local one reads that chunk once for both).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

S = TypeVar("S")


class Chunked(Protocol):
    """What a pass reads: rows in order, with the index of each chunk's first row."""

    d: int
    n: int | None

    def iter_chunks(self, *, progress: bool = False, desc: str = "chunks") -> Iterator[Any]:
        """Chunks with ``.data`` ``[n, d]`` and ``.start`` (first row in the stream)."""
        ...


class StreamPass(Protocol[S]):
    """One streamed pass over the rows: start, per-chunk update, merge.

    Implementations must be picklable (a distributed executor ships them to workers);
    ``update``/``merge`` may modify their first argument and return it. ``merge`` is a
    ``staticmethod``: it needs nothing of the pass, so it is shipped without it.
    """

    desc: str
    """A short name for progress bars and task keys (``"check pass 1"``)."""
    fixes_first_chunk: bool
    """Whether :meth:`first_chunk` fixes anything (otherwise executors skip it)."""

    def first_chunk(self, x: torch.Tensor, start: int) -> StreamPass[S]:
        """This pass with the choices it fixes on the stream's first chunk ``x`` (or itself)."""
        ...

    def start(self) -> S:
        """An empty state (no rows seen)."""
        ...

    def update(self, state: S, x: torch.Tensor, start: int) -> S:
        """``state`` with the chunk ``x`` (first global row ``start``) added."""
        ...

    @staticmethod
    def merge(a: S, b: S) -> S:
        """``a`` with ``b`` (later rows) merged in."""
        ...


@runtime_checkable
class Executor(Protocol):
    """Runs :class:`StreamPass` objects over the rows of a source.

    ``session()`` brackets a job (a distributed executor connects or starts its cluster
    there); ``open`` turns a user's source into whatever ``run`` reads; ``run`` returns the
    merged state of a pass over every row.
    """

    ships_arrays: bool
    """Whether arrays captured by a pass (e.g. given codes ``[N, K]``) may be used: ``False``
    when every partition would have to receive a copy."""

    def session(self) -> AbstractContextManager[Any]:
        """A context within which ``open`` and ``run`` may be called."""
        ...

    def open(self, source: Any, *, dtype: torch.dtype | None, chunk_size: int | None) -> Chunked:
        """The source as this executor reads it (``.n``, ``.d`` known)."""
        ...

    def run(self, job: StreamPass[S], stream: Chunked, *, progress: bool = False) -> S:
        """The merged state of ``job`` over every row of ``stream``."""
        ...


class LocalExecutor:
    """Every pass in this process: the whole stream as one partition, chunk by chunk (passes
    move chunks to their own device)."""

    ships_arrays = True

    def session(self) -> AbstractContextManager[Any]:
        """Nothing to set up."""
        return nullcontext(self)

    def open(self, source: Any, *, dtype: torch.dtype | None, chunk_size: int | None) -> Chunked:
        """:func:`dictopt.data.sources.as_source` (objects with ``iter_chunks`` pass through)."""
        from dictopt.data.sources import as_source

        if hasattr(source, "iter_chunks") and hasattr(source, "d"):
            return source
        kwargs = {"chunk_size": chunk_size} if chunk_size else {}
        return as_source(source, dtype=dtype, **kwargs)

    def run(self, job: StreamPass[S], stream: Chunked, *, progress: bool = False) -> S:
        """Stream every chunk once (``job.first_chunk`` on the first)."""
        state: Any = None
        for chunk in stream.iter_chunks(progress=progress, desc=job.desc):
            x = chunk.data
            if state is None:
                if job.fixes_first_chunk:
                    job = job.first_chunk(x, chunk.start)
                state = job.start()
            state = job.update(state, x, chunk.start)
        if state is None:  # an empty stream: sources raise before this
            state = job.start()
        return state


def run_partition(job: StreamPass[S], stream: Chunked, offset: int) -> S:
    """``job`` over one partition whose first row is global row ``offset`` (for executors that
    split the stream: the per-partition half of a map-and-merge).

    Parameters
    ----------
    job:
        The pass.
    stream:
        The partition's rows (chunk starts local to it).
    offset:
        Global index of the partition's first row.

    Returns
    -------
    S
        The pass's state over the partition.
    """
    state = job.start()
    for chunk in stream.iter_chunks():
        state = job.update(state, chunk.data, offset + chunk.start)
    return state


def first_rows(job: StreamPass[S], stream: Chunked, offset: int = 0) -> StreamPass[S]:
    """``job.first_chunk`` on the first chunk of ``stream`` (whose first row is ``offset``).

    Parameters
    ----------
    job:
        The pass.
    stream:
        The rows whose first chunk fixes the pass's choices.
    offset:
        Global index of the stream's first row.

    Returns
    -------
    StreamPass[S]
        The pass with its first-chunk choices fixed.
    """
    chunk = next(iter(stream.iter_chunks()))
    return job.first_chunk(chunk.data, offset + chunk.start)
