"""The batched C5 step search equals the one-by-one search to the last bit.

:func:`dictopt.check.brent.bounded_brent` must propose the very points SciPy's bounded
``minimize_scalar`` evaluates and return its ``x`` and ``fun``; :func:`dictopt.check.moves.
best_pair_steps` must give every pair move the step :func:`best_toward_step` gives it and the
decrease :meth:`Toward.model_delta` gives at that step (the report's numbers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from dictopt.check.brent import bounded_brent
from dictopt.check.moves import Toward, best_pair_steps, best_toward_step

F64 = torch.float64


def _run(gen, f):
    """Drive a :func:`bounded_brent` generator with ``f``; the points it asked for and its
    result."""
    asked = []
    x = next(gen)
    try:
        while True:
            asked.append(x)
            x = gen.send(f(x))
    except StopIteration as stop:
        return asked, stop.value


FUNCTIONS = {
    "quadratic": lambda c: (lambda x: (x - c) ** 2),
    "abs": lambda c: (lambda x: abs(x - c)),
    "flat": lambda c: (lambda x: 0.0),
    "linear": lambda c: (lambda x: c * x),
    "wavy": lambda c: (lambda x: math.cos(3 * x) + c * x * x),
    "plateau": lambda c: (lambda x: max(x - c, 0.0)),
}


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(FUNCTIONS)), c=st.floats(-5, 5),
       hi=st.floats(1e-6, 1e3), rel=st.sampled_from([1e-9, 1e-5, 1e-2]),
       maxiter=st.sampled_from([500, 7]))
def test_bounded_brent_is_scipys_method_point_for_point(kind, c, hi, rel, maxiter):
    f = FUNCTIONS[kind](c)
    seen = []

    def g(x):
        seen.append(float(x))
        return f(float(x))

    res = minimize_scalar(g, bounds=(0.0, hi), method="bounded",
                          options={"xatol": hi * rel, "maxiter": maxiter})
    asked, (x, fx) = _run(bounded_brent(0.0, hi, xatol=hi * rel, maxiter=maxiter), f)
    assert asked == seen
    assert x == float(res.x) and fx == float(res.fun)


def test_bounded_brent_refuses_bad_bounds():
    with pytest.raises(ValueError, match="bounds"):
        next(bounded_brent(1.0, 0.0))
    with pytest.raises(ValueError, match="bounds"):
        next(bounded_brent(0.0, math.inf))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(2, 30), n=st.integers(1, 40),
       d=st.sampled_from([3, 16, 257]), dtype=st.sampled_from([torch.float32, F64]),
       batch=st.sampled_from([1, 3, 1024]), bias=st.booleans())
def test_best_pair_steps_are_best_toward_steps_to_the_last_bit(seed, K, n, d, dtype, batch,
                                                               bias):
    """Random pair moves (``J = [i]``, ``q = ±1``), some with ``t_max ≤ 0``, NaN or above the
    1e3 cap: the batched steps and decreases are the one-by-one ones, bit for bit."""
    rng = np.random.default_rng(seed)
    D = torch.as_tensor(rng.standard_normal((K, d))).to(dtype)
    D = D / D.norm(dim=1, keepdim=True)
    D[0] = D[1 % K]  # a duplicate: c = 1, norms that vanish at s = -1
    abar = torch.as_tensor(rng.uniform(0, 1, K))
    i_n = torch.as_tensor(rng.integers(0, K, n))
    k_n = torch.as_tensor(rng.integers(0, K, n))
    side = rng.choice([-1, 1], n)
    val = rng.uniform(0, 1, n)
    kappa = [float(s * v) if bias else 0.0 for s, v in zip(side, val, strict=True)]
    t_max = [float(t) for t in rng.choice([0.0, -1.0, math.nan, 0.3, 2.0, 5e3], n)]
    t_max = [t if rng.uniform() < 0.5 else float(rng.uniform(0, 4)) for t in t_max]
    q_n = torch.as_tensor(side, dtype=F64)
    steps, deltas = best_pair_steps(D, abar, 0.05, i_n, k_n, q_n, kappa, t_max, batch=batch)
    for p in range(n):
        move = Toward(0.0, k=int(k_n[p]), J=torch.tensor([int(i_n[p])]),
                      q=torch.tensor([float(side[p])]), kappa=kappa[p])
        t = best_toward_step(move, D, abar, 0.05, t_max[p]) if t_max[p] > 0 else 0.0
        assert steps[p] == t or (math.isnan(t_max[p]) and steps[p] == 0.0)
        want = move.model_delta(D, abar, 0.05) if t > 0 else 0.0
        assert math.copysign(1, deltas[p]) == math.copysign(1, want) and deltas[p] == want
