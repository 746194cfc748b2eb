"""Golden reports: each case's JSON report, recomputed now, equals its committed file byte for
byte (wall-clock fields normalised, see ``scripts/golden.py``, which regenerates the files).

A failure means report content changed. If that was intended, regenerate with
``python scripts/golden.py`` and say in the commit what changed and why.
"""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dictopt_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world():
    return golden.world()


@pytest.fixture(scope="module")
def cluster_and_shards(tmp_path_factory, world):
    shards = golden.write_shards(world, tmp_path_factory.mktemp("golden-shards"))
    with golden.local_cluster() as client:
        yield client, shards


def _assert_same(name: str, text: str) -> None:
    expected = (golden.GOLDEN / name).read_text()
    if text != expected:
        diff = "".join(difflib.unified_diff(
            expected.splitlines(keepends=True), text.splitlines(keepends=True),
            f"golden/{name}", "now", n=1,
        ))
        pytest.fail(f"{name} changed (regenerate with scripts/golden.py if intended):\n"
                    + diff[:4000])


def test_every_golden_file_has_a_case():
    files = {p.name for p in golden.GOLDEN.glob("*.json")}
    expected = {f"{c}.json" for c in golden.CASES} | {f"{c}_dask.json" for c in golden.DASK_CASES}
    assert files == expected


def test_normalise_touches_only_wall_clock_fields():
    rep = {"summary": {"timings": {"pass1": 1.5, "total": 2.0}, "loss": 0.25,
                       "hull": {"mode": "exact", "atoms_checked": 3, "seconds": 0.7}},
           "atoms": [{"k": 0}]}
    assert golden.normalise(rep) == {
        "summary": {"timings": {"pass1": 0.0, "total": 0.0}, "loss": 0.25,
                    "hull": {"mode": "exact", "atoms_checked": 3, "seconds": 0.0}},
        "atoms": [{"k": 0}]}


@pytest.mark.parametrize("case", golden.CASES)
def test_local_report_is_golden(case, world):
    _assert_same(f"{case}.json", golden.local_report(case, world))


@pytest.mark.parametrize("case", golden.DASK_CASES)
def test_dask_report_is_golden(case, world, cluster_and_shards):
    client, shards = cluster_and_shards
    _assert_same(f"{case}_dask.json", golden.dask_report(case, world, client, shards))
