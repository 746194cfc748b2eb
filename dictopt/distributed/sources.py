"""Activation sets split into named partitions that Dask workers open themselves.

A :class:`Partition` names a contiguous block of rows (``"shard_00003.npy"``,
``"zarr[0:65536]"``, ``"dask[2]"``), knows its first global row and its row count, and carries
a small picklable *reader* (a shard path and a row range, a Zarr array handle and a slice) or,
for a Dask array, the lazy block itself. Only the worker that processes a partition reads its
rows (memory-mapped ``.npy``, Zarr slicing, or the block's own graph), ``chunk_size`` rows at a
time, through :class:`PartitionSource`, which validates them like every other
:class:`~dictopt.data.sources.ActivationSource` and names the partition in every error. The
client only reads ``.npy`` headers and array metadata.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from dictopt.data.sources import (
    DEFAULT_CHUNK_SIZE,
    ActivationSource,
    ShardFolderSource,
    open_npy,
)
from dictopt.validation import DictoptInputError, check_positive_int

log = logging.getLogger(__name__)

DEFAULT_PARTITION_ROWS = 65536


@dataclass
class NpyRows:
    """Rows ``[lo, hi)`` of one ``.npy`` shard, read on the worker."""

    path: Path
    lo: int
    hi: int

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of this partition (relative to its first row), read explicitly.

        No memory map stays open: its pages would count in the worker's resident memory,
        which would then grow with N.
        """
        return open_npy(self.path).read(self.lo + lo, self.lo + hi)


@dataclass
class ZarrRows:
    """Rows ``[lo, hi)`` of a 2-D Zarr array (the handle pickles as its store and path)."""

    array: Any
    lo: int
    hi: int

    def read(self, lo: int, hi: int) -> np.ndarray:
        return np.asarray(self.array[self.lo + lo : self.lo + hi])


class Partition(NamedTuple):
    """A named block of rows of a partitioned activation set."""

    name: str
    start: int
    """Global index of its first row."""
    n: int
    data: Any
    """A reader (``read(lo, hi)``) or, for a Dask array, the block (a Dask array)."""


class PartitionSource(ActivationSource):
    """The rows of one partition as a validated chunk stream (built on the worker).

    ``data`` is a reader or the partition's rows already in memory (a computed Dask block).
    Chunk starts are *local* (0 at the partition's first row); add ``Partition.start``.
    Errors (NaN rows, overflow) name the *global* row: ``row_base`` is the partition's start.
    """

    row_base: int = 0

    def __init__(
        self,
        name: str,
        data: Any,
        n: int,
        d: int,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.name, self.data, self.n, self.d = name, data, n, d
        self.chunk_size, self.dtype = chunk_size, dtype

    def _raw_chunks(self) -> Iterator[tuple[Any, str]]:
        if hasattr(self.data, "read"):
            read = self.data.read
        else:
            rows = self.data
            if getattr(rows, "ndim", 2) != 2 or rows.shape[0] != self.n:
                raise DictoptInputError(
                    f"{self.name}: expected {self.n} rows of width {self.d}, "
                    f"got shape {tuple(rows.shape)}"
                )

            def read(lo: int, hi: int) -> Any:
                return rows[lo:hi]

        for lo in range(0, self.n, self.chunk_size):
            yield read(lo, min(lo + self.chunk_size, self.n)), f"{self.name} rows {lo}+"

    def describe(self) -> str:
        return self.name


class PartitionedSource(NamedTuple):
    """An activation set as ordered partitions of equal width ``d`` (``n`` rows in all)."""

    partitions: list[Partition]
    d: int
    n: int
    description: str

    def source(
        self, part: Partition, data: Any, chunk_size: int, dtype: torch.dtype | None
    ) -> PartitionSource:
        """The chunk stream of ``part`` whose reader or rows are ``data`` (on a worker).

        Chunk starts are local, but errors number rows globally (``row_base``)."""
        src = PartitionSource(part.name, data, part.n, self.d, chunk_size=chunk_size, dtype=dtype)
        src.row_base = part.start
        return src


def _ranges(n: int, rows: int, step: int = 1) -> list[tuple[int, int]]:
    """``[lo, hi)`` blocks of ``rows`` rows (rounded up to a multiple of ``step``)."""
    rows = max(step, -(-rows // step) * step)
    return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def _shard_partitions(folder: Path, rows: int) -> PartitionedSource:
    src = ShardFolderSource(folder)  # manifest, natural order, same widths (names the shard)
    parts: list[Partition] = []
    start = 0
    for shard in src.shards:
        n = int(open_npy(shard).shape[0])
        if n == 0:
            warnings.warn(
                f"{shard}: empty shard (0 rows), skipped", UserWarning, stacklevel=3
            )
            continue
        blocks = _ranges(n, rows)
        for lo, hi in blocks:
            name = shard.name if len(blocks) == 1 else f"{shard.name}[{lo}:{hi}]"
            parts.append(Partition(name, start + lo, hi - lo, NpyRows(shard, lo, hi)))
        start += n
    if not parts:
        raise DictoptInputError(f"activations: {src.describe()} holds no rows")
    return PartitionedSource(parts, src.d, start, src.describe())


def _check_2d(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2:
        raise DictoptInputError(f"{what}: expected a 2-D array [N, d], got shape {shape}")
    if shape[0] == 0:
        raise DictoptInputError(f"{what}: holds no rows")


def _zarr_partitions(array: Any, rows: int, what: str) -> PartitionedSource:
    shape = tuple(int(s) for s in array.shape)
    _check_2d(shape, what)
    if not np.issubdtype(array.dtype, np.number):
        raise DictoptInputError(f"{what}: expected numeric data, got dtype {array.dtype}")
    step = int(array.chunks[0])  # whole Zarr chunks per partition: no chunk is read twice
    parts = [
        Partition(f"zarr[{lo}:{hi}]", lo, hi - lo, ZarrRows(array, lo, hi))
        for lo, hi in _ranges(shape[0], rows, step)
    ]
    return PartitionedSource(parts, shape[1], shape[0], f"{what} {list(shape)}")


def _dask_partitions(x: Any, rows: int | None) -> PartitionedSource:
    shape = tuple(int(s) for s in x.shape)
    _check_2d(shape, "activations (Dask array)")
    if rows is not None:
        x = x.rechunk({0: rows, 1: -1})
    elif len(x.chunks[1]) > 1:
        x = x.rechunk({1: -1})
    parts, start = [], 0
    for b, n in enumerate(x.chunks[0]):
        if n:
            parts.append(Partition(f"dask[{b}]", start, int(n), x.blocks[b]))
        start += int(n)
    return PartitionedSource(parts, shape[1], shape[0], f"Dask array {list(shape)}")


def partition_source(obj: Any, *, rows: int | None = None) -> PartitionedSource:
    """Split an activation set into partitions for a Dask cluster, reading no rows.

    Parameters
    ----------
    obj:
        A folder of ``.npy`` shards (``manifest.json`` order if present, else natural name
        order; one partition per shard, split when longer than ``rows``), one ``.npy`` file, a
        Zarr array or a path to one (``*.zarr``), a Dask array (one partition per block along
        axis 0), or a :class:`PartitionedSource` (returned as is).
    rows:
        Rows per partition (default 65536; for Zarr rounded up to whole Zarr chunks; for a
        Dask array, ``None`` keeps its blocks).

    Returns
    -------
    PartitionedSource

    Raises
    ------
    DictoptInputError
        Shards of different widths (naming the shard), unreadable shards, no rows, a 1-D or
        non-numeric array, an in-memory array (use a single-process check or Dask/Zarr).
    """
    if isinstance(obj, PartitionedSource):
        return obj
    if rows is not None:
        rows = check_positive_int(rows, "rows")
    default = rows or DEFAULT_PARTITION_ROWS
    if isinstance(obj, str | Path):
        path = Path(obj)
        if (path.is_dir() and (path / "zarr.json").is_file()) or path.suffix == ".zarr":
            import zarr

            try:
                array = zarr.open_array(str(path), mode="r")
            except Exception as err:  # zarr raises several types for a bad store
                raise DictoptInputError(f"{path}: not a readable Zarr array ({err})") from err
            return _zarr_partitions(array, default, str(path))
        if path.is_dir():
            return _shard_partitions(path, default)
        if path.is_file():
            return _shard_partitions_single(path, default)
        raise DictoptInputError(f"{path}: no such file or folder")
    module = type(obj).__module__
    if module.startswith("dask.array"):
        return _dask_partitions(obj, rows)
    if module.startswith("zarr"):
        return _zarr_partitions(obj, default, "Zarr array")
    raise DictoptInputError(
        f"activations: a distributed check needs data the workers can open (a shard folder, a "
        f".npy file, a Zarr array or a Dask array), got {type(obj).__name__}; for in-memory "
        "data use the single-process check or dask.array.from_array(x, chunks=(65536, -1))"
    )


def _shard_partitions_single(path: Path, rows: int) -> PartitionedSource:
    arr = open_npy(path)
    n, d = int(arr.shape[0]), int(arr.shape[1])
    if n == 0:
        raise DictoptInputError(f"activations: {path} holds no rows")
    blocks = _ranges(n, rows)
    parts = [
        Partition(path.name if len(blocks) == 1 else f"{path.name}[{lo}:{hi}]", lo, hi - lo,
                  NpyRows(path, lo, hi))
        for lo, hi in blocks
    ]
    return PartitionedSource(parts, d, n, str(path))
