"""Activation sources: data arrive as chunks, never as one array (DESIGN.md "Streams").

A source knows its width ``d`` and (when cheap) its number of rows, and yields
:class:`Chunk` objects carrying the rows, their global row offset and a label naming where they
came from, so that errors can say "shard_003.npy, row 1234". Every chunk is validated: 2-D,
the source's width, finite.

Besides arrays and files, a source can be a *stream* (:class:`StreamSource`): a callable that
returns a fresh iterator of batches each time it is called (the checker makes two passes), a
torch ``DataLoader``, or any re-iterable object (``iter(obj) is not obj``), for example an
iterator factory around a model's forward hook. Its N is unknown until the first pass ends.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from dictopt.validation import DictoptInputError, check_finite, check_positive_int, to_tensor

DEFAULT_CHUNK_SIZE = 8192


class Chunk(NamedTuple):
    """Rows ``[m, d]`` of a source, their first global row index, and where they came from."""

    data: torch.Tensor
    start: int
    label: str


class ActivationSource(ABC):
    """Base class: subclasses implement :meth:`_raw_chunks`; validation happens here."""

    d: int
    n: int | None
    chunk_size: int
    dtype: torch.dtype | None

    @abstractmethod
    def _raw_chunks(self) -> Iterator[tuple[np.ndarray | torch.Tensor, str]]:
        """Raw ``(rows, label)`` pairs in order; validation is done by :meth:`iter_chunks`."""

    def iter_chunks(self, *, progress: bool = False, desc: str = "chunks") -> Iterator[Chunk]:
        """Validated chunks in order; raises on a bad chunk (naming it) or on empty data."""
        start = 0
        bar = tqdm(total=self.n, desc=desc, unit="rows", disable=not progress, leave=False)
        try:
            for raw, label in self._raw_chunks():
                x = to_tensor(raw, label, dtype=self.dtype)
                if x.ndim != 2 or x.shape[1] != self.d:
                    raise DictoptInputError(
                        f"{label}: expected rows of width {self.d}, got shape {tuple(x.shape)}"
                    )
                if x.shape[0] == 0:
                    continue
                check_finite(x, "activations", row_offset=start, where=f"({label})")
                yield Chunk(x, start, label)
                start += x.shape[0]
                bar.update(x.shape[0])
        finally:
            bar.close()
        if start == 0:
            raise DictoptInputError(f"activations: {self.describe()} holds no rows")
        self._finished_pass(start)

    def _finished_pass(self, rows: int) -> None:
        """Called after every complete pass with its row count (streams learn N here)."""
        return None

    def __iter__(self) -> Iterator[torch.Tensor]:
        for chunk in self.iter_chunks():
            yield chunk.data

    def to_tensor(self) -> torch.Tensor:
        """All rows in memory (only for data known to be small)."""
        return torch.cat([c.data for c in self.iter_chunks()], dim=0)

    def describe(self) -> str:
        return type(self).__name__


class ArraySource(ActivationSource):
    """An in-memory ``[N, d]`` numpy array or torch tensor, served in chunks."""

    def __init__(
        self, array: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE, dtype: torch.dtype | None = None
    ) -> None:
        x = to_tensor(array, "activations")
        if x.ndim != 2:
            raise DictoptInputError(
                f"activations: expected a 2-D array [N, d], got shape {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise DictoptInputError("activations: empty array (0 rows)")
        self.array = x
        self.d = int(x.shape[1])
        self.n = int(x.shape[0])
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.dtype = dtype

    def _raw_chunks(self) -> Iterator[tuple[torch.Tensor, str]]:
        for i, lo in enumerate(range(0, self.n, self.chunk_size)):
            yield self.array[lo : lo + self.chunk_size], f"chunk {i}"

    def describe(self) -> str:
        return f"array [{self.n}, {self.d}]"


def _natural_key(path: Path) -> list[Any]:
    """Sort ``shard_2.npy`` before ``shard_10.npy``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def open_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped (read-only), or a clear error naming it.

    Parameters
    ----------
    path:
        The file.

    Returns
    -------
    numpy.ndarray
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DictoptInputError(f"{path}: not a readable .npy file ({err})") from err
    if arr.ndim != 2:
        raise DictoptInputError(f"{path}: expected a 2-D array [N, d], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DictoptInputError(f"{path}: expected numeric data, got dtype {arr.dtype}")
    return arr


class NpySource(ActivationSource):
    """One ``.npy`` file, memory-mapped: only the current chunk is read into memory."""

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DictoptInputError(f"{self.path}: no such file")
        arr = open_npy(self.path)
        self.d = int(arr.shape[1])
        self.n = int(arr.shape[0])
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.dtype = dtype

    def _raw_chunks(self) -> Iterator[tuple[np.ndarray, str]]:
        arr = open_npy(self.path)
        for lo in range(0, self.n, self.chunk_size):
            yield np.array(arr[lo : lo + self.chunk_size]), f"{self.path.name} rows {lo}+"

    def describe(self) -> str:
        return str(self.path)


class ShardFolderSource(ActivationSource):
    """A folder of ``.npy`` shards (natural name order: 2 before 10), all of the same width.

    If the folder holds a ``manifest.json`` with a ``shards`` list, that order is used.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DictoptInputError(f"{self.folder}: no such folder")
        manifest = self.folder / "manifest.json"
        if manifest.is_file():
            try:
                names = json.loads(manifest.read_text())["shards"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DictoptInputError(f"{manifest}: unreadable manifest ({err})") from err
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DictoptInputError(
                    f"{manifest}: 'shards' must be a list of file names, got {names!r}"
                )
            self.shards = [self.folder / name for name in names]
        else:
            self.shards = sorted(self.folder.glob("*.npy"), key=_natural_key)
        if not self.shards:
            raise DictoptInputError(f"{self.folder}: no .npy shards found")
        widths = {}
        self.n = 0
        for shard in self.shards:
            arr = open_npy(shard)
            widths[shard.name] = arr.shape[1]
            self.n += int(arr.shape[0])
        first = self.shards[0].name
        for name, width in widths.items():
            if width != widths[first]:
                raise DictoptInputError(
                    f"{self.folder / name}: width {width} differs from {first} "
                    f"(width {widths[first]}); all shards must have the same width"
                )
        self.d = int(widths[first])
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.dtype = dtype

    def _raw_chunks(self) -> Iterator[tuple[np.ndarray, str]]:
        for shard in self.shards:
            arr = open_npy(shard)
            for lo in range(0, arr.shape[0], self.chunk_size):
                yield np.array(arr[lo : lo + self.chunk_size]), f"{shard.name} rows {lo}+"

    def describe(self) -> str:
        return f"{self.folder} ({len(self.shards)} shards)"


def _batch_rows(batch: Any, label: str) -> Any:
    """The activations of one batch: a DataLoader over a ``TensorDataset`` yields ``[x]`` and
    labelled datasets ``(x, y)``, so the first element of a tuple/list is taken; ``[..., d]``
    batches (e.g. ``[batch, seq, d]`` from a hook) are flattened to rows."""
    if isinstance(batch, tuple | list):
        if not batch:
            raise DictoptInputError(f"{label}: an empty tuple, expected an array of rows")
        batch = batch[0]
    shape = getattr(batch, "shape", None)
    if shape is not None and len(shape) > 2:
        batch = batch.reshape(-1, shape[-1])
    return batch


class StreamSource(ActivationSource):
    """Batches from a re-iterable stream: a callable returning a fresh iterator, a torch
    ``DataLoader``, or an object whose ``iter()`` starts over.

    Each batch is an array or tensor ``[m, d]`` (or ``[..., d]``, flattened; or a tuple whose
    first element is that). ``d`` is read from the first batch (one extra batch is drawn when
    the source is built, unless ``d`` is given); ``n`` is ``None`` until a first pass has
    ended, and every later complete pass must give the same number of rows (a callable that
    hands back an exhausted iterator is an error that says so).

    Parameters
    ----------
    stream:
        The callable or re-iterable object.
    d:
        Row width, when known (saves drawing a batch up front).
    dtype:
        Cast every batch to this dtype.
    """

    def __init__(self, stream: Any, *, d: int | None = None, dtype: torch.dtype | None = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if not callable(stream) and iter(stream) is stream:
            raise DictoptInputError(
                "activations: a one-shot iterator cannot be read twice (the checker makes two "
                "passes); pass a function that returns a fresh iterator, e.g. "
                "`lambda: batches(model, texts)`, or a DataLoader"
            )
        self.stream = stream
        self.dtype = dtype
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.n = None
        self._passes = 0
        if d is None:
            first = next(iter(self._batches()), None)
            if first is None:
                raise DictoptInputError(f"activations: {self.describe()} yielded no batch")
            x = to_tensor(_batch_rows(first, "batch 0"), "batch 0")
            if x.ndim != 2:
                raise DictoptInputError(
                    f"activations: batch 0 has shape {tuple(x.shape)}; expected [m, d]"
                )
            d = int(x.shape[1])
        self.d = check_positive_int(d, "d")

    def _batches(self) -> Iterator[Any]:
        it = self.stream() if callable(self.stream) else iter(self.stream)
        try:
            return iter(it)
        except TypeError as err:
            raise DictoptInputError(
                f"activations: the callable returned a {type(it).__name__}, not an iterator "
                "of batches"
            ) from err

    def _raw_chunks(self) -> Iterator[tuple[Any, str]]:
        for b, batch in enumerate(self._batches()):
            yield _batch_rows(batch, f"batch {b}"), f"batch {b}"

    def _finished_pass(self, rows: int) -> None:
        self._passes += 1
        if self.n is None:
            self.n = rows
        elif rows != self.n:
            raise DictoptInputError(
                f"activations: {self.describe()} gave {self.n} rows on its first pass and "
                f"{rows} on pass {self._passes}; a stream must give the same rows every time "
                "it is iterated (return a fresh iterator over the same data)"
            )

    def describe(self) -> str:
        name = getattr(self.stream, "__name__", type(self.stream).__name__)
        return f"stream {name!r}" + (f" [{self.n}, {self.d}]" if self.n is not None else "")


def as_source(
    obj: Any, *, chunk_size: int = DEFAULT_CHUNK_SIZE, dtype: torch.dtype | None = None
) -> ActivationSource:
    """Turn data into an :class:`ActivationSource`.

    Parameters
    ----------
    obj:
        An array or tensor ``[N, d]``, a ``.npy`` path, a folder of shards, a callable that
        returns a fresh iterator of batches, a torch ``DataLoader`` or another re-iterable
        object (see :class:`StreamSource`), or a source (returned as is).
    chunk_size:
        Rows per chunk for arrays and files (streams keep their own batches).
    dtype:
        Cast chunks to this dtype.
    """
    if isinstance(obj, ActivationSource):
        return obj
    if isinstance(obj, np.ndarray | torch.Tensor):
        return ArraySource(obj, chunk_size=chunk_size, dtype=dtype)
    if callable(obj) or isinstance(obj, Iterator) or _is_reiterable(obj):
        return StreamSource(obj, chunk_size=chunk_size, dtype=dtype)
    if isinstance(obj, str | Path):
        path = Path(obj)
        if path.is_dir():
            return ShardFolderSource(path, chunk_size=chunk_size, dtype=dtype)
        if path.suffix == ".npy" or path.is_file():
            return NpySource(path, chunk_size=chunk_size, dtype=dtype)
        raise DictoptInputError(f"{path}: no such file or folder")
    return ArraySource(obj, chunk_size=chunk_size, dtype=dtype)


def _is_reiterable(obj: Any) -> bool:
    """A DataLoader or other iterable whose ``iter()`` starts over (lists of batches too);
    strings, paths, arrays, and nested lists of numbers are not streams."""
    if isinstance(obj, str | bytes | Path | dict):
        return False
    if isinstance(obj, list | tuple):
        return bool(obj) and all(isinstance(b, np.ndarray | torch.Tensor) and b.ndim >= 2
                                 for b in obj)
    try:
        return iter(obj) is not obj
    except TypeError:
        return False
