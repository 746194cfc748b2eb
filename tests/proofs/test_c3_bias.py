"""proofs/c3_bias.md: bias stationarity and the BiasShift certificate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.problem import Dictionary
from tests.proofs._common import converged_optimum, instance, loss, rel_err, residuals


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), t=st.floats(1e-4, 3.0))
def test_bias_shift_change_is_exact_quadratic(seed, t):
    """b → b + t r̄ gives ΔL = −t‖r̄‖² + ½t²‖r̄‖² exactly (minimum ½‖r̄‖² at t = 1); the
    gradient of L in b is −r̄ (finite differences)."""
    x, A, D, b, lam = instance(seed)
    rbar = residuals(x, A, D, b).mean(0)
    n2 = float(rbar @ rbar)
    measured = loss(x, A, D, b + t * rbar, lam) - loss(x, A, D, b, lam)
    assert rel_err(measured, (-t + 0.5 * t * t) * n2) < 1e-9
    e = np.zeros_like(b)
    e[0], h = 1.0, 1e-6
    fd = (loss(x, A, D, b + h * e, lam) - loss(x, A, D, b - h * e, lam)) / (2 * h)
    assert fd == pytest.approx(-rbar[0], abs=1e-7)
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    (v,) = rep.by_condition("C3")
    assert v.slope == pytest.approx(n2, rel=1e-10)
    assert v.model_decrease == pytest.approx(0.5 * n2, rel=1e-10)
    (m,) = certify(dic, x, [v], codes=A)
    assert m.measured_decrease == pytest.approx(0.5 * n2, rel=1e-9)
    (m,) = certify(dic, x, [v], codes=A, step_scale=1e-6)
    assert m.measured_decrease == pytest.approx(m.predicted_decrease, rel=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_no_bias_problem_has_no_c3(seed):
    """Without a free bias C3 is not a condition (the residual mean may be anything)."""
    x, A, D, b, lam = instance(seed, has_bias=False)
    rep = check(Dictionary(atoms=D, bias=b, lam=lam, has_bias=False), x, codes=A, hull=False)
    assert rep.by_condition("C3") == [] and rep.by_condition("C4") == []
    assert np.linalg.norm(residuals(x, A, D, b).mean(0)) > 0


def test_positive_control_converged_optimum_has_zero_mean_residual():
    x, A, D, b, lam = converged_optimum()
    assert np.linalg.norm(residuals(x, A, D, b).mean(0)) <= 1e-6 * lam
    rep = check(Dictionary(atoms=D, bias=b, lam=lam), x, codes=A, hull=False)
    assert rep.by_condition("C3") == []
