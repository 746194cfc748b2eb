"""Scale-out on Dask: the distributed check equals the single-process one, survives a killed
worker, names a partition that keeps failing, and rejects bad input clearly."""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster

from dictopt.check import check  # noqa: E402
from dictopt.check.certify import certify  # noqa: E402
from dictopt.cli import main  # noqa: E402
from dictopt.data.worlds import make_world  # noqa: E402
from dictopt.distributed import (  # noqa: E402
    DaskExecutor,
    PartitionError,
    certify_distributed,
    check_distributed,
    dask_client,
    partition_source,
    wide_limit_bound_distributed,
)
from dictopt.distributed.sources import NpyRows  # noqa: E402
from dictopt.io.native import save_dictionary  # noqa: E402
from dictopt.problem import Dictionary  # noqa: E402
from dictopt.validation import DictoptInputError  # noqa: E402
from dictopt.wide.bound import wide_limit_bound  # noqa: E402
from tests.test_check_cli import _TestRelu  # noqa: E402

LAM = 0.1
CUTS = [0, 700, 1700, 2300, 3000]  # uneven shards: 700, 1000, 600, 700 rows
CHUNK = 256


def _local_client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def client():
    yield from _local_client()


@pytest.fixture
def own_client():
    """A cluster for one test (one whose workers the test kills leaves the shared one alone)."""
    yield from _local_client()


@pytest.fixture(scope="module")
def world():
    return make_world("hierarchy", seed=0, n=CUTS[-1], d=16, n_roots=3, branching=2,
                      bias_norm=1.0)


@pytest.fixture(scope="module")
def sae(world):
    truth = world.truth(LAM)
    enc = _TestRelu(truth.atoms.t().contiguous(),
                    torch.full((world.K_true,), -0.05, dtype=torch.float64), truth.bias)
    return Dictionary(atoms=truth.atoms, bias=truth.bias, lam=LAM, encoder=enc)


@pytest.fixture(scope="module")
def shards(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    for i, (lo, hi) in enumerate(zip(CUTS[:-1], CUTS[1:], strict=True)):
        np.save(folder / f"shard_{i:05d}.npy", world.x[lo:hi])
    return folder


@pytest.fixture(scope="module")
def reference(sae, shards):
    return check(sae, shards, codes="own", chunk_size=CHUNK)


# ---- comparing reports --------------------------------------------------------------------

EXACT_SUMMARY = ("N", "K", "d", "lam", "codes", "tau", "has_bias", "unstable_optimum", "counts",
                 "labels", "max_kkt_violation", "pairs_in_pass2")
EXACT_ATOM = ("k", "active_fraction", "min_code", "max_code", "kkt_violation", "labels")


def close(a, b, path="", rel=1e-9, abs_=1e-12):
    """Recursive equality: exact for everything but floats (``rel``/``abs_``)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            close(a[k], b[k], f"{path}.{k}", rel, abs_)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]", rel, abs_)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=abs_) or (math.isnan(a) and math.isnan(b)), (
            f"{path}: {a} vs {b}"
        )
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


def assert_same_report(dist, ref):
    """Counts, labels, maxima and minima exactly; sums to rounding; hull LP outputs to the LP
    tolerance; timings ignored."""
    j1, j2 = dist.to_json(), ref.to_json()
    for key in EXACT_SUMMARY:
        assert j1["summary"][key] == j2["summary"][key], key
    s1 = {k: v for k, v in j1["summary"].items() if k not in ("timings", "hull")}
    s2 = {k: v for k, v in j2["summary"].items() if k not in ("timings", "hull")}
    close(s1, s2, "summary")
    assert j1["summary"]["hull"]["mode"] == j2["summary"]["hull"]["mode"]
    for r1, r2 in zip(j1["atoms"], j2["atoms"], strict=True):
        for key in EXACT_ATOM:
            assert r1[key] == r2[key], (r1["k"], key)
        close(r1, r2, f"atom {r1['k']}")
    key = lambda v: (v["condition"], str(v["i"]), str(v["j"]), v["label"])  # noqa: E731
    v1, v2 = sorted(j1["violations"], key=key), sorted(j2["violations"], key=key)
    assert [key(v) for v in v1] == [key(v) for v in v2]
    for a, b in zip(v1, v2, strict=True):
        # the joint hull's direction and step come from an LP solved to ~1e-8 from inputs that
        # differ by rounding: compare them to the solver's tolerance
        hull = a["condition"] == "hull"
        close(a, b, f"violation {key(a)}", rel=1e-5 if hull else 1e-9, abs_=1e-9 if hull else 1e-12)
    assert j1["labels"] == j2["labels"]


# ---- equality with the single-process check ------------------------------------------------


def test_shard_folder_report_equals_single_process(client, sae, shards, reference):
    assert reference.summary["counts"]["C5"] > 0 and reference.summary["hull"]["mode"] == "exact"
    rep = check_distributed(sae, shards, client=client, chunk_size=CHUNK)
    assert_same_report(rep, reference)
    # the same through check(executor=...)
    rep = check(sae, shards, executor=DaskExecutor(client), chunk_size=CHUNK)
    assert_same_report(rep, reference)


def test_amortisation_sample_is_the_same_rows_on_dask(client, sae, shards, reference):
    """The default amortisation gap is a sample chosen by global row index: the partitions
    (uneven shards, 256-row chunks) and the single process (one stream) solve exactly the same
    rows, so sample size, gap and standard error agree (the report comparison above covers
    every field; here the sample itself)."""
    from dictopt.check.amortisation import DEFAULT_SAMPLE_ROWS, sample_mask

    am = reference.summary["amortisation"]
    assert am["rows"] == "sample"
    assert am["sample_size"] == int(sample_mask(0, CUTS[-1], DEFAULT_SAMPLE_ROWS / CUTS[-1]).sum())
    rep = check_distributed(sae, shards, client=client, chunk_size=100, partition_rows=450,
                            hull=False, amortisation=("sample", 300))
    one = check(sae, shards, chunk_size=1000, hull=False, amortisation=300)
    a, b = rep.summary["amortisation"], one.summary["amortisation"]
    assert a["sample_size"] == b["sample_size"] == int(sample_mask(0, CUTS[-1], 0.1).sum())
    assert a["loss_gap"] == pytest.approx(b["loss_gap"], rel=1e-9)
    assert a["loss_gap_se"] == pytest.approx(b["loss_gap_se"], rel=1e-7)
    assert np.allclose(a["mean_abs_code_diff"], b["mean_abs_code_diff"], rtol=1e-9, atol=1e-12)


def test_optimal_codes_on_zarr_and_dask_equal_single_process(client, world, tmp_path):
    import dask.array as da
    import zarr

    truth = world.truth(LAM)
    ref = check(truth, world.x, codes="optimal", chunk_size=CHUNK)
    assert ref.summary["tau"] > 0  # τ chosen on the first chunk, relative to its largest code
    z = zarr.create_array(tmp_path / "acts.zarr", shape=world.x.shape, chunks=(CHUNK, 16),
                          dtype="f8")
    z[:] = world.x
    rep = check_distributed(truth, str(tmp_path / "acts.zarr"), client=client, codes="optimal",
                            chunk_size=CHUNK, partition_rows=1000)  # 4 Zarr chunks each
    assert_same_report(rep, ref)
    x = da.from_zarr(str(tmp_path / "acts.zarr")).rechunk((1024, 16))
    rep = check_distributed(truth, x, client=client, codes="optimal", chunk_size=CHUNK)
    assert_same_report(rep, ref)


def test_partitions_are_named_and_cover_the_rows(shards, tmp_path):
    ps = partition_source(shards, rows=512)
    names = [p.name for p in ps.partitions]
    assert names[:3] == ["shard_00000.npy[0:512]", "shard_00000.npy[512:700]",
                         "shard_00001.npy[0:512]"]
    assert sum(p.n for p in ps.partitions) == ps.n == CUTS[-1]
    assert [p.start for p in ps.partitions][:3] == [0, 512, 700]
    # a manifest fixes the order
    (shards / "manifest.json").write_text(json.dumps({"shards": ["shard_00001.npy",
                                                                  "shard_00000.npy"]}))
    try:
        assert [p.name for p in partition_source(shards).partitions] == [
            "shard_00001.npy", "shard_00000.npy"]
    finally:
        (shards / "manifest.json").unlink()


def test_certify_distributed_equals_certify(client, sae, shards):
    report = check(sae, shards, chunk_size=CHUNK)  # not the shared reference: certify fills it
    ref = certify(sae, shards, report, top=10)
    got = certify_distributed(sae, shards, report, client=client, top=10, chunk_size=CHUNK)
    assert len(got) == len(ref) > 0
    for m1, m2 in zip(got, ref, strict=True):
        assert m1.measured_decrease == pytest.approx(m2.measured_decrease, rel=1e-9, abs=1e-15)
        assert m1.min_new_code == m2.min_new_code
        # the certificate lowers the loss by its exact model decrease (THEORY §2)
        if m1.violation.condition != "C1":
            assert m1.measured_decrease == pytest.approx(m1.violation.model_decrease, rel=1e-6)


def test_pair_data_on_dask_equals_local(client, sae, shards):
    from dictopt.check.pairdata import pair_data

    pairs = [(1, 0), (3, 2), (0, 4)]
    ref = pair_data(sae, shards, pairs, sample=64, seed=2)
    got = pair_data(sae, shards, pairs, sample=64, seed=2, executor=DaskExecutor(client))
    for p, q in zip(got, ref, strict=True):
        assert (p.n, p.coactive, p.n_off_i, p.n_off_j) == (q.n, q.coactive, q.n_off_i, q.n_off_j)
        np.testing.assert_allclose([p.lo_i, p.hi_i, p.lo_j, p.hi_j, p.mean_i, p.mean_j],
                                   [q.lo_i, q.hi_i, q.lo_j, q.hi_j, q.mean_i, q.mean_j],
                                   rtol=1e-12, equal_nan=True)
        np.testing.assert_array_equal(p.sample, q.sample)


@pytest.mark.parametrize("method", ["fast", "mm"])
def test_wide_bound_distributed_equals_single_process(client, world, shards, method):
    ref = wide_limit_bound(world.x, LAM, method=method, max_iter=500)
    got = wide_limit_bound_distributed(shards, LAM, client=client, method=method, max_iter=500,
                                       chunk_size=CHUNK)
    assert got.converged and ref.converged
    assert got.value == pytest.approx(ref.value, rel=1e-10)
    assert torch.allclose(got.bias, ref.bias, atol=1e-7)
    assert got.n_outside == ref.n_outside


# ---- faults ----------------------------------------------------------------------------------


@dataclass
class KillOnce(NpyRows):
    """Kills its worker process the first time it is read (while the marker file exists)."""

    marker: str = ""

    def read(self, lo: int, hi: int) -> np.ndarray:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            return super().read(lo, hi)
        os._exit(1)


@dataclass
class FailTimes(NpyRows):
    """Raises on its first ``fails`` reads (counted in a file shared by the workers)."""

    counter: str = ""
    fails: int = 0

    def read(self, lo: int, hi: int) -> np.ndarray:
        if lo == 0:
            path = Path(self.counter)
            n = int(path.read_text()) + 1 if path.exists() else 1
            path.write_text(str(n))
            if n <= self.fails:
                raise OSError(f"simulated read error {n}")
        return super().read(lo, hi)


def _with_reader(shards, index, make):
    ps = partition_source(shards)
    parts = list(ps.partitions)
    p = parts[index]
    parts[index] = p._replace(data=make(p.data))
    return ps._replace(partitions=parts)


def test_worker_killed_mid_run_is_survived(own_client, sae, shards, reference, tmp_path):
    marker = tmp_path / "kill"
    marker.touch()
    ps = _with_reader(shards, 3, lambda r: KillOnce(r.path, r.lo, r.hi, marker=str(marker)))
    rep = check_distributed(sae, ps, client=own_client, chunk_size=CHUNK)
    assert not marker.exists()  # a worker really died reading the last partition
    assert_same_report(rep, reference)


def test_partition_failing_once_is_retried(client, sae, shards, reference, tmp_path):
    counter = tmp_path / "count"
    ps = _with_reader(shards, 2, lambda r: FailTimes(r.path, r.lo, r.hi, counter=str(counter),
                                                     fails=1))
    rep = check_distributed(sae, ps, client=client, chunk_size=CHUNK)
    assert int(counter.read_text()) >= 2
    assert_same_report(rep, reference)


def test_partition_failing_twice_is_named(client, sae, shards, tmp_path):
    counter = tmp_path / "count"
    ps = _with_reader(shards, 2, lambda r: FailTimes(r.path, r.lo, r.hi, counter=str(counter),
                                                     fails=2))
    with pytest.raises(PartitionError, match="shard_00002.npy.*simulated read error 2") as err:
        check_distributed(sae, ps, client=client, chunk_size=CHUNK)
    assert err.value.partition == "shard_00002.npy"


# ---- bad input -------------------------------------------------------------------------------


def test_shards_of_different_widths_name_the_shard(tmp_path, world):
    np.save(tmp_path / "a_0.npy", world.x[:100])
    np.save(tmp_path / "a_1.npy", world.x[100:200, :-1])
    with pytest.raises(DictoptInputError, match="a_1.npy: width 15 differs"):
        partition_source(tmp_path)


def test_empty_shard_is_skipped_with_a_warning_and_unreadable_one_named(
    client, sae, shards, reference, tmp_path
):
    folder = tmp_path / "with_empty"
    folder.mkdir()
    for f in sorted(shards.glob("*.npy")):
        (folder / f.name).write_bytes(f.read_bytes())
    np.save(folder / "shard_00001b.npy", np.zeros((0, 16)))  # sorts between 1 and 2
    with pytest.warns(UserWarning, match="shard_00001b.npy: empty shard"):
        rep = check_distributed(sae, folder, client=client, chunk_size=CHUNK)
    assert_same_report(rep, reference)
    (folder / "shard_00001b.npy").write_bytes(b"")  # a zero-byte (truncated) file
    with pytest.raises(DictoptInputError, match="shard_00001b.npy: not a readable .npy"):
        partition_source(folder)
    empty = tmp_path / "all_empty"
    empty.mkdir()
    np.save(empty / "e.npy", np.zeros((0, 16)))
    with pytest.warns(UserWarning), pytest.raises(DictoptInputError, match="holds no rows"):
        partition_source(empty)


def test_non_finite_rows_name_the_partition(client, sae, tmp_path, world):
    x = world.x[:600].copy()
    x[450, 3] = np.inf
    np.save(tmp_path / "p0.npy", world.x[600:900])
    np.save(tmp_path / "p1.npy", x)
    with pytest.raises(DictoptInputError, match="p1.npy"):
        check_distributed(sae, tmp_path, client=client, chunk_size=CHUNK, retries=0)


def test_unreachable_scheduler_fails_fast_and_clearly():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(DictoptInputError, match=f"no Dask scheduler answered at {address}"):
        with dask_client(scheduler=address, timeout=2):
            pass


def test_in_memory_arrays_and_given_codes_are_refused(client, sae, world):
    with pytest.raises(DictoptInputError, match="workers can open"):
        check_distributed(sae, world.x, client=client)
    with pytest.raises(DictoptInputError, match="given codes"):
        check_distributed(sae, "unused", client=client, codes=world.codes)


# ---- command line ------------------------------------------------------------------------------


def test_cli_check_on_a_scheduler_equals_single_process(client, sae, shards, tmp_path, capsys):
    folder = save_dictionary(sae, tmp_path / "sae")
    one, dist = tmp_path / "one.json", tmp_path / "dist.json"
    args = ["check", str(folder), "--activations", str(shards), "--quiet", "--certify", "5"]
    assert main([*args, "--json", str(one)]) == 0
    address = client.scheduler.address
    assert main([*args, "--json", str(dist), "--scheduler", address]) == 0
    j1, j2 = json.loads(dist.read_text()), json.loads(one.read_text())
    assert j1["summary"]["counts"] == j2["summary"]["counts"]
    assert j1["summary"]["loss"] == pytest.approx(j2["summary"]["loss"], rel=1e-12)
    m1 = sorted(v["measured_decrease"] for v in j1["violations"] if v["measured_decrease"])
    m2 = sorted(v["measured_decrease"] for v in j2["violations"] if v["measured_decrease"])
    assert len(m1) == 5 and m1 == pytest.approx(m2, rel=1e-9)
    capsys.readouterr()
    assert main([*args, "--scheduler", address, "--lam", "implied"]) == 2
    assert "--lam implied is not available" in capsys.readouterr().err


def test_heldout_report_equals_single_process(client, sae, shards):
    """The held-out passes (THEORY §5) split rows by global index, so a Dask check with
    ``heldout=True`` gives the single-process report: the same findings, steps and
    significance; decreases and standard errors to rounding."""
    ref = check(sae, shards, codes="optimal", chunk_size=CHUNK, heldout=True, hull=False)
    dist = check_distributed(sae, shards, client=client, codes="optimal", chunk_size=CHUNK,
                             heldout=True, hull=False)
    assert ref.summary["heldout"]["candidates"] > 0
    assert_same_report(dist, ref)
