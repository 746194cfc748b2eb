"""Must show: a classical solution converged by the foundation's solver passes every condition.

THEORY §2: at a dictionary whose codes satisfy C1 exactly and whose atoms and bias satisfy C2
and C3, the KKT slack is a membership certificate of the joint hull C5′ (whose coordinate
projections are the C5 intervals), and no atom can be always on (C4). So a converged
:func:`fit_classical` solution must report zero violations of C1–C5 and the joint hull with
the default tolerances of :mod:`dictopt.check.tolerances`; the same dictionary slightly
perturbed, or stopped early, must be flagged (the test can fail).
"""

from __future__ import annotations

import pytest
import torch

from dictopt.check import check
from dictopt.check.certify import certify
from dictopt.check.tolerances import DEFAULT_TOLERANCES
from dictopt.data.controls import rotate_atom
from dictopt.data.worlds import make_world
from dictopt.problem import Dictionary
from dictopt.solvers.classical import fit_classical

LAM = 0.05
K = 16
GRAD_TOL = 1e-7  # the solver's C2/C3 stopping rule, relative to λ
ALL = ("C1", "C2", "C3", "C4", "C5", "hull")


@pytest.fixture(scope="module")
def fitted():
    w = make_world("independent", seed=0, d=12, k=K, n=1000)
    dic = fit_classical(w.x, K=K, lam=LAM, seed=0, max_iter=2000, grad_tol=GRAD_TOL,
                        progress=False)
    return w, dic


def test_converged_classical_solution_passes_every_condition(fitted):
    w, dic = fitted
    meta = dic.meta
    assert meta["converged"], meta
    assert meta["c1"] <= meta["code_tol"] and max(meta["c2"], meta["c3"]) <= GRAD_TOL

    rep = check(dic, w.x, codes="optimal")
    s = rep.summary
    assert s["hull"]["mode"] == "exact" and s["hull"]["atoms_checked"] == K
    assert all(s["counts"][c] == 0 for c in ALL), (s["counts"], rep.violations[:5])
    assert rep.violations == []

    # The checker's C2 tolerance is stat_rel·λ·ā_k per atom, the solver's is GRAD_TOL·λ: the
    # pass above is implied by convergence only when GRAD_TOL ≤ stat_rel·min_k ā_k. Say so,
    # so that a change of either tolerance cannot make this test pass vacuously.
    tol = DEFAULT_TOLERANCES
    abar = torch.tensor([row["mean_code"] for row in rep.atoms])
    assert GRAD_TOL <= tol.stat_rel * float(abar.min())
    assert s["max_kkt_violation"] <= tol.kkt_rel * LAM
    assert s["bias_residual"] <= tol.stat_rel * LAM
    tangential = max(row["stationarity_tangential"] for row in rep.atoms)
    assert tangential <= tol.stat_rel * LAM * float(abar.min())
    assert s["counts"] == {c: 0 for c in s["counts"]}


def test_slightly_rotated_atom_is_flagged(fitted):
    """Rotating one atom by 1e-3 rad breaks C2 for that atom: the checker must see it."""
    w, dic = fitted
    bent = Dictionary(atoms=rotate_atom(dic.atoms, 0, 1e-3), bias=dic.bias.clone(), lam=LAM)
    rep = check(bent, w.x, codes="optimal")
    flagged = [v for v in rep.violations if v.condition == "C2"]
    assert 0 in {v.i for v in flagged}, rep.summary["counts"]
    # and its certificate, applied on the data, lowers the loss
    certify(bent, w.x, rep, codes="optimal", top=len(rep.violations))
    atom0 = next(v for v in flagged if v.i == 0)
    assert atom0.measured_decrease is not None and atom0.measured_decrease > 0


def test_early_stopped_classical_solution_is_flagged(fitted):
    w, _ = fitted
    early = fit_classical(w.x, K=K, lam=LAM, seed=0, max_iter=2, progress=False)
    assert not early.meta["converged"]
    rep = check(early, w.x, codes="optimal")
    assert rep.summary["counts"]["C1"] == 0  # the codes are still exact lasso codes
    assert rep.summary["counts"]["C2"] > 0 and rep.summary["counts"]["C3"] == 1
