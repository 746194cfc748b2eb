"""Property tests of proofs/wide_gram.md steps 1–2: the scale-balanced form, the closed form
over the dictionary (F ≤ every canonical loss with the same codes), joint convexity of F and its
gradients ∇_Q F = (λ/2)(11ᵀ − R Rᵀ/λ²), ∇_b F = −Σ_n r_n with R the ridge residuals."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.wide.gram import gram_objective
from tests.proofs._maths import loss, unit_rows

FAST = settings(max_examples=30, deadline=None)


def _setup(seed: int, N: int, d: int, K: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)) * rng.uniform(0.2, 2.0, size=(N, 1))
    A = rng.uniform(0, 1.5, size=(N, K)) * (rng.random((N, K)) < 0.6)  # canonical [N, K]
    return rng, x, A


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 10), d=st.integers(1, 4),
       K=st.integers(1, 5), lam=st.floats(0.05, 2.0))
def test_balanced_form_and_closed_form_bound_every_canonical_loss(seed, N, d, K, lam) -> None:
    # Step 1: rescaling atom k by c_k = √‖a_k‖₁ (codes by 1/c_k) turns the canonical loss into
    # the balanced objective with the same value. Step 2: minimising over the decoder gives
    # F(Q, b)/N ≤ that value, Q = Σ_k a_k a_kᵀ/‖a_k‖₁. A failure of either identity would break
    # the reduction of the wide limit to a problem over Gram matrices.
    rng, x, A = _setup(seed, N, d, K)
    D = unit_rows(rng.normal(size=(K, d)))
    b = rng.normal(size=d) * 0.3
    L = loss(x, D, b, A, lam)
    used = A.sum(axis=0) > 0
    c = np.sqrt(A.sum(axis=0)[used])
    Db, Ab = D[used] * c[:, None], A[:, used] / c
    r = x - b - Ab @ Db
    balanced = (0.5 * (r * r).sum() + 0.5 * lam * ((Db**2).sum() + (Ab.sum(axis=0) ** 2).sum()))
    assert abs(balanced / N - L) <= 1e-12 * (1 + L)
    F = gram_objective(Ab @ Ab.T, x, b, lam)
    assert F <= L + 1e-12 * (1 + L)


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 10), d=st.integers(1, 4),
       K=st.integers(1, 5), lam=st.floats(0.05, 2.0), theta=st.floats(0.0, 1.0))
def test_F_is_jointly_convex_with_the_stated_gradients(seed, N, d, K, lam, theta) -> None:
    # F is jointly convex in (Q, b) (midpoint inequality on random Gram matrices and biases),
    # and its directional derivatives match ∇_Q F = (λ/2)(11ᵀ − R Rᵀ/λ²), ∇_b F = −Σ_n r_n,
    # where R = λ(Q + λI)⁻¹Y are the residuals of the ridge decoder D* = YᵀAᵀ(AAᵀ+λI)⁻¹.
    # At the limit (R = limit residuals) this is the dual certificate M of step 3.
    rng, x, A = _setup(seed, N, d, K)
    A2 = rng.uniform(0, 1.5, size=(N, K))
    Q1, Q2 = A @ A.T, A2 @ A2.T
    b1, b2 = rng.normal(size=d), rng.normal(size=d)
    F = lambda Q, b: N * gram_objective(Q, x, b, lam)  # noqa: E731
    mid = F(theta * Q1 + (1 - theta) * Q2, theta * b1 + (1 - theta) * b2)
    assert mid <= theta * F(Q1, b1) + (1 - theta) * F(Q2, b2) + 1e-10 * (1 + abs(mid))
    Y = x - b1
    R = lam * np.linalg.solve(Q1 + lam * np.eye(N), Y)
    # R is the residual of the ridge-optimal (balanced) decoder for codes A (A is [N, K]).
    Dstar = Y.T @ A @ np.linalg.inv(A.T @ A + lam * np.eye(K))  # [d, K]
    assert np.abs((Y.T - Dstar @ A.T) - R.T).max() <= 1e-9 * (1 + np.abs(Y).max())
    gQ = 0.5 * lam * (np.ones((N, N)) - R @ R.T / lam**2)
    gb = -R.sum(axis=0)
    E = rng.normal(size=(N, N))
    E = (E + E.T) / 2
    e = rng.normal(size=d)
    h = 1e-6
    # Q1 + λI ≻ 0 stays true for the small symmetric step.
    dQ = (F(Q1 + h * E, b1) - F(Q1 - h * E, b1)) / (2 * h)
    db = (F(Q1, b1 + h * e) - F(Q1, b1 - h * e)) / (2 * h)
    scale = 1 + float((Y * Y).sum())
    assert abs(dQ - (gQ * E).sum()) <= 1e-5 * scale
    assert abs(db - gb @ e) <= 1e-5 * scale
