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


def test_demo_without_autograd_finds_the_same(tmp_path, monkeypatch):
    """The demo runs its phases (but the SAE's training) in ``torch.inference_mode`` for speed:
    with autograd on throughout it writes the same findings, check reports (but their
    timings), wide sweep and dictionaries, byte for byte where no time is recorded."""
    import contextlib

    import dictopt.demo as demo

    monkeypatch.setattr(demo, "DEMO_WORLD", {"n": 300, "n_roots": 2, "branching": 2})
    monkeypatch.setattr(demo, "SAE_STEPS", 50)
    monkeypatch.setattr(demo, "SWEEP_WIDTHS", (2, 4))
    monkeypatch.setattr(demo, "SWEEP_N", 100)
    fast = demo.run_demo(tmp_path / "fast", progress=False)
    monkeypatch.setattr(demo.torch, "inference_mode", contextlib.nullcontext)
    plain = demo.run_demo(tmp_path / "plain", progress=False)

    def untimed(value):  # noqa: ANN001, ANN202
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in ("seconds", "timings")}
        return [untimed(v) for v in value] if isinstance(value, list) else value

    assert untimed(fast.figures) == untimed(plain.figures)
    for name in ("check_truth.json", "check_classical.json", "check_sae_relu.json"):
        a, b = (json.loads((tmp_path / run / name).read_text()) for run in ("fast", "plain"))
        assert untimed(a) == untimed(b), name
    for name in ("wide.json", "truth_repaired/sae_weights.safetensors",
                 "classical/sae_weights.safetensors", "sae_relu/sae_weights.safetensors"):
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()


def test_demo_runs_torch_and_blas_on_one_thread_and_restores_them():
    """The demo's phases run on one thread (default threads stalled on a busy 2-core box);
    the caller's settings come back afterwards, also when a phase raises."""
    import pytest
    import torch
    from threadpoolctl import threadpool_info

    from dictopt.demo import _one_thread

    caller = torch.get_num_threads()
    torch.set_num_threads(2)  # as on the 2-core box with default threads
    try:
        blas_before = [lib["num_threads"] for lib in threadpool_info()]
        with _one_thread():
            assert torch.get_num_threads() == 1
            assert all(lib["num_threads"] == 1 for lib in threadpool_info())
        assert torch.get_num_threads() == 2
        assert [lib["num_threads"] for lib in threadpool_info()] == blas_before
        with pytest.raises(RuntimeError), _one_thread():
            raise RuntimeError("a phase failed")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(caller)
