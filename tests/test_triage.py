"""The triage (issue 19): findings grouped, ranked by decrease, worded; `dictopt check` ends
with it."""

from __future__ import annotations

import numpy as np

from dictopt.check.certify import certify
from dictopt.check.triage import triage
from dictopt.cli import main
from dictopt.io import save_dictionary
from tests._plots_world import planted


def test_triage_words_the_planted_hierarchy():
    D, x, codes, report = planted()
    certify(D, x, report, codes=codes, top=50)
    t = triage(report, top=10, per_condition=10)
    assert t.verdict.startswith("NOT a local minimum")
    decs = [f.decrease for f in t.findings]
    assert decs == sorted(decs, reverse=True)
    # the two orders of one pair are one finding
    pairs = [tuple(sorted(f.atoms)) for f in t.findings if f.condition == "C5"]
    assert len(pairs) == len(set(pairs))
    (hier,) = [f for f in t.findings if f.condition == "C5" and set(f.atoms) == {0, 1}]
    assert "Atom 1 fires only when atom 0 fires" in hier.meaning
    assert "dictopt repair" in hier.action
    v = max((v for v in report.violations if v.condition == "C5" and {v.i, v.j} == {0, 1}),
            key=lambda v: v.measured_decrease or 0)
    assert hier.measured and hier.decrease == v.measured_decrease
    assert hier.fraction == v.measured_decrease / report.summary["loss"]
    # at most per_condition findings of one kind
    assert all(sum(f.condition == c for f in triage(report).findings) <= 2
               for c in ("C1", "C2", "C5"))


def test_check_cli_ends_with_the_triage(tmp_path, capsys):
    D, x, codes, _ = planted()
    save_dictionary(D, tmp_path / "dic")
    np.save(tmp_path / "x.npy", x)
    assert main(["check", str(tmp_path / "dic"), "--activations", str(tmp_path / "x.npy"),
                 "--codes", "optimal", "--quiet"]) == 0
    out = capsys.readouterr().out.rstrip().splitlines()
    start = max(i for i, line in enumerate(out) if line.startswith("triage: "))
    assert len(out) - start <= 6  # a few lines, at the end
    assert out[start].startswith("triage: ")
    assert all(line.startswith("  ") for line in out[start + 1:])
