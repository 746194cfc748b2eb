"""proofs/c4_always_on.md: an atom active on every point is never part of a local minimum
with a bias: the AlwaysOnShift certificate lowers L by exactly λ m t."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances, check
from dictopt.check.certify import certify
from dictopt.problem import Dictionary
from tests.proofs._common import converged_optimum, instance, loss, rel_err


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), m=st.floats(1e-3, 2.0), t=st.floats(0.01, 1.0),
       ties=st.integers(1, 4))
def test_always_on_shift_preserves_reconstructions_and_drops_lambda_m(seed, m, t, ties):
    """Make atom k active everywhere with min_n a_kn = m attained at ``ties`` points; then
    a_k → a_k − t m, b → b + t m d_k keeps every reconstruction and ΔL = −λ t m exactly."""
    x, A, D, b, lam = instance(seed)
    k = 0
    A = A.copy()
    A[:, k] = A[:, k] + m
    A[:ties, k] = m  # the minimum, tied at several points
    A2 = A.copy()
    A2[:, k] -= t * m
    b2 = b + t * m * D[k]
    np.testing.assert_allclose(A2 @ D + b2, A @ D + b, atol=1e-12)
    assert A2.min() >= 0 and (t < 1 or A2[:ties, k].max() == 0)
    measured = loss(x, A2, D, b2, lam) - loss(x, A, D, b, lam)
    assert rel_err(measured, -lam * t * m) < 1e-9
    dic = Dictionary(atoms=D, bias=b, lam=lam)
    rep = check(dic, x, codes=A, hull=False, tol=Tolerances(tau=0.0))
    c4 = [v for v in rep.by_condition("C4") if v.i == k]
    assert len(c4) == 1 and c4[0].detail["min_code"] == pytest.approx(m, rel=1e-12)
    for scale in (1.0, t):
        (meas,) = certify(dic, x, c4, codes=A, step_scale=scale)
        assert meas.measured_decrease == pytest.approx(lam * m * scale, rel=1e-8)
        assert meas.predicted_decrease == pytest.approx(lam * m * scale, rel=1e-12)
        assert meas.min_new_code >= -1e-12


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_without_bias_always_on_atoms_are_allowed(seed):
    """The certificate moves mass into b; with b fixed at 0 no C4 is reported."""
    x, A, D, b, lam = instance(seed, has_bias=False)
    A = A + 0.3
    rep = check(Dictionary(atoms=D, bias=b, lam=lam, has_bias=False), x, codes=A, hull=False)
    assert rep.by_condition("C4") == []


def test_positive_control_no_atom_of_an_optimum_is_always_on():
    x, A, D, b, lam = converged_optimum()
    assert np.all(A.min(0) == 0)
