"""Connecting to a Dask cluster and the one map-and-merge primitive everything uses.

:func:`map_reduce` runs a function on every partition (on the worker that opens it), merges the
results with a pairwise tree of merge tasks in partition order (deterministic: the same data
and partitions give bit-identical results run to run), shows a progress bar over completed
partitions, retries a partition once when its worker dies or it raises (Dask's ``retries=``;
a dead worker's tasks are also rescheduled by the scheduler), and raises
:class:`PartitionError` naming the partition when it fails again. Nothing is skipped.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from dictopt.distributed.sources import Partition, PartitionedSource, PartitionSource
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 1
"""A partition is tried at most ``1 + DEFAULT_RETRIES`` times."""


class PartitionError(DictoptInputError):
    """A partition failed on every try (bad rows, an unreadable file, a worker that kept dying).

    ``partition`` is its name; the message also gives the last error.
    """

    def __init__(self, partition: str, message: str) -> None:
        super().__init__(message)
        self.partition = partition


@contextmanager
def dask_client(
    client: Any = None,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    timeout: float = 10.0,
) -> Iterator[Any]:
    """A ``distributed.Client``: ``client`` itself, one connected to ``scheduler`` (e.g.
    ``"tcp://10.0.0.5:8786"``), or a :class:`~distributed.LocalCluster` of ``workers``
    single-threaded worker processes (closed on exit).

    Raises
    ------
    DictoptInputError
        When no scheduler answers at ``scheduler`` within ``timeout`` seconds, or none of the
        three is given.
    """
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as err:
            raise DictoptInputError(
                f"scheduler: no Dask scheduler answered at {scheduler} within {timeout:g} s "
                f"({type(err).__name__}: {err}); start one with `dask scheduler` and workers "
                "with `dask worker ADDRESS`"
            ) from err
        try:
            yield client
        finally:
            client.close()
        return
    if workers is None:
        raise DictoptInputError("give a Dask client, a scheduler address or a number of workers")
    if not isinstance(workers, int) or workers < 1:
        raise DictoptInputError(f"workers: expected a positive integer, got {workers!r}")
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _run_partition(
    fn: Callable[..., Any],
    part: Partition,
    data: Any,
    d: int,
    chunk_size: int,
    dtype: torch.dtype | None,
    *args: Any,
) -> Any:
    """On a worker: open the partition's rows and call ``fn(source, start, *args)``."""
    src = PartitionSource(part.name, data, part.n, d, chunk_size=chunk_size, dtype=dtype)
    src.row_base = part.start  # errors number rows globally, as the single-process check does
    return fn(src, part.start, *args)


def _merge_copy(merge: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    # merges modify their first argument: work on a copy so that a retried merge, or a result
    # held in worker memory, is never merged twice
    return merge(copy.deepcopy(a), b)


def map_reduce(
    client: Any,
    fn: Callable[..., Any],
    psrc: PartitionedSource,
    args: Sequence[Any],
    merge: Callable[[Any, Any], Any],
    *,
    chunk_size: int,
    dtype: torch.dtype | None,
    desc: str = "partitions",
    progress: bool = False,
    retries: int = DEFAULT_RETRIES,
    partitions: Sequence[Partition] | None = None,
) -> Any:
    """``merge`` of ``fn(source, start, *args)`` over the partitions, in partition order.

    ``fn`` gets each partition as a :class:`PartitionSource` (local chunk starts) and its first
    global row ``start``; ``args`` may hold Dask futures (e.g. from :func:`share`).
    ``partitions`` restricts the map to some of ``psrc``'s partitions.
    """
    import dask
    from distributed import as_completed

    parts = list(psrc.partitions if partitions is None else partitions)
    token = uuid.uuid4().hex[:10]
    futures, name_of = [], {}
    for p, part in enumerate(parts):
        meta = part._replace(data=None)
        key = f"{desc.replace(' ', '-')}-{p}-{token}"
        common = (fn, meta, part.data, psrc.d, chunk_size, dtype, *args)
        if hasattr(part.data, "read"):
            fut = client.submit(_run_partition, *common, key=key, retries=retries, pure=False)
        else:  # a Dask block: its own graph runs on the worker, then fn (no client copy)
            task = dask.delayed(_run_partition, pure=False)(*common, dask_key_name=key)
            fut = client.compute(task, retries=retries)
        futures.append(fut)
        name_of[fut.key] = part.name
    level = list(futures)
    while len(level) > 1:  # pairwise tree in partition order
        nxt = [
            client.submit(_merge_copy, merge, level[i], level[i + 1], retries=retries,
                          key=f"merge-{desc.replace(' ', '-')}-{len(level)}-{i}-{token}")
            for i in range(0, len(level) - 1, 2)
        ]
        level = nxt + ([level[-1]] if len(level) % 2 else [])
    bar = tqdm(total=len(futures), desc=desc, unit="partition", disable=not progress,
               leave=False)
    failed: tuple[str, BaseException | None] | None = None
    # Hold each partition's future only until it completes: a released result is freed on its
    # worker once its merge has consumed it, so a worker's memory does not grow with the
    # number of partitions (the scheduler still recomputes it if a merge result is lost).
    completed = as_completed(futures)
    futures.clear()
    try:
        for fut in completed:
            if fut.status == "error":
                failed = (name_of[fut.key], fut.exception())
                break
            bar.update(1)
        if failed is None:
            try:
                return level[0].result()
            except Exception as err:
                raise PartitionError(
                    "merge", f"merging the {desc} results failed: {type(err).__name__}: {err}"
                ) from err
    finally:
        bar.close()
    # drop every future (the scheduler then forgets the pending tasks), then report
    fut = None
    completed.clear()
    level.clear()
    name, err = failed
    msg = f"{name}: failed on every try (retries={retries}): {type(err).__name__}: {err}"
    log.error("partition %s", msg)
    raise PartitionError(name, f"partition {msg}") from err


def _identity(obj: Any) -> Any:
    return obj


def share(client: Any, obj: Any) -> Any:
    """A future holding ``obj`` for every task that needs it (sent once per worker).

    Unlike ``client.scatter`` the value is the result of a task that the scheduler can rerun,
    so it survives the loss of the workers holding it.
    """
    return client.submit(_identity, obj, pure=False)
