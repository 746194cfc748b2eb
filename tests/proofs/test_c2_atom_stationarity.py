"""proofs/c2_atom_stationarity.md: the full C2 (tangential and radial parts), the Rotate and
Scale certificates and their exact loss changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.problem import Dictionary
from dictopt.solvers.coding import solve_codes
from tests.proofs._common import converged_optimum, instance, loss, rel_err, residuals


def _G(x, A, D, b):
    """G_k = (1/N) Σ_n a_kn r_n, rows."""
    return A.T @ residuals(x, A, D, b) / len(x)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), k_pick=st.integers(0, 10))
def test_derivatives_on_the_sphere_and_along_the_scale(seed, k_pick):
    """Finite differences of L (numpy) along d_k(φ) = cos φ d_k + sin φ u (codes fixed) give
    −u·G_k, steepest along the tangential part of G_k; along a_k → (1+s) a_k they give
    −(d_k·G_k − λ ā_k)."""
    x, A, D, b, lam = instance(seed)
    k = k_pick % D.shape[0]
    G = _G(x, A, D, b)[k]
    perp = G - (G @ D[k]) * D[k]
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(D.shape[1])
    u -= (u @ D[k]) * D[k]
    if np.linalg.norm(u) < 1e-6:
        return  # d = 1: the sphere has no tangent directions
    u /= np.linalg.norm(u)
    h = 1e-6

    def rotated(phi):
        D2 = D.copy()
        D2[k] = math.cos(phi) * D[k] + math.sin(phi) * u
        return loss(x, A, D2, b, lam)

    fd = (rotated(h) - rotated(-h)) / (2 * h)
    assert fd == pytest.approx(-(u @ G), abs=1e-6 * (1 + np.abs(G).sum()))
    assert abs(u @ G) <= np.linalg.norm(perp) + 1e-12  # Cauchy–Schwarz on the tangent space

    def scaled(s):
        A2 = A.copy()
        A2[:, k] *= 1 + s
        return loss(x, A2, D, b, lam)

    fd = (scaled(h) - scaled(-h)) / (2 * h)
    rho = G @ D[k] - lam * A[:, k].mean()
    assert fd == pytest.approx(-rho, abs=1e-6 * (1 + abs(rho)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_rotate_and_scale_certificates_change_the_loss_exactly_as_predicted(seed):
    """Rotate: ΔL = −G_k·δ + ½ q_k ‖δ‖², δ = d_k' − d_k, q_k = (1/N)Σ a_kn² (quadratic in δ);
    Scale: ΔL = −s ρ_k + ½ s² q_k. The checker's moves are measured on data by certify and
    compared with these formulas and with the loss recomputed in numpy."""
    x, A, D, b, lam = instance(seed)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    G = _G(x, A, D, b)
    q = (A * A).mean(0)
    for m in certify(dic, x, rep.by_condition("C2"), codes=A, top=None):
        v, k = m.violation, m.violation.i
        mv = v.move
        if v.label == "rotation":
            D2 = D.copy()
            D2[k] = (D[k] + mv.step * mv.u.numpy()) / math.sqrt(1 + mv.step**2)
            delta = D2[k] - D[k]
            model = -(G[k] @ delta) + 0.5 * q[k] * (delta @ delta)
            measured = loss(x, A, D2, b, lam) - loss(x, A, D, b, lam)
            perp = G[k] - (G[k] @ D[k]) * D[k]
            np.testing.assert_allclose(mv.u.numpy(), perp / np.linalg.norm(perp), atol=1e-10)
        else:
            A2 = A.copy()
            A2[:, k] *= 1 + mv.step
            rho = G[k] @ D[k] - lam * A[:, k].mean()
            model = -mv.step * rho + 0.5 * mv.step**2 * q[k]
            measured = loss(x, A2, D, b, lam) - loss(x, A, D, b, lam)
            assert mv.step == pytest.approx(max(rho / q[k], -1.0), rel=1e-10)
        assert rel_err(measured, model) < 1e-9
        assert m.measured_decrease == pytest.approx(-model, rel=1e-8)
        assert v.model_decrease == pytest.approx(-model, rel=1e-8)
        assert -model > 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_first_order_prediction_as_t_to_zero(seed):
    x, A, D, b, lam = instance(seed)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    viol = rep.by_condition("C2")
    errs = [[abs(m.measured_decrease / m.predicted_decrease - 1)
             for m in certify(dic, x, viol, codes=A, step_scale=t, top=None)]
            for t in (1e-3, 1e-5)]
    for e3, e5 in zip(*errs, strict=True):
        assert e5 <= 1e-3 and e5 <= e3 + 1e-9


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), log_lam=st.floats(-2, 0.5))
def test_radial_part_is_implied_by_c1(seed, log_lam):
    """d_k·G_k − λ ā_k = (1/N) Σ_n a_kn (g_kn − λ) = 0 for KKT codes, for ANY dictionary:
    the scale part of C2 is a code condition; only the tangential part constrains atoms."""
    x, _, D, b, _ = instance(seed)
    lam = float(10**log_lam)
    A = solve_codes(D, x, lam, bias=b, tol=1e-12).codes.numpy()
    G = _G(x, A, D, b)
    rho = (G * D).sum(1) - lam * A.mean(0)
    assert np.all(np.abs(rho) <= 1e-9 * lam * (1 + A.mean(0)))


def test_positive_control_converged_optimum_is_stationary():
    x, A, D, b, lam = converged_optimum()
    G = _G(x, A, D, b)
    abar = A.mean(0)
    tang = np.linalg.norm(G - (G * D).sum(1)[:, None] * D, axis=1)
    rad = (G * D).sum(1) - lam * abar
    assert np.all(tang <= 1e-5 * lam * abar)
    assert np.all(np.abs(rad) <= 1e-9 * lam * abar)
    rep = check(Dictionary(atoms=D, bias=b, lam=lam), x, codes=A, hull=False)
    assert rep.by_condition("C2") == []


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), factor=st.sampled_from([0.3, 3.0]))
def test_scale_prediction_has_the_sign_of_the_step(seed, factor):
    # Codes scaled down (radial part ρ > 0: grow them) or up (ρ < 0: shrink them, a negative
    # step): either way the first-order decrease slope·step is positive and matches the
    # measured decrease as the step shrinks.
    x, A, D, b, lam = instance(seed)
    A = A * factor
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    scale = [v for v in rep.by_condition("C2") if v.label == "code_scale"]
    for m in certify(dic, x, scale, codes=A, step_scale=1e-5, top=None):
        assert m.predicted_decrease > 0
        assert abs(m.measured_decrease / m.predicted_decrease - 1) <= 1e-3
