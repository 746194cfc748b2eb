"""The one-dimensional model: antipodal pair, Huber-location bias, densities (THEORY C6, §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.problem import Dictionary, objective
from dictopt.validation import DictoptInputError
from dictopt.wide.bound import huber
from dictopt.wide.one_d import find_antipodal_pair, huber_location, predict_one_d


def _line_data(seed: int, n: int, d: int, dist: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    w /= w.norm()
    c = torch.randn(d, generator=g, dtype=torch.float64)
    c -= (c @ w) * w  # c ⟂ w
    if dist == "gaussian":
        p = torch.randn(n, generator=g, dtype=torch.float64)
    elif dist == "skewed":
        p = torch.randn(n, generator=g, dtype=torch.float64).exp()
    else:
        p = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 1
    return c + p[:, None] * w, w


def test_huber_location_pinned() -> None:
    # Large λ: the mean; tiny λ: the median (odd N).
    p = torch.tensor([0.0, 1.0, 2.0, 10.0], dtype=torch.float64)
    assert abs(huber_location(p, 100.0) - 3.25) < 1e-12
    q = torch.tensor([0.0, 1.0, 5.0, 6.0, 100.0], dtype=torch.float64)
    assert abs(huber_location(q, 1e-9) - 5.0) < 1e-6
    # Known case: {0, 0, 10}, λ = 1 → −2β + 1 = 0 → β = 0.5.
    assert abs(huber_location([0.0, 0.0, 10.0], 1.0) - 0.5) < 1e-12


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), dist=st.sampled_from(["gaussian", "skewed", "uniform"]),
       lam=st.floats(0.02, 0.5), d=st.integers(2, 6))
def test_one_d_predictions(seed: int, dist: str, lam: float, d: int) -> None:
    x, w = _line_data(seed, 300, d, dist)
    pr = predict_one_d(x, lam, direction=w)
    p = x @ w
    # Bias = the Huber location of the projections (independent bisection vs Newton in d dims).
    assert abs(float(pr.bias @ w) - pr.location) < 1e-8
    perp = pr.bias - (pr.bias @ w) * w
    assert torch.allclose(perp, x[0] - (x[0] @ w) * w, atol=1e-8)  # b lies on the line
    # Two antipodal atoms ±w.
    assert pr.n_rays == 2
    assert abs(pr.pair_cosine + 1) < 1e-12
    assert min(abs(float(pr.atoms[0] @ w)), abs(float(pr.atoms[1] @ w))) > 1 - 1e-12
    # L_∞ equals the 1-D Huber objective at the location.
    assert abs(pr.l_inf - float(huber((p - pr.location).abs(), lam).mean())) < 1e-10
    # Densities = fractions beyond β* ± λ; they partition the points with the inside ones.
    inside = float(((p - pr.location).abs() <= lam).double().mean())
    assert abs(pr.density_plus + pr.density_minus + inside - 1) < 1e-12


def test_two_atom_antipodal_dictionary_attains_l_inf() -> None:
    # The K = 2 dictionary (±w, bias at the Huber location) reaches the lower bound of every K.
    x, w = _line_data(0, 400, 4, "skewed")
    lam = 0.1
    pr = predict_one_d(x, lam, direction=w)
    dic = Dictionary(atoms=torch.stack([w, -w]), bias=pr.bias, lam=lam)
    p = x @ w - pr.location
    codes = torch.stack([(p - lam).clamp_min(0), (-p - lam).clamp_min(0)], dim=1)
    assert abs(objective(dic, x, codes).loss - pr.l_inf) < 1e-12
    found = find_antipodal_pair(dic, x, w, codes=codes)
    assert found.antipodal
    assert abs(found.density_plus - pr.density_plus) < 1e-12
    assert abs(found.density_minus - pr.density_minus) < 1e-12
    assert abs(found.bias_location - pr.location) < 1e-8


def test_one_d_classical_solver_finds_the_pair() -> None:
    from dictopt.solvers import classical

    x, w = _line_data(1, 200, 4, "gaussian")
    lam = 0.1
    pr = predict_one_d(x, lam, direction=w)
    best = None
    for seed in range(2):
        dic = classical.fit_classical(x, K=2, lam=lam, seed=seed, progress=False, max_iter=300)
        loss = objective(dic.to(torch.float64), x, dic.to(torch.float64).optimal_codes(x)).loss
        if best is None or loss < best[0]:
            best = (loss, dic)
    assert best is not None
    found = find_antipodal_pair(best[1].to(torch.float64), x, w)
    assert found.antipodal
    assert abs(best[0] - pr.l_inf) <= 1e-4 * pr.l_inf
    assert abs(found.bias_location - pr.location) < 1e-2


def test_bad_input() -> None:
    with pytest.raises(DictoptInputError, match="lam"):
        huber_location([1.0, 2.0], 0.0)
    with pytest.raises(DictoptInputError, match="N = 0"):
        huber_location(np.zeros(0), 1.0)
    with pytest.raises(DictoptInputError, match="direction"):
        predict_one_d(np.random.default_rng(0).normal(size=(10, 3)), 0.1, direction=[1.0, 0.0])
