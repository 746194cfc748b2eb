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

import hashlib
import json
import re
import stat
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


def scale_limit(dtype: torch.dtype, d: int) -> float:
    """The largest ``|x|`` whose squares, summed over ``d`` columns and 2²⁰ rows, stay finite
    in ``dtype`` (half precisions are computed in float32)."""
    if dtype in (torch.float16, torch.bfloat16) or not dtype.is_floating_point:
        dtype = torch.float32 if dtype.is_floating_point else torch.float64
    return float(np.sqrt(torch.finfo(dtype).max / (max(d, 1) * 2.0**20)))


def check_scale(x: torch.Tensor, dtype: torch.dtype, *, row_offset: int = 0,
                where: str = "") -> None:
    """Raise when finite values are so large that squared norms and sums overflow ``dtype``.

    Such data runs to an infinite loss and NaN statistics; the message names the row and the
    fix (rescale).
    """
    limit = scale_limit(dtype, int(x.shape[1]))
    big = x.abs().amax(dim=1) > limit
    if bool(big.any()):
        row = int(big.nonzero()[0])
        value = float(x[row].abs().max())
        loc = f" {where}" if where else ""
        raise DictoptInputError(
            f"activations{loc}: row {row_offset + row} has a value of magnitude {value:.3g}, "
            f"beyond what {str(dtype).removeprefix('torch.')} arithmetic can square and sum "
            f"(limit {limit:.3g}); the data's scale is the problem: rescale it (e.g. divide "
            "by its RMS, and λ by the same factor)"
        )


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
            base = getattr(self, "row_base", 0)  # global index of this source's first row
            for raw, label in self._raw_chunks():
                x = to_tensor(raw, label)  # stored precision: checked before any cast
                if x.ndim != 2 or x.shape[1] != self.d:
                    hint = " (is it transposed?)" if x.ndim == 2 and x.shape[0] == self.d else ""
                    raise DictoptInputError(
                        f"{label}: expected rows of width {self.d}, got shape "
                        f"{tuple(x.shape)}{hint}"
                    )
                if x.shape[0] == 0:
                    continue
                check_finite(x, "activations", row_offset=base + start, where=f"({label})")
                check_scale(x, self.dtype or x.dtype, row_offset=base + start,
                            where=f"({label})")
                if self.dtype is not None:
                    x = x.to(self.dtype)
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

    def _last_rows(self) -> np.ndarray | torch.Tensor | None:
        """The final rows (up to one chunk) when they can be read without a full pass."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """An identity of the data: kind, shape, dtype and hashes of the first and last chunks.

        Cheap (two chunks read), deterministic, JSON-serialisable. Training checkpoints record
        it so that a resume on other data is refused.
        """
        first = next(self.iter_chunks()).data
        last = self._last_rows()
        return {
            "kind": type(self).__name__,
            "n": self.n,
            "d": self.d,
            "dtype": str(first.dtype).removeprefix("torch."),
            "first_chunk_sha256": _sha256(first),
            "last_chunk_sha256": None if last is None else _sha256(last),
        }


def _sha256(rows: np.ndarray | torch.Tensor) -> str:
    arr = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    digest = hashlib.sha256(str((arr.shape, arr.dtype.str)).encode())
    digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


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

    def _last_rows(self) -> torch.Tensor:
        return self.array[-self.chunk_size :]

    def describe(self) -> str:
        return f"array [{self.n}, {self.d}]"


def _natural_key(path: Path) -> list[Any]:
    """Sort ``shard_2.npy`` before ``shard_10.npy``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class NpyFile:
    """A 2-D numeric ``.npy`` file read by explicit row ranges (no memory map, no pickle).

    Only the header is parsed when opened; :meth:`read` (or slicing ``f[lo:hi]``) reads those
    rows with one ``readinto`` into a fresh array. Unlike a memory map, nothing stays mapped
    behind the stream, so a process's resident memory does not grow with the file (the pages
    read live in the kernel's page cache, which the system reclaims, not in the process).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not _is_regular_file(path):
            raise DictoptInputError(f"{path}: not a regular file (a folder, device or pipe)")
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:  # 2.0 and 3.0 share the layout (3.0 allows UTF-8 field names)
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                self.offset = fh.tell()
            size = path.stat().st_size
        except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
            raise DictoptInputError(
                f"{path}: not a readable .npy file ({_own_message(err)})"
            ) from err
        if dtype.hasobject:
            raise DictoptInputError(
                f"{path}: not a readable .npy file: {_own_message(ValueError('pickle'))}; "
                "save a numeric array"
            )
        if not np.issubdtype(dtype, np.number):
            raise DictoptInputError(f"{path}: expected numeric data, got dtype {dtype}")
        if len(shape) != 2:
            raise DictoptInputError(f"{path}: expected a 2-D array [N, d], got shape {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.ndim = 2
        self.dtype = dtype
        self.fortran = bool(fortran)
        need = self.offset + self.shape[0] * self.shape[1] * dtype.itemsize
        if size < need:
            raise DictoptInputError(
                f"{path}: not a readable .npy file: truncated (the header declares shape "
                f"{self.shape} of {dtype}, {need} bytes, but the file has {size})"
            )

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` as a new writable array."""
        n, d = self.shape
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        hi = max(hi, lo)
        if self.fortran:  # rare: columns are contiguous; copy the rows out of a short-lived map
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            return np.array(arr[lo:hi])
        buf = bytearray((hi - lo) * d * self.dtype.itemsize)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + lo * d * self.dtype.itemsize)
            got = fh.readinto(buf)
        if got != len(buf):
            raise DictoptInputError(f"{self.path}: file shrank while reading rows {lo}..{hi}")
        return np.frombuffer(buf, dtype=self.dtype).reshape(hi - lo, d)

    def __getitem__(self, rows: slice) -> np.ndarray:
        lo, hi, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("NpyFile supports contiguous row slices only")
        return self.read(lo, hi)


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _own_message(err: BaseException) -> str:
    """The library's error text, unless it suggests loading pickles (then dictopt's own)."""
    text = str(err)
    if "pickle" in text.lower():
        return "it holds Python objects (pickled data), which dictopt never loads for safety"
    return text[:200]


def open_npy(path: str | Path) -> NpyFile:
    """A 2-D numeric ``.npy`` file opened for explicit row reads, or a clear error naming it.

    Parameters
    ----------
    path:
        The file (a regular file: folders, devices and pipes are refused unopened).

    Returns
    -------
    NpyFile
        ``shape``, ``dtype`` and ``read(lo, hi)``; no memory map stays open.
    """
    return NpyFile(Path(path))


class NpySource(ActivationSource):
    """One ``.npy`` file, read chunk by chunk (:class:`NpyFile`): memory does not grow with N."""

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DictoptInputError(f"{self.path}: no such file")
        arr = open_npy(self.path)
        self.d = int(arr.shape[1])
        self.n = int(arr.shape[0])
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.dtype = dtype

    def _raw_chunks(self) -> Iterator[tuple[np.ndarray, str]]:
        arr = open_npy(self.path)
        for lo in range(0, self.n, self.chunk_size):
            yield arr.read(lo, lo + self.chunk_size), f"{self.path.name} rows {lo}+"

    def _last_rows(self) -> np.ndarray:
        return open_npy(self.path).read(max(0, self.n - self.chunk_size), self.n)

    def describe(self) -> str:
        return str(self.path)


class ShardFolderSource(ActivationSource):
    """A folder of ``.npy`` shards (natural name order: 2 before 10), all of the same width.

    If the folder holds a ``manifest.json`` with a ``shards`` list, that order is used. Every
    entry must name a regular file inside the folder (after resolving links), once: ``..``,
    absolute paths, links out of the folder, devices and pipes are refused, naming the entry.
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
            self.shards = manifest_shards(self.folder, manifest)
        else:
            self.shards = [
                p for p in sorted(self.folder.glob("*.npy"), key=_natural_key)
                if _confined(self.folder, p) is not None and _is_regular_file(p)
            ]
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
                yield arr.read(lo, lo + self.chunk_size), f"{shard.name} rows {lo}+"

    def _last_rows(self) -> np.ndarray | None:
        for shard in reversed(self.shards):
            arr = open_npy(shard)
            if arr.shape[0]:
                return arr.read(max(0, arr.shape[0] - self.chunk_size), arr.shape[0])
        return None


def _confined(folder: Path, path: Path) -> Path | None:
    """``path`` resolved, if it lies inside ``folder`` (resolved); else ``None``."""
    try:
        resolved = path.resolve(strict=True)
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return resolved if root in resolved.parents else None


def manifest_shards(folder: Path, manifest: Path) -> list[Path]:
    """The shard paths listed by ``manifest`` (its ``shards`` list), confined to ``folder``.

    Parameters
    ----------
    folder:
        The activation folder.
    manifest:
        Its ``manifest.json``.

    Returns
    -------
    list[Path]
        ``folder / name`` for each entry, in order.

    Raises
    ------
    DictoptInputError
        An unreadable manifest, or an entry that is absolute, leaves the folder (``..``, a
        link), is not a regular file (a folder, device or pipe: opening a pipe would hang) or
        is listed twice; the message names the entry.
    """
    try:
        names = json.loads(manifest.read_text(encoding="utf-8"))["shards"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, OSError) as err:
        raise DictoptInputError(f"{manifest}: unreadable manifest ({err})") from err
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DictoptInputError(
            f"{manifest}: 'shards' must be a list of file names, got {str(names)[:200]}"
        )
    shards: list[Path] = []
    seen: dict[Path, str] = {}
    for name in names:
        bad = f"{manifest}: shard entry {name!r}"
        if not name or "\x00" in name or Path(name).is_absolute():
            raise DictoptInputError(f"{bad} must be a file name inside {folder}")
        path = folder / name
        resolved = _confined(folder, path)
        if resolved is None:
            what = "does not exist" if not (path.exists() or path.is_symlink()) else \
                "points outside the folder"
            raise DictoptInputError(f"{bad} {what}; entries must name files inside {folder}")
        if not _is_regular_file(resolved):
            raise DictoptInputError(
                f"{bad} is not a regular file (a folder, device or pipe); list .npy files only"
            )
        if resolved in seen:
            raise DictoptInputError(
                f"{bad} names the same file as {seen[resolved]!r}; each shard once"
            )
        seen[resolved] = name
        shards.append(path)
    return shards

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
