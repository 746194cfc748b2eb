"""The predicted structure (C5, stars, joint hull) on the probe method's absorbing latents.

``probe_hull`` must give the checker's own exact hull verdicts (run on a world small enough for
the check to solve every atom's LP), flag the parents of a planted hierarchy (THEORY §2: a
strict hierarchy is never a local minimum), and ``structure_counts`` must count what the report
says about each probe case.
"""

from __future__ import annotations

import numpy as np
import torch

from dictopt.check import check
from dictopt.data.worlds import make_world
from dictopt.evals.probe_absorption import ClassAbsorption, ProbeAbsorption
from dictopt.evals.structure import HullVerdict, probe_atoms, probe_hull, structure_counts

LAM = 0.1


class _Planted:
    """A dictionary whose codes are looked up by the row index in the last column."""

    def __init__(self, dic, codes_NK: np.ndarray) -> None:
        self.atoms, self.bias, self.has_bias = dic.atoms, dic.bias, dic.has_bias
        self.dtype = torch.float64
        self._codes = torch.tensor(codes_NK, dtype=torch.float64)

    def encode(self, xb: torch.Tensor) -> torch.Tensor:
        return self._codes[xb[:, -1].long()]


def test_probe_hull_equals_the_checks_exact_hull_and_flags_hierarchy_parents():
    w = make_world("hierarchy", seed=0, n=600, d=16, n_roots=3, branching=2, bias_norm=1.0)
    d = w.truth(LAM)
    codes = np.asarray(w.codes, dtype=np.float64)
    rep = check(d, w.x, codes=w.codes, hull=True)
    assert rep.summary["hull"]["mode"] == "exact"
    check_viol = {v.j for v in rep.by_condition("hull")}
    assert check_viol >= {p for _, p in w.edges}  # planted parents fail, as THEORY says
    data = np.hstack([np.asarray(w.x), np.arange(len(codes))[:, None].astype(float)])
    verdicts = probe_hull(_Planted(d, codes), data, list(range(codes.shape[1])), LAM)
    assert {k for k, v in verdicts.items() if v.violated} == check_viol
    for v in verdicts.values():
        assert (v.gap > 0) == v.violated and v.model_decrease >= 0
    # a subset is tested the same way, atom by atom
    some = sorted(check_viol)[:2] + [k for k in range(codes.shape[1]) if k not in check_viol][:2]
    sub = probe_hull(_Planted(d, codes), data, some, LAM)
    assert {k: v.violated for k, v in sub.items()} == {k: verdicts[k].violated for k in some}
    none = probe_hull(_Planted(d, codes), data, some, LAM, budget_s=-1.0)  # budget spent
    assert not any(v.measured or v.violated for v in none.values())


def _probe(classes: list[ClassAbsorption]) -> ProbeAbsorption:
    return ProbeAbsorption(classes, 0.0, 0.0, 0.0)


def _cls(c: int, main: list[int], absorbers: dict[int, int], keep: bool = True):
    return ClassAbsorption(c, main, [], 0, 0, 0, 0.0, 0.0, absorbers=absorbers, in_means=keep)


def test_structure_counts_read_the_report_per_case():
    pa = _probe([_cls(0, [1, 2], {10: 3, 11: 1}), _cls(1, [3], {12: 2}),
                 _cls(2, [4], {13: 1}, keep=False)])
    assert probe_atoms(pa) == [10, 11, 12, 1, 2, 3]  # absorbers first
    report = {
        "violations": [{"condition": "C5", "i": 2, "j": 10}, {"condition": "C5", "i": 11, "j": 7},
                       {"condition": "C4", "i": 12, "j": 3}],
        "labels": [{"label": "absorption", "i": 3, "j": 12}, {"label": "absorption", "i": 9,
                                                              "j": 10},
                   {"label": "duplicate", "i": 1, "j": 11}],
    }
    hull = {k: HullVerdict(k, True, k == 3, 1.0 if k == 3 else 0.0, 0.0)
            for k in probe_atoms(pa)}
    out = structure_counts(pa, report, hull)
    rows = {r["absorber"]: r for r in out["cases"]}
    assert set(rows) == {10, 11, 12}  # the left-out letter is not counted
    assert (rows[10]["c5_pair"], rows[10]["c5_any"], rows[10]["star_pair"],
            rows[10]["star_any"]) == (True, True, False, True)
    assert (rows[11]["c5_pair"], rows[11]["c5_any"], rows[11]["star_any"]) == (False, True, False)
    assert (rows[12]["c5_pair"], rows[12]["star_pair"], rows[12]["hull"],
            rows[12]["hull_absorber"]) == (False, True, True, False)
    assert out["counts"] == {"c5_pair": 1, "c5_any": 2, "star_pair": 1, "star_any": 2,
                             "hull": 1, "hull_absorber": 0, "hull_unmeasured": 0,
                             "any_pair": 2, "cases": 3}
    hull[2] = HullVerdict(2, False, False, 0.0, 0.0, measured=False)  # the budget ran out
    assert structure_counts(pa, report, hull)["counts"]["hull_unmeasured"] == 2
    assert "hull" not in structure_counts(pa, report)["counts"]
