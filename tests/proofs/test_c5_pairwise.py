"""proofs/c5_pairwise.md: the pair interval L_ij ≤ (1 − c_ij) ā_i ≤ H_ij, its hull form, and
the exact reconstruction-preserving certificate with ΔL = λ[ā_i(‖d_i ± t d_j‖ − 1 ∓ t) ± tκ]."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.check.moves import Toward
from dictopt.problem import Dictionary
from tests.proofs._common import converged_optimum, instance, loss, pair_extremes, rel_err

TOL0 = Tolerances(tau=0.0)


def pair_move(A, D, b, i, j, side, val, t):
    """The certificate of THEORY C5, built here: side +1 uses (t, H), side −1 (−t, L)."""
    s, kappa = side * t, side * val
    v = D[i] + s * D[j]
    nrm = float(np.linalg.norm(v))
    A2, D2 = A.copy(), D.copy()
    A2[:, i] = A[:, i] * nrm
    A2[:, j] = A[:, j] - s * A[:, i] + t * kappa
    if nrm > 0:
        D2[i] = v / nrm
    return A2, D2, b - t * kappa * D[j], nrm


def exact_delta(abar_i, nrm, side, val, t, lam):
    """ΔL = λ [ā_i (‖d_i + s d_j‖ − 1 − s) + t κ], s = ±t, κ = ±val."""
    return lam * (abar_i * (nrm - 1 - side * t) + t * side * val)


def t_max(A, i, j, side, val, tau=0.0):
    """Largest step keeping a_j' ≥ 0 (only points where j is active can bind)."""
    on = A[:, j] > tau
    excess = side * (A[:, i] - val)  # a_i − H (upper) or L − a_i (lower)
    bind = on & (excess > 0)
    return float((A[bind, j] / excess[bind]).min()) if bind.any() else math.inf


def pairs(A):
    K = A.shape[1]
    return [(i, j) for i in range(K) for j in range(K) if i != j and (A[:, j] <= 0).any()]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), frac=st.floats(0.05, 1.0))
def test_pair_certificate_is_exact_and_feasible_up_to_t_max(seed, frac):
    """For every ordered pair and both sides: reconstructions unchanged, codes ≥ 0 up to
    t_max (and not beyond), measured ΔL equals the closed form, and ΔL/t → the first-order
    slope −λ side [(1 − c) ā_i − val] as t → 0."""
    x, A, D, b, lam = instance(seed)
    abar = A.mean(0)
    base = loss(x, A, D, b, lam)
    for i, j in pairs(A):
        H, L = pair_extremes(A, i, j)
        theta = (1 - D[i] @ D[j]) * abar[i]
        for side, val in ((1, H), (-1, L)):
            tm = t_max(A, i, j, side, val)
            t = frac * min(tm, 2.0)
            A2, D2, b2, nrm = pair_move(A, D, b, i, j, side, val, t)
            np.testing.assert_allclose(A2 @ D2 + b2, A @ D + b, atol=1e-10)
            assert A2.min() >= -1e-12
            assert rel_err(loss(x, A2, D2, b2, lam) - base,
                           exact_delta(abar[i], nrm, side, val, t, lam)) < 1e-8
            if tm < math.inf and tm > 0:  # t_max is tight
                A3 = pair_move(A, D, b, i, j, side, val, 1.01 * tm)[0]
                assert A3[:, j].min() < 0
            slope = -lam * side * (theta - val)
            for h in (1e-4, 1e-6):
                nh = np.linalg.norm(D[i] + side * h * D[j])
                d_h = exact_delta(abar[i], nh, side, val, h, lam) / h
                assert abs(d_h - slope) <= 2 * h * lam * abar[i] + 1e-9 * lam * (1 + abar[i])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_checker_flags_exactly_the_violated_intervals_and_its_certificates_measure_exactly(seed):
    """Library vs numpy: the checker's C5 violations are the pairs whose interval fails by
    more than its tolerance; H/L, θ and t_max agree; certify measures the closed form."""
    x, A, D, b, lam = instance(seed)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=TOL0)
    abar = A.mean(0)
    floor = TOL0.floor_rel * abar.max()
    want = set()
    for i, j in pairs(A):
        H, L = pair_extremes(A, i, j)
        theta = (1 - D[i] @ D[j]) * abar[i]
        tol = TOL0.pair_rel * abar[i] + floor
        if theta - H > tol:
            want.add((i, j, 1))
        if L - theta > tol:
            want.add((i, j, -1))
    c5 = rep.by_condition("C5")
    got = {(v.i, v.j, 1 if v.detail["side"] == "upper" else -1) for v in c5}
    assert got == want
    for v in c5:
        side = 1 if v.detail["side"] == "upper" else -1
        H, L = pair_extremes(A, v.i, v.j)
        val = H if side > 0 else L
        assert v.detail["H" if side > 0 else "L"] == val
        assert v.detail["theta"] == pytest.approx((1 - D[v.i] @ D[v.j]) * abar[v.i], rel=1e-12)
        assert v.slope == pytest.approx(lam * side * (v.detail["theta"] - val), rel=1e-9)
        tm = t_max(A, v.i, v.j, side, val)
        assert v.detail["t_max"] == pytest.approx(tm, rel=1e-12) or tm == math.inf
        assert 0 < v.step <= min(tm, 1e3) * (1 + 1e-12)
    for m in certify(dic, x, c5, codes=A, top=None):
        v = m.violation
        side = 1 if v.detail["side"] == "upper" else -1
        val = v.detail["H" if side > 0 else "L"]
        A2, D2, b2, nrm = pair_move(A, D, b, v.i, v.j, side, val, m.step)
        exact = exact_delta(abar[v.i], nrm, side, val, m.step, lam)
        assert rel_err(loss(x, A2, D2, b2, lam) - loss(x, A, D, b, lam), exact) < 1e-8
        assert m.measured_decrease == pytest.approx(-exact, rel=1e-8)
        assert m.min_new_code >= -1e-12 and -exact > 0
    for v in c5:
        # First order: the step must be small in absolute terms, not only relative to t_max
        # (t_max can be in the hundreds; the second-order term grows with the step itself).
        (m,) = certify(dic, x, [v], codes=A, top=None, step_scale=1e-5 / max(1.0, v.step))
        assert m.measured_decrease == pytest.approx(m.predicted_decrease, rel=1e-3)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_hull_form_is_the_interval(seed):
    """With min_n a_in = 0: −c_ij ∈ conv{ã_in : a_jn = 0} ⟺ L_ij ≤ (1 − c_ij) ā_i ≤ H_ij,
    ã_in = (a_in − ā_i)/(ā_i − min_n a_in)."""
    x, A, D, b, lam = instance(seed)
    abar = A.mean(0)
    for i, j in pairs(A):
        if A[:, i].min() > 0 or abar[i] == 0:
            continue
        H, L = pair_extremes(A, i, j)
        theta = (1 - D[i] @ D[j]) * abar[i]
        if min(abs(theta - H), abs(theta - L)) < 1e-9 * abar[i]:
            continue  # on the boundary: both sides hold up to rounding
        at = (A[A[:, j] <= 0, i] - abar[i]) / abar[i]
        in_hull = at.min() <= -(D[i] @ D[j]) <= at.max()
        assert in_hull == (L <= theta <= H)


def _world(D, A, b, noise_seed=0):
    rng = np.random.default_rng(noise_seed)
    x = A @ D + b + 0.05 * rng.standard_normal((A.shape[0], D.shape[1]))
    return x


def test_duplicates_c_plus_one():
    """c = 1: θ = 0, so the upper side always holds; the lower side fails iff L > 0, and the
    certificate (−t, L) is then linear: ΔL = −λ t L (the pair's codes sum to ≥ L: C4-like)."""
    D = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    A = np.zeros((12, 3))
    A[:6, 0], A[6:, 1] = 1.0 + np.arange(6) / 6, 0.5
    A[6:, 0] = 0.3  # wherever atom 1 is inactive (first 6), a_0 ≥ 1 > 0 = θ
    A[::2, 2] = 1.0
    b = np.array([0.0, 0.0, 1.0])
    x, lam = _world(D, A, b), 0.1
    rep = check(Dictionary(atoms=D, bias=b, lam=lam), x, codes=A, hull=False, tol=TOL0)
    v01 = [v for v in rep.by_condition("C5") if (v.i, v.j) == (0, 1)]
    assert [v.detail["side"] for v in v01] == ["lower"]
    H, L = pair_extremes(A, 0, 1)
    assert L == 1.0
    assert t_max(A, 0, 1, -1, L) == pytest.approx(0.5 / 0.7)
    for t in (0.1, 0.5, 0.5 / 0.7):
        A2, D2, b2, nrm = pair_move(A, D, b, 0, 1, -1, L, t)
        assert nrm == pytest.approx(1 - t)
        dl = loss(x, A2, D2, b2, lam) - loss(x, A, D, b, lam)
        assert dl == pytest.approx(-lam * t * L, rel=1e-10)
        assert np.isfinite(D2).all() and A2.min() >= 0
    (m,) = certify(Dictionary(atoms=D, bias=b, lam=lam), x, v01, codes=A)
    assert math.isfinite(m.measured_decrease) and m.measured_decrease > 0
    assert m.measured_decrease == pytest.approx(m.violation.model_decrease, rel=1e-9)


def test_antipodes_c_minus_one_at_the_degenerate_step():
    """c = −1: ‖d_i + t d_j‖ = |1 − t|, ΔL = λ t (H − 2ā_i) for t ≤ 1 (linear, exact). At
    t = 1 atom i's codes all vanish; the library keeps its direction (was NaN before)."""
    D = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0]])
    A = np.zeros((20, 3))
    A[:10, 0] = A[:10, 1] = 1.0  # i = 0 only fires with j = 1: H_01 = 0, t_max = 1
    A[10:, 2] = 1.0
    b = np.zeros(3)
    x, lam = _world(D, A, b), 0.1
    abar = A.mean(0)
    for t in (0.25, 0.5, 1.0):
        A2, D2, b2, nrm = pair_move(A, D, b, 0, 1, 1, 0.0, t)
        dl = loss(x, A2, D2, b2, lam) - loss(x, A, D, b, lam)
        assert dl == pytest.approx(lam * t * (0 - 2 * abar[0]), rel=1e-10)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=TOL0)
    (v,) = [v for v in rep.by_condition("C5") if (v.i, v.j) == (0, 1)]
    assert v.label == "hierarchy" and v.step == 1.0 and v.detail["cos"] == -1.0
    (m,) = certify(dic, x, [v], codes=A)
    assert m.measured_decrease == pytest.approx(2 * lam * abar[0], rel=1e-10)
    atoms, _ = v.move.apply_dictionary(torch.as_tensor(D), torch.as_tensor(b))
    assert torch.isfinite(atoms).all()
    assert torch.allclose(atoms.norm(dim=1), torch.ones(3, dtype=torch.float64))


def test_ties_at_zero_hierarchy_and_tied_maxima():
    """H_ij = 0 exactly (strict hierarchy, τ = 0) and H attained at several points: the
    certificate leaves the tied points at a_j' = 0 and is flagged as a hierarchy."""
    D = np.eye(3)
    A = np.zeros((9, 3))
    A[:6, 1] = 1.0
    A[:4, 0] = 0.5  # i = 0 active only where j = 1 is (S_0 ⊆ S_1)
    A[6:, 2] = 2.0  # points where j = 1 is inactive: a_0 = 0 there (three tied zeros)
    b = np.ones(3) * 0.2
    x, lam = _world(D, A, b), 0.1
    H, _ = pair_extremes(A, 0, 1)
    assert H == 0.0
    t = t_max(A, 0, 1, 1, H)
    assert t == pytest.approx(2.0)  # a_1/(a_0 − 0) = 1/0.5
    A2, D2, b2, _ = pair_move(A, D, b, 0, 1, 1, H, t)
    assert A2.min() >= 0 and np.all(A2[:4, 1] == 0)
    rep = check(Dictionary(atoms=D, bias=b, lam=lam), x, codes=A, hull=False, tol=TOL0)
    labels = {(v.i, v.j): v.label for v in rep.by_condition("C5")}
    assert labels[(0, 1)] == "hierarchy"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), w=st.lists(st.floats(-1, 1), min_size=6, max_size=6))
def test_rotation_toward_several_atoms_separates_into_pairs_at_first_order(seed, w):
    """d_i → (d_i + t Σ_j w_j d_j)/‖·‖, a_j → a_j − t w_j a_i + t w_j κ_j (κ_j = H_ij for
    w_j > 0, L_ij for w_j < 0), b → b − t Σ_j w_j κ_j d_j: reconstructions unchanged, codes
    ≥ 0 for small t, and dΔL/dt(0) = Σ_j |w_j| × (pair slope of (i, j) on side sign w_j)."""
    x, A, D, b, lam = instance(seed)
    K = D.shape[0]
    i = 0
    js = [j for j in range(K) if j != i and (A[:, j] <= 0).any()]
    if not js:
        return
    ww = np.array(w[: len(js)])
    kap = np.array([pair_extremes(A, i, j)[0 if wj >= 0 else 1]
                    for j, wj in zip(js, ww, strict=True)])
    abar = A.mean(0)

    def moved(t):
        v = D[i] + t * (ww @ D[js])
        nrm = np.linalg.norm(v)
        A2, D2 = A.copy(), D.copy()
        D2[i] = v / nrm
        A2[:, i] = A[:, i] * nrm
        for j, wj, kj in zip(js, ww, kap, strict=True):
            A2[:, j] = A[:, j] - t * wj * A[:, i] + t * wj * kj
        return A2, D2, b - t * (ww * kap) @ D[js]

    h = 1e-6
    A2, D2, b2 = moved(h)
    np.testing.assert_allclose(A2 @ D2 + b2, A @ D + b, atol=1e-10)
    assert A2.min() >= -1e-12  # feasible for small t
    fd = (loss(x, *moved(h), lam) - loss(x, A, D, b, lam)) / h
    pair_sum = sum(-lam * wj * ((1 - D[i] @ D[j]) * abar[i] - kj)
                   for j, wj, kj in zip(js, ww, kap, strict=True))
    assert fd == pytest.approx(pair_sum, abs=1e-5 * lam * (1 + abar.sum()))


def test_positive_control_converged_optimum_satisfies_every_interval():
    x, A, D, b, lam = converged_optimum()
    abar = A.mean(0)
    for i, j in pairs(A):
        H, L = pair_extremes(A, i, j)
        theta = (1 - D[i] @ D[j]) * abar[i]
        assert L - 1e-5 * abar[i] <= theta <= H + 1e-5 * abar[i]
    rep = check(Dictionary(atoms=D, bias=b, lam=lam), x, codes=A, hull=False)
    assert rep.by_condition("C5") == []


def test_toward_model_delta_is_the_closed_form():
    """The library's Toward.model_delta against the closed form, both sides, random pairs."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        D = rng.standard_normal((3, 4))
        D /= np.linalg.norm(D, axis=1, keepdims=True)
        abar, lam, t, val = rng.uniform(0.1, 1, 3), 0.3, rng.uniform(0, 2), rng.uniform(0, 1)
        for side in (1, -1):
            mv = Toward(t, k=1, J=torch.tensor([0]), q=torch.tensor([float(side)]),
                        kappa=side * val)
            nrm = np.linalg.norm(D[0] + side * t * D[1])
            want = exact_delta(abar[0], nrm, side, val, t, lam)
            got = mv.model_delta(torch.as_tensor(D), torch.as_tensor(abar), lam)
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
