"""Plain-numpy mathematics for the property tests of proofs/ (independent of dictopt).

Everything here is float64 numpy, written from the formulas in the proofs, so that the tests
compare the library with an independent computation.
"""

from __future__ import annotations

import numpy as np


def huber(t: np.ndarray, lam: float) -> np.ndarray:
    """``h_λ(t)``: ``t²/2`` for ``t ≤ λ``, ``λt − λ²/2`` above."""
    t = np.asarray(t, dtype=np.float64)
    return np.where(t <= lam, 0.5 * t * t, lam * t - 0.5 * lam * lam)


def f_bias(x: np.ndarray, b: np.ndarray, lam: float) -> float:
    """``f(b) = (1/N) Σ_n h_λ(‖x_n − b‖)``."""
    return float(huber(np.linalg.norm(x - b, axis=1), lam).mean())


def grad_f(x: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """``∇f(b) = −(1/N) Σ_n min(t_n, λ) u_n`` (proofs/wide_limit.md)."""
    y = x - b
    t = np.linalg.norm(y, axis=1)
    w = np.where(t <= lam, 1.0, lam / np.maximum(t, lam))
    return -(w[:, None] * y).mean(axis=0)


def loss(x: np.ndarray, atoms: np.ndarray, b: np.ndarray, codes: np.ndarray, lam: float) -> float:
    """The canonical loss ``(1/N) Σ_n [½‖r_n‖² + λ Σ_k a_kn]``."""
    r = x - b - codes @ atoms
    return float((0.5 * (r * r).sum(axis=1) + lam * codes.sum(axis=1)).mean())


def unit_rows(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def dual_value(x: np.ndarray, rho: np.ndarray) -> float:
    """Dual objective ``(1/N) Σ_n [ρ_n·x_n − ½‖ρ_n‖²]`` of the wide limit (proofs/capacity.md)."""
    return float(((rho * x).sum(axis=1) - 0.5 * (rho * rho).sum(axis=1)).mean())


def feasible_dual(r: np.ndarray, lam: float) -> np.ndarray:
    """Project residuals onto the dual feasible set's inner approximation: centre (Σρ = 0), then
    one global scale so that every ``‖ρ_n‖ ≤ λ``."""
    rho = r - r.mean(axis=0)
    s = max(1.0, float(np.linalg.norm(rho, axis=1).max()) / lam)
    return rho / s


def best_codes_and_bias(
    x: np.ndarray, atoms: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """``min_{b, A ≥ 0} L(D, b, A)`` for FIXED atoms: a convex problem, solved by cvxpy/CLARABEL
    (an independent reference; accurate to ~1e-9 on these small instances)."""
    import cvxpy as cp

    n, d = x.shape
    K = atoms.shape[0]
    b = cp.Variable(d)
    A = cp.Variable((n, K), nonneg=True)
    ones = np.ones((n, 1))
    resid = x - ones @ cp.reshape(b, (1, d), order="C") - A @ atoms
    prob = cp.Problem(cp.Minimize((0.5 * cp.sum_squares(resid) + lam * cp.sum(A)) / n))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), prob.status
    codes = np.clip(A.value, 0.0, None)
    bias = np.asarray(b.value, dtype=np.float64)
    return bias, codes, loss(x, atoms, bias, codes, lam)
