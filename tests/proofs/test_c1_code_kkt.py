"""proofs/c1_code_kkt.md: KKT of the nonnegative lasso, the CodeStep certificate, the
amortisation gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.problem import Dictionary
from dictopt.solvers.coding import solve_codes
from tests.proofs._common import instance, loss, rel_err, residuals


def _code_step(x, A, D, b, lam, k, t):
    """The certificate of C1 for atom k, built here: δ_n = max(t(g_kn − λ), −a_kn)."""
    g = residuals(x, A, D, b) @ D[k]
    delta = np.maximum(t * (g - lam), -A[:, k])
    A2 = A.copy()
    A2[:, k] += delta
    return A2, delta, g - lam


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_code_step_loss_change_is_the_exact_quadratic(seed):
    """ΔL = (1/N) Σ_n [−δ_n e_n + ½ δ_n²] with e = g − λ (exact: L is quadratic in a_k), and
    the library's measured and model decreases equal it."""
    x, A, D, b, lam = instance(seed)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    viol = rep.by_condition("C1")
    for m in certify(dic, x, viol, codes=A, top=None):
        k = m.violation.i
        A2, delta, e = _code_step(x, A, D, b, lam, k, 1.0)
        exact = float(np.mean(-delta * e + 0.5 * delta * delta))
        measured = loss(x, A2, D, b, lam) - loss(x, A, D, b, lam)
        assert rel_err(measured, exact) < 1e-9
        assert m.min_new_code >= 0 and A2.min() >= 0
        assert m.measured_decrease == pytest.approx(-exact, rel=1e-9)
        assert m.violation.model_decrease == pytest.approx(-exact, rel=1e-9)
        assert -exact > 0  # a violated C1 is a descent direction


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), boost=st.floats(1.0, 20.0))
def test_first_order_prediction_is_the_derivative(seed, boost):
    """d/dt ΔL(0⁺) = −(1/N)[Σ_{a>0} e² + Σ_{a=0} max(e, 0)²]: the reported slope, and the
    measured decrease per unit step converges to it as t → 0 (codes inflated by ``boost`` so
    that the clip −a is active at t = 1)."""
    x, A, D, b, lam = instance(seed)
    A = A * boost
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    viol = rep.by_condition("C1")
    r = residuals(x, A, D, b)
    for v in viol:
        e = r @ D[v.i] - lam
        act = A[:, v.i] > 0
        slope = (np.sum(e[act] ** 2) + np.sum(np.maximum(e[~act], 0) ** 2)) / len(e)
        assert v.slope == pytest.approx(slope, rel=1e-10)
    errs = []
    for t in (1e-3, 1e-5):
        ms = certify(dic, x, viol, codes=A, step_scale=t, top=None)
        errs.append([abs(m.measured_decrease / m.predicted_decrease - 1) for m in ms])
    for e3, e5 in zip(*errs, strict=True):
        assert e5 <= 1e-3 and e5 <= e3 + 1e-9  # O(t) error, shrinking with t


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), log_lam=st.floats(-2, 0.5))
def test_solved_codes_satisfy_kkt_and_kkt_means_optimal(seed, log_lam):
    """solve_codes returns codes with g = λ on the support and g ≤ λ off it (numpy), and a
    KKT point of the convex per-point problem is its minimum: no random nonnegative
    perturbation lowers the loss, and the directional derivative along e_kn is λ − g_kn."""
    x, _, D, b, _ = instance(seed)
    lam = float(10**log_lam)
    A = solve_codes(D, x, lam, bias=b, tol=1e-12).codes.numpy()
    g = residuals(x, A, D, b) @ D.T
    act = A > 0
    assert np.all(np.abs(g[act] - lam) <= 1e-9 * lam + 1e-12)
    assert np.all(g[~act] <= lam * (1 + 1e-9))
    base = loss(x, A, D, b, lam)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        A2 = np.maximum(A + 0.1 * rng.standard_normal(A.shape), 0)
        assert loss(x, A2, D, b, lam) >= base - 1e-12
    n, k, h = 0, 0, 1e-6
    A2 = A.copy()
    A2[n, k] += h
    fd = (loss(x, A2, D, b, lam) - base) * len(x) / h
    assert fd == pytest.approx(lam - g[n, k], abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_amortisation_gap_lies_between_code_step_gain_and_duality_gap(seed):
    """For any codes A ≥ 0 (an encoder's), gap = L(A) − L(A*) ≥ 0 and
    max_k gain_k ≤ gap ≤ (1/N) Σ_n [P_n(a_n) − ½‖y_n‖² + ½‖y_n − θ_n‖²] with the dual point
    θ_n = r_n min(1, λ / max_k g_kn) (proofs/c1_code_kkt.md, §amortisation gap)."""
    x, A, D, b, lam = instance(seed)
    A_opt = solve_codes(D, x, lam, bias=b, tol=1e-12).codes.numpy()
    gap = loss(x, A, D, b, lam) - loss(x, A_opt, D, b, lam)
    assert gap >= -1e-12
    gains = []
    for k in range(D.shape[0]):
        A2, _, _ = _code_step(x, A, D, b, lam, k, 1.0)
        gains.append(loss(x, A, D, b, lam) - loss(x, A2, D, b, lam))
    assert max(gains) <= gap + 1e-10
    y = x - b
    r = residuals(x, A, D, b)
    gmax = (r @ D.T).max(1)
    theta = r * np.minimum(1.0, lam / np.maximum(gmax, 1e-300))[:, None]
    assert np.all(theta @ D.T <= lam * (1 + 1e-12))  # dual feasible
    primal = 0.5 * (r * r).sum(1) + lam * A.sum(1)
    dual = 0.5 * (y * y).sum(1) - 0.5 * ((y - theta) ** 2).sum(1)
    assert gap <= float(np.mean(primal - dual)) + 1e-10
    # at the optimal codes the duality gap closes
    r_opt = residuals(x, A_opt, D, b)
    d_opt = 0.5 * (y * y).sum(1) - 0.5 * ((y - r_opt) ** 2).sum(1)
    p_opt = 0.5 * (r_opt * r_opt).sum(1) + lam * A_opt.sum(1)
    assert float(np.max(np.abs(p_opt - d_opt))) <= 1e-8 * (1 + float(np.max(p_opt)))


def test_positive_control_optimal_codes_pass_c1_in_the_checker():
    x, _, D, b, lam = instance(11)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=torch.as_tensor(solve_codes(D, x, lam, bias=b, tol=1e-12).codes),
                hull=False)
    assert rep.by_condition("C1") == []
