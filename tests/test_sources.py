"""Activation sources: chunking, global row offsets, shard order, and every bad-input path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.data.sources import (
    ActivationSource,
    ArraySource,
    Chunk,
    NpySource,
    ShardFolderSource,
    as_source,
    open_npy,
)
from dictopt.validation import DictoptInputError


def rows(n: int, d: int, start: int = 0) -> np.ndarray:
    """Rows whose first column is their global index: chunk order is visible in the data."""
    x = np.random.default_rng(start).standard_normal((n, d))
    x[:, 0] = np.arange(start, start + n)
    return x


def collect(source: ActivationSource) -> list[Chunk]:
    return list(source.iter_chunks())


def check_chunks(chunks: list[Chunk], expected: np.ndarray, chunk_size: int) -> None:
    """Chunks tile ``expected`` in order, with correct global starts, none above chunk_size."""
    start = 0
    for chunk in chunks:
        assert chunk.start == start
        assert 1 <= chunk.data.shape[0] <= chunk_size
        start += chunk.data.shape[0]
    assert start == expected.shape[0]
    np.testing.assert_array_equal(torch.cat([c.data for c in chunks]).numpy(), expected)


# --------------------------------------------------------------------------------------------
# ArraySource
# --------------------------------------------------------------------------------------------


@given(n=st.integers(1, 60), d=st.integers(1, 5), chunk_size=st.integers(1, 70))
@settings(max_examples=30, deadline=None)
def test_array_source_chunks_tile_the_data(n: int, d: int, chunk_size: int) -> None:
    x = rows(n, d)
    source = ArraySource(x, chunk_size=chunk_size)
    assert (source.n, source.d) == (n, d)
    chunks = collect(source)
    assert len(chunks) == -(-n // chunk_size)
    check_chunks(chunks, x, chunk_size)
    assert [c.label for c in chunks] == [f"chunk {i}" for i in range(len(chunks))]


def test_array_source_accepts_tensors_lists_and_casts() -> None:
    x = rows(10, 3)
    for obj in (x, torch.from_numpy(x), x.tolist()):
        np.testing.assert_array_equal(ArraySource(obj).to_tensor().numpy(), x)
    ints = ArraySource(np.arange(6).reshape(3, 2)).to_tensor()
    assert ints.dtype == torch.float64
    f32 = ArraySource(x, dtype=torch.float32).to_tensor()
    assert f32.dtype == torch.float32
    # iterating the source yields the chunk tensors
    assert sum(t.shape[0] for t in ArraySource(x, chunk_size=4)) == 10


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((0, 3)), "empty array"),
        (np.zeros(5), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.array([["a", "b"]]), "cannot be read"),
        (np.ones((3, 2), dtype=complex), "complex"),
    ],
)
def test_array_source_bad_input(bad: np.ndarray, match: str) -> None:
    with pytest.raises(DictoptInputError, match=match):
        ArraySource(bad)


@pytest.mark.parametrize("chunk_size", [0, -1, 2.5])
def test_bad_chunk_size(chunk_size: object, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", rows(4, 2))
    for make in (
        lambda: ArraySource(rows(4, 2), chunk_size=chunk_size),
        lambda: NpySource(tmp_path / "x.npy", chunk_size=chunk_size),
        lambda: ShardFolderSource(tmp_path, chunk_size=chunk_size),
    ):
        with pytest.raises(DictoptInputError, match="chunk_size"):
            make()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_array_source_non_finite_names_global_row(value: float) -> None:
    x = rows(25, 3)
    x[17, 2] = value
    source = ArraySource(x, chunk_size=10)
    seen = []
    with pytest.raises(DictoptInputError, match=r"\(chunk 1\): row 17 contains a non-finite"):
        for chunk in source.iter_chunks():
            seen.append(chunk.start)
    assert seen == [0]  # the clean first chunk was served before the error


# --------------------------------------------------------------------------------------------
# NpySource
# --------------------------------------------------------------------------------------------


def test_npy_source_reads_rows_explicitly_and_chunked(tmp_path: Path) -> None:
    x = rows(103, 4).astype(np.float32)
    path = tmp_path / "acts.npy"
    np.save(path, x)
    header = open_npy(path)  # header only: rows are read per chunk, never memory-mapped
    assert header.shape == (103, 4) and not isinstance(header, np.ndarray)
    np.testing.assert_array_equal(header.read(100, 200), x[100:])
    source = NpySource(path, chunk_size=25)
    assert (source.n, source.d) == (103, 4)
    chunks = collect(source)
    check_chunks(chunks, x, 25)
    assert chunks[0].data.dtype == torch.float32  # precision kept unless asked
    assert chunks[2].label == "acts.npy rows 50+"
    # chunks are copies: writing to one does not touch the file
    chunks[0].data[0, 0] = 1e6
    assert np.load(path)[0, 0] == x[0, 0]


def test_npy_source_fortran_order_and_ints(tmp_path: Path) -> None:
    x = np.asfortranarray(rows(30, 5))
    np.save(tmp_path / "f.npy", x)
    check_chunks(collect(NpySource(tmp_path / "f.npy", chunk_size=7)), x, 7)
    np.save(tmp_path / "i.npy", np.arange(12, dtype=np.int32).reshape(6, 2))
    assert NpySource(tmp_path / "i.npy").to_tensor().dtype == torch.float64


def test_npy_source_nan_names_file_and_global_row(tmp_path: Path) -> None:
    x = rows(50, 3)
    x[37, 0] = np.nan
    np.save(tmp_path / "acts.npy", x)
    with pytest.raises(DictoptInputError, match=r"acts\.npy rows 30\+\): row 37 contains"):
        collect(NpySource(tmp_path / "acts.npy", chunk_size=15))


def test_npy_source_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DictoptInputError, match="no such file"):
        NpySource(tmp_path / "missing.npy")
    (tmp_path / "garbage.npy").write_bytes(b"this is not an npy file at all")
    with pytest.raises(DictoptInputError, match="garbage.npy: not a readable .npy file"):
        NpySource(tmp_path / "garbage.npy")
    np.save(tmp_path / "whole.npy", rows(40, 4))
    data = (tmp_path / "whole.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(DictoptInputError, match="truncated.npy: not a readable .npy file"):
        NpySource(tmp_path / "truncated.npy")
    (tmp_path / "empty_file.npy").write_bytes(b"")
    with pytest.raises(DictoptInputError, match="empty_file.npy: not a readable .npy file"):
        NpySource(tmp_path / "empty_file.npy")
    np.save(tmp_path / "one_d.npy", np.zeros(5))
    with pytest.raises(DictoptInputError, match="one_d.npy: expected a 2-D array"):
        NpySource(tmp_path / "one_d.npy")
    np.save(tmp_path / "bool.npy", np.ones((3, 2), dtype=bool))
    with pytest.raises(DictoptInputError, match="bool.npy: expected numeric data"):
        NpySource(tmp_path / "bool.npy")
    np.save(tmp_path / "complex.npy", np.ones((3, 2), dtype=complex))
    with pytest.raises(DictoptInputError, match="complex"):
        collect(NpySource(tmp_path / "complex.npy"))
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(DictoptInputError, match="obj.npy: not a readable .npy file") as err:
        NpySource(tmp_path / "obj.npy")
    assert "allow_pickle" not in str(err.value)  # numpy's hint invites an unsafe workaround


def test_npy_source_zero_rows_is_empty_data(tmp_path: Path) -> None:
    np.save(tmp_path / "none.npy", np.zeros((0, 4)))
    source = NpySource(tmp_path / "none.npy")
    assert (source.n, source.d) == (0, 4)
    with pytest.raises(DictoptInputError, match="holds no rows"):
        collect(source)


# --------------------------------------------------------------------------------------------
# ShardFolderSource
# --------------------------------------------------------------------------------------------


def write_shards(
    folder: Path, sizes: list[int], d: int = 3, names: list[str] | None = None
) -> np.ndarray:
    """Shards ``shard_000.npy``… holding consecutive global rows; returns all rows."""
    folder.mkdir(exist_ok=True)
    names = names or [f"shard_{i:03d}.npy" for i in range(len(sizes))]
    parts, start = [], 0
    for name, size in zip(names, sizes, strict=True):
        part = rows(size, d, start)
        np.save(folder / name, part)
        parts.append(part)
        start += size
    return np.concatenate(parts)


@given(
    sizes=st.lists(st.integers(0, 23), min_size=1, max_size=5).filter(lambda s: sum(s) > 0),
    chunk_size=st.integers(1, 30),
)
@settings(max_examples=25, deadline=None)
def test_shard_folder_sorted_order_offsets_and_labels(sizes: list[int], chunk_size: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x = write_shards(folder, sizes)
        source = ShardFolderSource(folder, chunk_size=chunk_size)
        assert (source.n, source.d) == (sum(sizes), 3)
        chunks = collect(source)
        check_chunks(chunks, x, chunk_size)
        # chunks never straddle shards: every label names the shard its rows came from
        for chunk in chunks:
            shard = int(chunk.label.split("_")[1].split(".")[0])
            assert chunk.start >= sum(sizes[:shard])
            assert chunk.start + chunk.data.shape[0] <= sum(sizes[: shard + 1])


def test_shard_folder_manifest_order_wins(tmp_path: Path) -> None:
    # files named so that name order differs from the intended order
    write_shards(tmp_path, [4, 5, 6], names=["c.npy", "a.npy", "b.npy"])
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": ["c.npy", "a.npy", "b.npy"]}))
    source = ShardFolderSource(tmp_path, chunk_size=100)
    chunks = collect(source)
    assert [c.label.split()[0] for c in chunks] == ["c.npy", "a.npy", "b.npy"]
    np.testing.assert_array_equal(
        torch.cat([c.data for c in chunks]).numpy()[:, 0], np.arange(15)
    )
    # without the manifest the shards come sorted by name
    (tmp_path / "manifest.json").unlink()
    names = [c.label.split()[0] for c in collect(ShardFolderSource(tmp_path, chunk_size=100))]
    assert names == ["a.npy", "b.npy", "c.npy"]


def test_shard_folder_manifest_may_list_a_subset(tmp_path: Path) -> None:
    write_shards(tmp_path, [4, 5, 6])
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": ["shard_002.npy"]}))
    source = ShardFolderSource(tmp_path)
    assert source.n == 6
    np.testing.assert_array_equal(source.to_tensor().numpy()[:, 0], np.arange(9, 15))


@pytest.mark.parametrize(
    "manifest, match",
    [
        ("{not json", "unreadable manifest"),
        (json.dumps({"files": ["a.npy"]}), "unreadable manifest"),
        (json.dumps(["a.npy"]), "unreadable manifest"),
        (json.dumps({"shards": []}), "no .npy shards"),
        (json.dumps({"shards": ["missing.npy"]}), "missing.npy"),
        (json.dumps({"shards": "shard_000.npy"}), "'shards' must be a list"),
        (json.dumps({"shards": [1, 2]}), "'shards' must be a list"),
    ],
)
def test_shard_folder_bad_manifest(tmp_path: Path, manifest: str, match: str) -> None:
    write_shards(tmp_path, [3])
    (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(DictoptInputError, match=match):
        ShardFolderSource(tmp_path)


def test_shard_folder_width_mismatch_names_the_shard(tmp_path: Path) -> None:
    write_shards(tmp_path, [4, 4])
    np.save(tmp_path / "shard_002.npy", rows(4, 5))
    with pytest.raises(
        DictoptInputError, match=r"shard_002\.npy: width 5 differs from shard_000\.npy \(width 3\)"
    ):
        ShardFolderSource(tmp_path)


def test_shard_folder_nan_in_shard_two_names_shard_and_global_row(tmp_path: Path) -> None:
    write_shards(tmp_path, [10, 12, 8])
    bad = np.load(tmp_path / "shard_002.npy")
    bad[5, 1] = np.nan
    np.save(tmp_path / "shard_002.npy", bad)
    source = ShardFolderSource(tmp_path, chunk_size=4)  # the NaN is in the chunk "rows 4+"
    starts = []
    with pytest.raises(
        DictoptInputError, match=r"\(shard_002\.npy rows 4\+\): row 27 contains a non-finite"
    ):
        for chunk in source.iter_chunks():
            starts.append(chunk.start)
    assert starts[-1] == 22  # every row before the bad chunk was served


def test_shard_folder_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(DictoptInputError, match="no such folder"):
        ShardFolderSource(tmp_path / "nope")
    with pytest.raises(DictoptInputError, match="no .npy shards found"):
        ShardFolderSource(tmp_path)
    write_shards(tmp_path, [0, 0])
    with pytest.raises(DictoptInputError, match="holds no rows"):
        collect(ShardFolderSource(tmp_path))
    (tmp_path / "shard_001.npy").write_bytes(b"\x93NUMPY corrupt")
    with pytest.raises(DictoptInputError, match="shard_001.npy: not a readable .npy file"):
        ShardFolderSource(tmp_path)


# --------------------------------------------------------------------------------------------
# as_source
# --------------------------------------------------------------------------------------------


def test_as_source_dispatch(tmp_path: Path) -> None:
    x = rows(9, 2)
    np.save(tmp_path / "x.npy", x)
    write_shards(tmp_path / "shards", [3, 4])
    array_source = ArraySource(x)
    assert as_source(array_source) is array_source
    assert isinstance(as_source(x), ArraySource)
    assert isinstance(as_source(torch.from_numpy(x)), ArraySource)
    assert isinstance(as_source(x.tolist()), ArraySource)
    for path in (tmp_path / "x.npy", str(tmp_path / "x.npy")):
        assert isinstance(as_source(path), NpySource)
    for folder in (tmp_path / "shards", str(tmp_path / "shards")):
        assert isinstance(as_source(folder), ShardFolderSource)
    # options reach the source
    source = as_source(tmp_path / "x.npy", chunk_size=2, dtype=torch.float32)
    assert source.chunk_size == 2 and source.to_tensor().dtype == torch.float32
    # an existing file without the .npy suffix is still read as .npy
    (tmp_path / "acts.bin").write_bytes((tmp_path / "x.npy").read_bytes())
    assert isinstance(as_source(tmp_path / "acts.bin"), NpySource)
    with pytest.raises(DictoptInputError, match="no such file or folder"):
        as_source(tmp_path / "nothing")
    with pytest.raises(DictoptInputError, match="no such file"):
        as_source(tmp_path / "nothing.npy")


def test_shard_folder_natural_order_without_manifest(tmp_path: Path) -> None:
    """shard_2 comes before shard_10 (plain name order would put 10 first)."""
    for i in (10, 2, 1):
        np.save(tmp_path / f"shard_{i}.npy", np.full((2, 3), float(i)))
    names = [c.label.split()[0] for c in collect(ShardFolderSource(tmp_path, chunk_size=100))]
    assert names == ["shard_1.npy", "shard_2.npy", "shard_10.npy"]
