"""proofs/joint_hull.md: C5′, its LP, the separating direction as a certificate, and an
explicit example where every pair passes but the joint condition fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.check.hull import hull_distance, joint_hull
from dictopt.check.reference import brute_force
from dictopt.problem import Dictionary
from tests.proofs._common import converged_optimum, instance, loss, rel_err

TOL0 = Tolerances(tau=0.0)


def joint_move(A, D, b, k, J, q, kappa, t):
    """d_j → (d_j + t q_j d_k)/‖·‖ (j ∈ J), a_j scaled by the norm, a_k → a_k − t q·a_J + tκ,
    b → b − tκ d_k."""
    A2, D2 = A.copy(), D.copy()
    nrm = np.empty(len(J))
    for p, j in enumerate(J):
        v = D[j] + t * q[p] * D[k]
        nrm[p] = np.linalg.norm(v)
        D2[j], A2[:, j] = v / nrm[p], A[:, j] * nrm[p]
    A2[:, k] = A[:, k] - t * A[:, J] @ q + t * kappa
    return A2, D2, b - t * kappa * D[k], nrm


def example():
    """Three orthogonal atoms; k = 2 is inactive at (1, 0) and (0, 1) only; 8 points have
    only k active. v_k = (ā_0, ā_1) = (0.1, 0.1) is off the segment x + y = 1, yet every
    ordered pair's interval holds."""
    D = np.eye(3)
    A = np.zeros((10, 3))
    A[0, 0], A[1, 1], A[2:, 2] = 1.0, 1.0, 1.0
    b = np.array([0.3, -0.2, 0.1])
    x = A @ D + b + 0.05 * np.random.default_rng(0).standard_normal((10, 3))
    return x, A, D, b, 0.1


def test_every_pair_passes_but_the_joint_hull_fails():
    x, A, D, b, lam = example()
    ref = brute_force(x, A, D, b, lam, 0.0)
    assert ref.c5_upper == set() and ref.c5_lower == set()
    abar = A.mean(0)
    v = (1 - D[[0, 1], 2]) * abar[[0, 1]]
    assert np.allclose(v, [0.1, 0.1])
    dist, q, kappa = hull_distance(v, np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert dist == pytest.approx(0.8, abs=1e-9)  # ℓ1 distance to the segment x + y = 1
    # the explicit separating direction q = (−1, −1), κ = −1: q·a_n = −1 ≤ κ, q·v − κ = 0.8
    q, kappa, k, J = np.array([-1.0, -1.0]), -1.0, 2, [0, 1]
    for t in (1e-6, 0.3, 1.0):
        A2, D2, b2, nrm = joint_move(A, D, b, k, J, q, kappa, t)
        np.testing.assert_allclose(A2 @ D2 + b2, A @ D + b, atol=1e-12)
        assert A2.min() >= -1e-15
        exact = lam * ((abar[J] * (nrm - 1 - t * q)).sum() + t * kappa)
        assert rel_err(loss(x, A2, D2, b2, lam) - loss(x, A, D, b, lam), exact) < 1e-9
        assert exact < 0
    first = -lam * 1e-6 * (q @ v - kappa)
    assert exact_small(A, D, b, x, lam, q, kappa) == pytest.approx(first, rel=1e-5)
    # the library finds it, and its certificate measures what it predicts
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, tol=TOL0, hull=True)
    assert rep.by_condition("C5") == []
    hull = {h.j: h for h in rep.by_condition("hull")}
    assert 2 in hull and hull[2].detail["gap"] == pytest.approx(0.8, abs=1e-8)
    for m in certify(dic, x, list(hull.values()), codes=A):
        assert m.min_new_code >= -1e-12
        assert m.measured_decrease == pytest.approx(m.violation.model_decrease, rel=1e-9)
        assert m.measured_decrease > 0


def exact_small(A, D, b, x, lam, q, kappa, t=1e-6):
    A2, D2, b2, _ = joint_move(A, D, b, 2, [0, 1], q, kappa, t)
    return loss(x, A2, D2, b2, lam) - loss(x, A, D, b, lam)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_joint_membership_implies_every_projection_and_its_dual_certifies(seed):
    """v_k ∈ conv ⟹ each coordinate j lies in [L_jk, H_jk] (the C5 intervals); when the LP
    distance is positive its dual (q, κ) separates, and the joint move descends with
    first-order slope λ (q·v − κ), measured in numpy and by the library."""
    x, A, D, b, lam = instance(seed)
    K = A.shape[1]
    abar = A.mean(0)
    for k in range(K):
        off = A[:, k] <= 0
        if not off.any() or K < 2:
            continue
        J = [j for j in range(K) if j != k]
        v = (1 - D[J] @ D[k]) * abar[J]
        P = A[off][:, J]
        dist, q, _ = hull_distance(v, P)
        lo, hi = P.min(0), P.max(0)
        if dist <= 1e-9:
            assert np.all(v >= lo - 1e-7) and np.all(v <= hi + 1e-7)
        if np.any(v < lo - 1e-7) or np.any(v > hi + 1e-7):
            assert dist > 1e-9
        if dist > 1e-7:
            kappa = float((P @ q).max())
            gap = q @ v - kappa
            assert gap == pytest.approx(dist, rel=1e-6, abs=1e-9)
            h = 1e-7
            A2, D2, b2, _ = joint_move(A, D, b, k, J, q, kappa, h)
            np.testing.assert_allclose(A2 @ D2 + b2, A @ D + b, atol=1e-10)
            assert A2[off].min() >= -1e-15
            fd = (loss(x, A2, D2, b2, lam) - loss(x, A, D, b, lam)) / h
            assert fd == pytest.approx(-lam * gap, rel=1e-4, abs=1e-9)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    hv = joint_hull(torch.as_tensor(A), torch.as_tensor(D), torch.as_tensor(abar), lam, 0.0,
                    TOL0).violations
    for m in certify(dic, x, hv, codes=A, top=None):
        assert m.min_new_code >= -1e-12 and m.measured_decrease > 0
        assert m.measured_decrease == pytest.approx(m.violation.model_decrease, rel=1e-7)


def test_positive_control_converged_optimum_is_in_every_hull():
    x, A, D, b, lam = converged_optimum()
    abar = A.mean(0)
    K = A.shape[1]
    for k in range(K):
        J = [j for j in range(K) if j != k]
        v = (1 - D[J] @ D[k]) * abar[J]
        dist, _, _ = hull_distance(v, A[A[:, k] <= 0][:, J])
        assert dist <= 1e-5 * (1 + np.abs(v).sum())
    rep = check(Dictionary(atoms=D, bias=b, lam=lam), x, codes=A, hull=True)
    assert rep.by_condition("hull") == []
