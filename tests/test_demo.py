"""The README's main job: `dictopt demo` end to end on a small world."""

import json
import re
import sys

from dictopt.cli import main


def test_demo_flags_every_planted_edge_and_writes_outputs(tmp_path, capsys, monkeypatch):
    import dictopt.demo as demo

    monkeypatch.setattr(demo, "DEMO_WORLD", {"n": 600, "n_roots": 3, "branching": 2})
    monkeypatch.setattr(demo, "SAE_STEPS", 300)
    monkeypatch.setattr(demo, "SWEEP_WIDTHS", (2, 4))
    monkeypatch.setattr(demo, "SWEEP_N", 200)
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    # THEORY C5: a strict hierarchy is never a local minimum, so every edge must be flagged.
    assert summary["truth_edges"] > 0
    assert summary["truth_edges_flagged"] == summary["truth_edges"]
    assert summary["repaired_loss"] < summary["truth_loss"] + 1e-12
    for name in ("check_truth.json", "check_classical.json", "check_sae_relu.json",
                 "summary.txt", "wide.json"):
        assert (tmp_path / name).is_file()
    # The wide-limit bound is below every width's best loss (THEORY §3).
    assert all(gap >= -1e-9 for gap in summary["wide_gaps"].values())
    html = (tmp_path / "report_truth.html").read_text()
    assert "id='summary'" in html and html.count("data:image/png;base64,") >= 3
    assert (tmp_path / "classical" / "cfg.json").is_file()
    assert "planted edges flagged as C5 violations" in out


def test_demo_narrates_before_repair_starts(tmp_path, capsys, monkeypatch):
    """The first summary line is printed when its phase ends, before repair begins (the demo
    used to print everything at the end)."""
    import dictopt.demo as demo

    monkeypatch.setattr(demo, "DEMO_WORLD", {"n": 300, "n_roots": 2, "branching": 2})
    monkeypatch.setattr(demo, "SAE_STEPS", 50)
    monkeypatch.setattr(demo, "SWEEP_WIDTHS", (2,))
    monkeypatch.setattr(demo, "SWEEP_N", 100)
    real_repair = demo.repair

    def marked_repair(*args, **kwargs):
        sys.stdout.write("<<repair starts>>\n")
        return real_repair(*args, **kwargs)

    monkeypatch.setattr(demo, "repair", marked_repair)
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    start = out.index("<<repair starts>>")
    assert out.index("world 'hierarchy'") < start
    assert out.index("planted edges flagged as C5 violations") < start
    assert out.index("repair of the ground truth") > start
    # each phase line carries its time; the last lines point to the HTML reports
    assert re.search(r"planted edges flagged as C5 violations .*\[\d+\.\d s\]", out)
    assert "report_truth.html in a browser" in out
