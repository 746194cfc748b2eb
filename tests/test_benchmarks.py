"""The benchmark harness (benchmarks/run.py): JSON schema, README block, figures' arithmetic.

Runs one tiny comparison end to end (``--smoke --only check``: sides in fresh processes) on a
temporary copy of README.md; no timing is asserted.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from benchmarks import harness
from benchmarks.run import main as run_main


def test_fit_exponent_recovers_a_power_law():
    sizes = [10.0, 20.0, 40.0, 80.0]
    assert harness.fit_exponent(sizes, [3 * s**1.7 for s in sizes]) == pytest.approx(1.7)
    assert harness.fit_exponent(sizes, [5.0] * 4) == pytest.approx(0.0, abs=1e-12)


def test_timing_and_ratio():
    a, b = harness.Timing([3.0, 1.0, 2.0]), harness.Timing([0.5, 0.25, 1.0])
    assert (a.min, a.median) == (1.0, 2.0)
    assert harness.ratio(a, b) == {"min": 4.0, "median": 4.0}
    assert harness.target_cell("≥ 3×", False, "2.0×") == "≥ 3×: not met: 2.0×"
    assert harness.target_cell("≥ 3×", True) == "≥ 3×: met"


def test_update_readme_needs_the_markers(tmp_path):
    p = tmp_path / "README.md"
    p.write_text("# no markers here\n")
    with pytest.raises(ValueError, match="benchmarks"):
        harness.update_readme(p, {})


def test_smoke_run_writes_json_and_regenerates_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(harness.ROOT / "README.md", readme)
    before = readme.read_text()
    out = tmp_path / "r.json"
    rc = run_main(["--smoke", "--only", "check", "--json", str(out), "--update-readme",
                   "--readme", str(readme)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == 1 and doc["mode"] == "smoke" and doc["failed"] == []
    m = doc["machine"]
    for key in ("cpu", "cores", "ram_gib", "date", "load_average_start", "load_average_end"):
        assert key in m
    for pkg in ("python", "torch", "numpy", "scikit-learn", "sae-lens"):
        assert pkg in m["versions"]
    (res,) = doc["results"]
    assert res["name"] == "check" and res["rows"]
    for side in ("check", "brute", "encdec"):
        s = res["sides"][side]
        assert s["memory"]["peak_mib"] >= 0 and s["memory"]["peak_rss_mib"] > 0
        for size in s["sizes"]:
            t = size["timing"]
            assert len(t["seconds"]) >= 1 and t["min"] == min(t["seconds"])
            assert t["min"] <= t["median"] <= max(t["seconds"])
    # Every ratio is the quotient of the two sides' figures in this run.
    for r in res["ratios"]["per_size"]:
        chk = next(s for s in res["sides"]["check"]["sizes"] if (s["K"], s["N"]) ==
                   (r["K"], r["N"]))
        enc = next(s for s in res["sides"]["encdec"]["sizes"] if (s["K"], s["N"]) ==
                   (r["K"], r["N"]))
        assert math.isclose(r["check_over_encdec"]["min"],
                            chk["timing"]["min"] / enc["timing"]["min"])
    # The verdicts of the checker and of the brute force agree at every size.
    assert all(a["digest"] == b["digest"] for a, b in
               zip(res["sides"]["check"]["sizes"], res["sides"]["brute"]["sizes"], strict=True))
    after = readme.read_text()
    i, j = before.index(harness.BEGIN), before.index(harness.END) + len(harness.END)
    k = after.index(harness.BEGIN)
    assert after[:k] == before[:i]
    assert after.endswith(before[j:])
    block = after[k: after.index(harness.END) + len(harness.END)]
    assert block == harness.render_block(doc)
    assert "Mode `smoke`" in block and res["rows"][0]["figure"] in block
    # Regenerating from the JSON gives the same README.
    assert run_main(["--from-json", str(out), "--update-readme", "--readme", str(readme)]) == 0
    assert readme.read_text() == after


def test_width_sizes_parse_and_reject_bad_entries():
    from benchmarks.bench_widths import parse_sizes

    assert parse_sizes("4096x768x30000, 16384X2304x8192") == [(4096, 768, 30000),
                                                              (16384, 2304, 8192)]
    for bad in ("4096x768", "4096x0x10", "ax768x10", "4096x768x10,"):
        with pytest.raises(ValueError, match="KxdxN"):
            parse_sizes(bad)


def test_timed_process_reports_cpu_time_and_peak_memory():
    import sys

    # a child that allocates ~80 MiB and spins ~0.3 s of CPU: both must show
    code = ("import time\nb = bytearray(80 * 2**20)\nb[::4096] = b'x' * len(b[::4096])\n"
            "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('ok')")
    r = harness.timed_process([sys.executable, "-c", code])
    assert r["stdout"].strip() == "ok"
    assert r["cpu_seconds"] >= 0.25
    assert r["peak_rss_mib"] >= 80
    with pytest.raises(SystemExit, match="failed with status 3"):
        harness.timed_process([sys.executable, "-c", "raise SystemExit(3)"])


def _issue17(tmp_path, *extra):
    from benchmarks.bench_issue17 import main as issue17_main

    out, md = tmp_path / "i17.json", tmp_path / "i17.md"
    rc = issue17_main(["--smoke", "--work", str(tmp_path / "work"), "--json", str(out),
                       "--md", str(md), *extra])
    return rc, json.loads(out.read_text()), md.read_text()


def _width_rows_are_consistent(doc, md):
    from benchmarks.bench_issue17 import WIDTHS
    from benchmarks.bench_widths import parse_sizes

    assert [(r["K"], r["d"], r["rows"]) for r in doc["widths"]] == parse_sizes(WIDTHS["smoke"])
    for r in doc["widths"]:
        e, c = r["encdec"], r["check"]
        assert e["cpu_seconds"] > 0 and c["cpu_seconds"] > 0
        assert e["peak_rss_mib"] > 0 and c["peak_rss_mib"] > 0
        # every ratio is the quotient of the two sides' figures in this run
        assert math.isclose(r["cpu_ratio"], c["cpu_seconds"] / e["cpu_seconds"])
        assert math.isclose(r["peak_ratio"], c["peak_rss_mib"] / e["peak_rss_mib"])
        met = r["cpu_ratio"] <= 2 and r["peak_ratio"] <= 1.5
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {r['K']:,} | {r['d']} |"))
        assert line.endswith("| met |") == met and ("not met" in line) == (not met)
        assert 0 < r["l0_check"] < r["K"]


def test_issue17_one_command_width_table(tmp_path):
    rc, doc, md = _issue17(tmp_path, "--no-speed")
    assert rc == 0 and doc["mode"] == "smoke" and doc["speed"] is None
    _width_rows_are_consistent(doc, md)
    for key in ("cpu", "cores", "date", "load_average_start"):
        assert key in doc["machine"]


@pytest.mark.slow
def test_issue17_one_command_with_the_speed_rows(tmp_path):
    rc, doc, md = _issue17(tmp_path)
    assert rc == 0 and doc["speed"]["failed"] == []
    _width_rows_are_consistent(doc, md)
    (res,) = doc["speed"]["results"]
    assert res["name"] == "speed" and len(res["rows"]) == 3  # hull, optimal vs own, repair
    for row in res["rows"]:
        assert row["figure"] in md


def test_issue17_refuses_bad_sizes(capsys):
    from benchmarks.bench_issue17 import main as issue17_main

    assert issue17_main(["--sizes", "4096x768"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sizes" in err[0] and "KxdxN" in err[0]
