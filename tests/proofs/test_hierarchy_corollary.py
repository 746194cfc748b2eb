"""proofs/hierarchy_corollary.md: a strict hierarchy S_i ⊆ S_j is never a local minimum
(with a bias: H_ij = 0 < (1 − c_ij) ā_i; without a bias: its own certificate, κ = 0)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.problem import Dictionary
from dictopt.solvers.coding import solve_codes
from tests.proofs._common import loss

TOL0 = Tolerances(tau=0.0)


def planted(seed: int, has_bias: bool):
    """Random atoms; child i = 0 fires only where parent j = 1 fires (S_0 ⊆ S_1, strict)."""
    rng = np.random.default_rng(seed)
    N, K, d = int(rng.integers(10, 50)), int(rng.integers(2, 6)), int(rng.integers(2, 6))
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 0.5)
    A[:, 1] = np.where(rng.random(N) < 0.6, rng.exponential(1.0, N) + 0.1, 0.0)
    A[0, 1], A[-1, 1] = 1.0, 0.0  # the parent is active somewhere and inactive somewhere
    A[:, 0] *= A[:, 1] > 0
    A[0, 0] = 0.7  # the child is active (where the parent is)
    b = rng.standard_normal(d) if has_bias else np.zeros(d)
    x = A @ D + b + 0.2 * rng.standard_normal((N, d))
    return x, A, D, b, float(rng.uniform(0.05, 0.5))


def no_bias_move(A, D, i, j, t):
    """κ = 0: d_i → (d_i + t d_j)/‖·‖, a_i → a_i ‖·‖, a_j → a_j − t a_i; b untouched."""
    v = D[i] + t * D[j]
    nrm = np.linalg.norm(v)
    A2, D2 = A.copy(), D.copy()
    D2[i], A2[:, i] = v / nrm, A[:, i] * nrm
    A2[:, j] = A[:, j] - t * A[:, i]
    return A2, D2, nrm


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), has_bias=st.booleans())
def test_strict_hierarchy_is_flagged_and_certificate_descends(seed, has_bias):
    """H_01 = 0 and c_01 < 1 ⟹ violation (both problems). Without a bias the κ = 0 move is
    exact: ΔL = λ ā_i (‖d_i + t d_j‖ − 1 − t) < 0, bias unchanged; re-solving the codes after
    the move can only lower the loss further."""
    x, A, D, b, lam = planted(seed, has_bias)
    dic = Dictionary(atoms=D, bias=b, lam=lam, has_bias=has_bias)
    rep = check(dic, x, codes=A, hull=False, tol=TOL0)
    hier = [v for v in rep.by_condition("C5") if (v.i, v.j) == (0, 1)]
    assert len(hier) == 1 and hier[0].label == "hierarchy" and hier[0].detail["H"] == 0
    v = hier[0]
    if not has_bias:
        assert v.move.kappa == 0.0
    (m,) = certify(dic, x, hier, codes=A)
    assert m.measured_decrease > 0 and m.min_new_code >= -1e-12
    abar = A.mean(0)
    A2, D2, nrm = no_bias_move(A, D, 0, 1, m.step)  # with H = 0 both moves coincide
    np.testing.assert_allclose(A2 @ D2, A @ D, atol=1e-10)
    dl = loss(x, A2, D2, b, lam) - loss(x, A, D, b, lam)
    assert dl == pytest.approx(lam * abar[0] * (nrm - 1 - m.step), rel=1e-9)
    assert m.measured_decrease == pytest.approx(-dl, rel=1e-9)
    re = solve_codes(D2, x, lam, bias=b, tol=1e-12).codes.numpy()
    assert loss(x, re, D2, b, lam) <= loss(x, A2, D2, b, lam) + 1e-12


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_without_bias_only_the_hierarchy_case_survives(seed):
    """No bias: an upper gap θ > H > 0 is NOT a violation (κ = 0 makes a_j' < 0 at a point
    with a_i > 0 = a_j for every t > 0), and the lower side never is; the checker flags
    exactly the pairs with H_ij = 0 and (1 − c_ij) ā_i > 0."""
    rng = np.random.default_rng(seed)
    N, K, d = 30, 4, 3
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 0.5)
    x, lam = A @ D + 0.2 * rng.standard_normal((N, d)), 0.2
    rep = check(Dictionary(atoms=D, bias=np.zeros(d), lam=lam, has_bias=False), x, codes=A,
                hull=False, tol=TOL0)
    abar = A.mean(0)
    want = set()
    for i in range(K):
        for j in range(K):
            off = A[:, j] <= 0
            if i == j or not off.any():
                continue
            H = A[off, i].max()
            if H == 0 and (1 - D[i] @ D[j]) * abar[i] > 1e-6 * abar[i] + 1e-9 * abar.max():
                want.add((i, j))
            if H > 0:  # the κ = 0 move is infeasible at every t > 0
                A2 = no_bias_move(A, D, i, j, 1e-9)[0]
                assert A2[:, j].min() < 0
    assert {(v.i, v.j) for v in rep.by_condition("C5")} == want
    assert all(v.detail["side"] == "upper" for v in rep.by_condition("C5"))


def test_duplicate_atoms_are_the_exception():
    """c_ij = 1 (d_i = d_j): θ = 0, no violation even with S_i ⊆ S_j."""
    D = np.array([[0.6, 0.8], [0.6, 0.8]])
    A = np.array([[1.0, 2.0], [0.0, 1.0], [0.0, 0.0], [0.5, 0.5]])
    x = A @ D + 0.1
    for has_bias in (True, False):
        b = np.full(2, 0.1) if has_bias else np.zeros(2)
        rep = check(Dictionary(atoms=D, bias=b, lam=0.1, has_bias=has_bias), x, codes=A,
                    hull=False, tol=TOL0)
        assert not [v for v in rep.by_condition("C5") if (v.i, v.j) == (0, 1)]
