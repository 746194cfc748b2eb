"""The joint hull C5′ by column generation (dictopt.check.hull) against the LP on every
point: the same distance, a dual direction that separates every inactive point, convex
weights that certify membership, and the same violations as the LP on all points."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances
from dictopt.check.hull import hull_distance, hull_distance_cg, joint_hull
from dictopt.data.worlds import make_world

F64 = torch.float64


def sparse_codes(rng: np.random.Generator, N: int, K: int, density: float) -> np.ndarray:
    return rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < density)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    N=st.integers(3, 80),
    K=st.integers(2, 7),
    density=st.floats(0.1, 0.9),
    n_start=st.integers(1, 6),
    use_threshold=st.booleans(),
)
def test_column_generation_equals_the_lp_on_every_point(seed, N, K, density, n_start,
                                                         use_threshold):
    rng = np.random.default_rng(seed)
    A = sparse_codes(rng, N, K, density)
    allowed = rng.random(N) < 0.7
    allowed[0] = True
    J = torch.arange(1, K)
    v = rng.uniform(0, 1.2, K - 1)
    rows = np.flatnonzero(allowed)
    exact, _, _ = hull_distance(v, A[rows][:, 1:])
    threshold = float(rng.uniform(0, 0.5)) if use_threshold else 0.0
    start = torch.as_tensor(rng.choice(rows, min(n_start, rows.size), replace=False))
    res = hull_distance_cg(v, torch.as_tensor(A), J, torch.as_tensor(allowed), start, threshold,
                           max_rounds=30)
    # membership certificate: convex weights on allowed points within `distance` of v
    w, used = res.weights, res.rows.numpy()
    assert np.all(w >= -1e-12) and w.sum() == pytest.approx(1.0, abs=1e-9)
    assert allowed[used].all()
    assert np.abs(A[used][:, 1:].T @ w - v).sum() == pytest.approx(res.distance, abs=1e-7)
    if res.passed:  # the working set's distance bounds the exact one
        assert res.distance <= threshold and exact <= res.distance + 1e-9
    else:  # exact, and the dual separates every allowed point (weak duality)
        assert res.distance == pytest.approx(exact, abs=1e-7)
        assert np.max(np.abs(res.q)) <= 1 + 1e-9
        kappa_all = float(np.max(A[rows][:, 1:] @ res.q))
        assert kappa_all <= res.kappa + 1e-7
        assert res.q @ v - kappa_all == pytest.approx(exact, abs=1e-7)


def lp_on_every_point(A: torch.Tensor, D: torch.Tensor, abar: torch.Tensor, tau: float):
    """Today's exact test: per atom, the LP on all its inactive points (distinct rows)."""
    K = A.shape[1]
    gram = D @ D.T
    out = {}
    for k in range(K):
        off = A[:, k] <= tau
        if not bool(off.any()):
            continue
        J = [j for j in range(K) if j != k]
        v = ((1 - gram[J, k]) * abar[J]).numpy()
        out[k] = (v, *hull_distance(v, np.unique(A[off][:, J].numpy(), axis=0)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_joint_hull_matches_the_lp_on_every_point(seed):
    w = make_world("hierarchy", seed=seed, n=600)
    d = w.truth(0.05)
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    tol = Tolerances(tau=0.0)
    res = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol)
    assert res.tested == list(range(A.shape[1])) and res.untested == 0
    ref = lp_on_every_point(A, d.atoms.to(F64), abar, 0.0)
    floor = tol.floor_rel * float(abar.max())
    expected = set()
    for k, (v, dist, q, _) in ref.items():
        if dist <= tol.hull_rel * (1 + np.abs(v).sum()):
            continue
        off = A[:, k] <= 0
        J = [j for j in range(A.shape[1]) if j != k]
        gap = float(q @ v) - float((A[off][:, J].numpy() @ q).max())
        if gap > tol.pair_rel * float(abar.max()) + floor:
            expected.add(k)
    got = {v.j: v for v in res.violations}
    assert set(got) == expected and expected  # the planted parents fail
    for k in expected:
        assert got[k].detail["distance"] == pytest.approx(ref[k][1], rel=1e-6, abs=1e-9)
        assert got[k].detail["gap"] == pytest.approx(ref[k][1], rel=1e-6, abs=1e-9)


def test_working_set_duals_find_the_same_violations_with_the_same_gaps():
    w = make_world("hierarchy", seed=0, n=600)
    d = w.truth(0.05)
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    tol = Tolerances(tau=0.0)
    ref = {v.j: v for v in joint_hull(A, d.atoms, abar, 0.05, 0.0, tol).violations}
    own = {v.j: v for v in joint_hull(A, d.atoms, abar, 0.05, 0.0, tol,
                                      duals="working_set").violations}
    assert set(own) == set(ref) and ref
    for k, v in own.items():
        assert v.detail["gap"] == pytest.approx(ref[k].detail["gap"], rel=1e-6, abs=1e-9)
        assert v.move.kappa == pytest.approx(float((A[A[:, k] <= 0][:, v.move.J]
                                                    @ v.move.q).max()), abs=1e-12)


def test_first_order_decrease_of_the_dual_direction():
    """THEORY C5′: the move along q lowers ``λ Σ ā_j ‖·‖`` at rate ``λ (q·v − κ)``."""
    w = make_world("hierarchy", seed=0, n=600)
    d = w.truth(0.05)
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    res = joint_hull(A, d.atoms, abar, 0.05, 0.0, Tolerances(tau=0.0))
    assert res.violations
    for v in res.violations:
        move = v.move
        h = 1e-7
        step = type(move)(h, k=move.k, J=move.J, q=move.q, kappa=move.kappa)
        rate = step.model_delta(d.atoms.to(F64), abar, 0.05) / h
        assert rate == pytest.approx(-0.05 * v.detail["gap"], rel=1e-4)


@pytest.mark.parametrize("hull_rel", [1e-7, 1.0])
def test_above_full_k_the_bound_chooses_and_passes_exactly(hull_rel):
    w = make_world("hierarchy", seed=0, n=400)
    d = w.truth(0.05)
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    tol = Tolerances(tau=0.0, hull_rel=hull_rel)
    K = A.shape[1]
    D = d.atoms.to(F64)
    full = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol)
    # lower bounds from the pairs: max_i |θ_ik − H_ik| over violated pairs (i, k)
    lower = {}
    for k in range(K):
        off = A[:, k] <= 0
        for i in range(K):
            if i != k and bool(off.any()):
                gap = (1 - float(D[i] @ D[k])) * float(abar[i]) - float(A[off, i].max())
                if gap > 1e-6:
                    lower[k] = max(lower.get(k, 0.0), gap)
    part = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol, full_k=4, max_atoms=6, lower=lower)
    ref = lp_on_every_point(A, D, abar, 0.0)
    # the bound, recomputed here: ‖v_k − p‖₁ for the sparsest inactive point p of k
    n_active = (A > 0).sum(1)
    ub = {}
    for k, (v, *_rest) in ref.items():
        off = (A[:, k] <= 0).nonzero().flatten()
        key = n_active[off].to(F64) * 1e6 + A[off].sum(1)
        p = A[off[key.argmin()]]
        ub[k] = float((torch.as_tensor(v) - p[[j for j in range(K) if j != k]]).abs().sum())
    thr = {k: max(hull_rel * (1 + np.abs(ref[k][0]).sum()), 1e-6 * float(abar.max())
                  + 1e-9 * float(abar.max())) for k in ref}
    assert sorted(part.passed_by_bound) == sorted(k for k in ref if ub[k] <= thr[k])
    for k in part.passed_by_bound:  # passing by the bound is exact: the LP agrees
        assert ref[k][1] <= thr[k] + 1e-12
    rest = sorted((k for k in ref if ub[k] > thr[k]),
                  key=lambda k: (-lower.get(k, 0.0), -ub[k], k))
    assert part.tested == sorted(rest[:6]) and part.untested == len(rest) - len(rest[:6])
    # the atoms tested are decided exactly: the same verdicts as testing every atom
    assert {v.j for v in part.violations} == {v.j for v in full.violations} & set(part.tested)
    if hull_rel < 1e-3:  # the atoms with a pair lower bound come first and all fail
        assert lower and set(sorted(lower, key=lambda k: -lower[k])[:6]) <= set(part.tested)
        assert {v.j for v in part.violations} >= set(lower) & set(part.tested)
    else:  # a loose tolerance lets the bound pass some atoms without an LP
        assert part.passed_by_bound


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(2, 8), n_J=st.integers(1, 7))
def test_best_toward_step_is_the_model_delta_minimiser_to_the_last_bit(seed, K, n_J):
    """The step search evaluates ΔL on slices taken once; it must pick the very step that
    minimising :meth:`Toward.model_delta` itself picks (reports stay identical)."""
    from scipy.optimize import minimize_scalar

    from dictopt.check.moves import Toward, best_toward_step

    rng = np.random.default_rng(seed)
    D = torch.as_tensor(rng.standard_normal((K, 5)))
    D = D / D.norm(dim=1, keepdim=True)
    abar = torch.as_tensor(rng.uniform(0, 1, K))
    k = int(rng.integers(K))
    J = torch.as_tensor([j for j in range(K) if j != k][:n_J])
    q = torch.as_tensor(rng.uniform(-1, 1, J.numel()))
    kappa, hi = float(rng.uniform(-0.5, 0.5)), float(rng.uniform(0.01, 3))
    move = Toward(0.0, k=k, J=J, q=q, kappa=kappa)
    t = best_toward_step(move, D, abar, 0.1, hi)

    ref = Toward(0.0, k=k, J=J, q=q, kappa=kappa)

    def f(s: float) -> float:
        ref.step = s
        return ref.model_delta(D, abar, 0.1)

    res = minimize_scalar(f, bounds=(0.0, hi), method="bounded", options={"xatol": hi * 1e-9})
    expected = float(res.x) if f(float(res.x)) <= f(hi) else hi
    assert t == expected and move.step == t


def test_the_lp_prints_nothing():
    """HiGHS must not write to stdout (``dictopt check --json -`` writes the report there)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import numpy as np\nfrom dictopt.check.hull import _hull_lp\n"
            "_hull_lp(np.ones(3) / 3, np.eye(3))\n_hull_lp(np.ones(3), np.eye(3))\n")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
                         check=True)
    assert out.stdout == ""


def test_above_64_atoms_the_report_lists_the_atoms_tested(tmp_path):
    from dictopt.check import check

    w = make_world("hierarchy", seed=0, n=300, d=24, n_roots=20, branching=3)
    d = w.truth(0.05)
    K = d.K
    assert K > 64
    rep = check(d, w.x, codes=w.codes, hull=True)
    sel = rep.summary["hull_selection"]
    assert 0 < len(sel["tested"]) <= 64 and sel["tested"] == sorted(set(sel["tested"]))
    assert len(sel["tested"]) + sel["passed_by_bound"] + sel["untested"] <= K
    assert rep.summary["hull"]["atoms_checked"] == K - sel["untested"]
    # the planted parents with a C5 violation are ranked first, so their hulls are tested
    parents = {v.j for v in rep.by_condition("C5")}
    assert parents and parents <= set(sel["tested"])
    assert {v.j for v in rep.by_condition("hull")} <= set(sel["tested"])
    # why: each tested atom's bounds, ranked as the rule says (C5 lower bound first, then
    # the upper bound ‖v_k − p‖₁ with p the sparsest inactive point, recomputed here)
    assert "C5" in sel["ranked_by"] and "upper bound" in sel["ranked_by"]
    lows, ups = sel["lower_bound"], sel["upper_bound"]
    assert len(lows) == len(ups) == len(sel["tested"])
    assert {k for k, lo in zip(sel["tested"], lows, strict=True) if lo is not None} == parents
    A = torch.as_tensor(w.codes, dtype=F64)
    D = d.atoms.to(F64)
    abar = A.mean(0)
    active = A > 0
    for k, lo, ub in zip(sel["tested"], lows, ups, strict=True):
        J = [j for j in range(K) if j != k]
        off = (~active[:, k]).nonzero().flatten()
        load = active[off].sum(1).to(F64) * (1 + A.sum(1).max()) + A[off].sum(1)
        p = A[off[load.argmin()], J]
        v = (1 - D[J] @ D[k]) * abar[J]
        assert ub == pytest.approx(float((v - p).abs().sum()), rel=1e-9)
        if lo is not None:
            assert lo == pytest.approx(max(abs(c.slope) / 0.05 for c in rep.by_condition("C5")
                                           if c.j == k), rel=1e-12)
    saved = json.loads(rep.save_json(tmp_path / "r.json").read_text())
    assert saved["summary"]["hull_selection"] == sel


def test_without_the_gram_matrix_the_hull_finds_the_same_violations(monkeypatch):
    """Above the element budget the hull forms each tested atom's cosines on demand instead
    of the K × K Gram matrix (issue #17); the verdicts and gaps are the Gram path's."""
    import dictopt.check.hull as hull

    w = make_world("hierarchy", seed=0, n=600)
    d = w.truth(0.05)
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    tol = Tolerances(tau=0.0)
    ref = {v.j: v for v in joint_hull(A, d.atoms, abar, 0.05, 0.0, tol).violations}
    formed = []
    real = torch.Tensor.t

    def spy(x):
        formed.append(tuple(x.shape))
        return real(x)

    monkeypatch.setattr(hull, "DENSE_ELEMENTS", 0)
    monkeypatch.setattr(torch.Tensor, "t", spy)
    own = {v.j: v for v in joint_hull(A, d.atoms, abar, 0.05, 0.0, tol).violations}
    monkeypatch.undo()
    assert not formed  # no D @ Dᵀ
    assert set(own) == set(ref) and ref
    for k, v in own.items():
        assert v.detail["gap"] == pytest.approx(ref[k].detail["gap"], rel=1e-9, abs=1e-12)
        assert v.detail["distance"] == pytest.approx(ref[k].detail["distance"], rel=1e-9,
                                                     abs=1e-12)
