"""proofs/slack_weights.md: w_n = (λ − d_k·r_n)/(Nλ) on the inactive points of k.

General identity (any codes, any dictionary), with I = {a_k = 0}, S = {a_k > 0}:
  Σ_I w_n         = 1 − d_k·r̄/λ − (1/Nλ) Σ_S (λ − g_kn)
  Σ_I w_n a_jn    = ā_j − d_k·G_j/λ − (1/Nλ) Σ_S (λ − g_kn) a_jn.
So C1 for atom k (equality on S), d_k·r̄ = 0 (C3 projected) and d_k·G_j = λ c_jk ā_j (C2 of
atom j, full form, projected) give Σ w = 1 and Σ w a_J = v_k; C1's inequality gives w ≥ 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check.hull import hull_distance
from tests.proofs._common import converged_optimum, instance, residuals


def _weights(x, A, D, b, lam, k):
    g = residuals(x, A, D, b) @ D[k]
    return (lam - g) / (len(x) * lam), g


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_general_identity_holds_for_any_codes(seed):
    x, A, D, b, lam = instance(seed)
    N, K = A.shape
    r = residuals(x, A, D, b)
    G = A.T @ r / N
    for k in range(K):
        w, g = _weights(x, A, D, b, lam, k)
        I, S = A[:, k] <= 0, A[:, k] > 0
        total = 1 - D[k] @ r.mean(0) / lam - (lam - g[S]).sum() / (N * lam)
        assert w[I].sum() == pytest.approx(total, rel=1e-10, abs=1e-12)
        for j in range(K):
            want = A[:, j].mean() - D[k] @ G[j] / lam - ((lam - g[S]) * A[S, j]).sum() / (N * lam)
            assert (w[I] * A[I, j]).sum() == pytest.approx(want, rel=1e-9, abs=1e-12)


def _stationary_residuals(A, D, lam, with_c1=True, with_c2=True, with_c3=True):
    """Minimum-norm residuals R [N, d] meeting, exactly, the linear equations of
    C1 on the support (d_k·r_n = λ where a_kn > 0), C2 full (Σ_n a_jn r_n = λ N ā_j d_j) and
    C3 (Σ_n r_n = 0). Returns None when the system is inconsistent."""
    N, K = A.shape
    d = D.shape[1]
    rows, rhs = [], []
    if with_c1:
        for n, k in zip(*np.nonzero(A > 0), strict=True):
            e = np.zeros((N, d))
            e[n] = D[k]
            rows.append(e.ravel())
            rhs.append(lam)
    if with_c2:
        for j in range(K):
            for c in range(d):
                e = np.zeros((N, d))
                e[:, c] = A[:, j]
                rows.append(e.ravel())
                rhs.append(lam * A[:, j].sum() * D[j, c])
    if with_c3:
        for c in range(d):
            e = np.zeros((N, d))
            e[:, c] = 1.0
            rows.append(e.ravel())
            rhs.append(0.0)
    M, y = np.array(rows), np.array(rhs)
    sol = np.linalg.lstsq(M, y, rcond=None)[0]
    if np.abs(M @ sol - y).max() > 1e-9 * (1 + np.abs(y).max()):
        return None
    return sol.reshape(N, d)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_exact_stationary_point_gives_weights_summing_to_one_with_mean_v(seed):
    """Residuals meeting C1-on-support, C2 and C3 exactly (constructed by least squares;
    data x = b + A D + R): Σ_I w = 1 and Σ_I w a_J = v_k = ((1 − c_jk) ā_j)_j, to 1e-10.
    Dropping C3, or C1 on the support, breaks the sum (it does not follow from the scale part
    of C2 alone)."""
    rng = np.random.default_rng(seed)
    N, K, d = int(rng.integers(8, 16)), int(rng.integers(2, 4)), int(rng.integers(6, 10))
    D = rng.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 0.4)
    A[0] = 0.0  # every atom has an inactive point
    lam = float(rng.uniform(0.1, 1.0))
    b = rng.standard_normal(d)
    R = _stationary_residuals(A, D, lam)
    if R is None:
        return
    x = b + A @ D + R
    abar = A.mean(0)
    for k in range(K):
        w, _ = _weights(x, A, D, b, lam, k)
        I = A[:, k] <= 0
        assert w[I].sum() == pytest.approx(1.0, abs=1e-10)
        J = [j for j in range(K) if j != k]
        v = (1 - D[J] @ D[k]) * abar[J]
        np.testing.assert_allclose(w[I] @ A[I][:, J], v, atol=1e-10)
    for drop in ({"with_c3": False}, {"with_c1": False}):
        R2 = _stationary_residuals(A, D, lam, **drop)
        if R2 is None:
            continue
        x2 = b + A @ D + R2
        sums = [_weights(x2, A, D, b, lam, k)[0][A[:, k] <= 0].sum() for k in range(K)]
        # the scale part of C2 holds here in both cases, yet the weights need not sum to 1
        G = A.T @ R2 / N
        assert np.allclose((G * D).sum(1), lam * abar, atol=1e-9)
        assert max(abs(s - 1) for s in sums) > 1e-6


def test_positive_control_optimum_slack_is_a_hull_certificate():
    """At a converged optimum the weights are a probability vector on I_k (to the solver's
    tolerance) whose mean code vector is v_k, and the LP agrees that v_k is in the hull."""
    x, A, D, b, lam = converged_optimum()
    K = A.shape[1]
    abar = A.mean(0)
    for k in range(K):
        w, _ = _weights(x, A, D, b, lam, k)
        I = A[:, k] <= 0
        assert w[I].min() >= -1e-12
        assert w[I].sum() == pytest.approx(1.0, abs=1e-6)
        J = [j for j in range(K) if j != k]
        v = (1 - D[J] @ D[k]) * abar[J]
        np.testing.assert_allclose(w[I] @ A[I][:, J], v, atol=1e-6 * (1 + abar.max()))
        assert hull_distance(v, A[I][:, J])[0] <= 1e-5
