"""Property tests of proofs/antipodal_pairs.md (THEORY C6): for data along one direction the
optimum is the dense antipodal pair ±w with the bias at the Huber location of the projections.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from dictopt.check import check
from dictopt.problem import Dictionary, objective
from dictopt.wide.bound import wide_limit_bound
from dictopt.wide.one_d import find_antipodal_pair, huber_location, predict_one_d
from tests.proofs._maths import best_codes_and_bias, huber, unit_rows

FAST = settings(max_examples=30, deadline=None)


def _projections(rng: np.random.Generator, N: int, kind: str) -> np.ndarray:
    if kind == "ties":  # repeated values, some exactly λ-apart on a grid
        return rng.integers(-4, 5, size=N) * 0.25
    if kind == "skewed":
        return np.exp(rng.normal(size=N))
    return rng.normal(size=N) * rng.uniform(0.2, 3.0)


def _line(rng: np.random.Generator, p: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    w = unit_rows(rng.normal(size=(1, d)))[0]
    c = rng.normal(size=d)
    c -= (c @ w) * w
    return c + p[:, None] * w, w


def _pair(p: np.ndarray, beta: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Codes of the pair (+w, −w) with the bias at β: (p − β − λ)₊ and (β − λ − p)₊."""
    return np.maximum(p - beta - lam, 0.0), np.maximum(beta - lam - p, 0.0)


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 40),
       kind=st.sampled_from(["ties", "skewed", "normal"]),
       lam=st.sampled_from([0.25, 0.5, 0.1, 0.37]))
def test_huber_location_solves_its_optimality_condition(seed, N, kind, lam) -> None:
    # β* = argmin Σ h_λ(|p_n − β|) ⇔ Σ_n clip(p_n − β, −λ, λ) = 0 (the derivative; it is
    # continuous and nonincreasing in β). Checked with numpy on data with ties, including
    # points at exactly β ± λ (grid data with λ a multiple of the grid step); a wrong root or
    # a non-minimum would fail the residual or the neighbour comparison.
    rng = np.random.default_rng(seed)
    p = _projections(rng, N, kind)
    beta = huber_location(p, lam)
    assert abs(np.clip(p - beta, -lam, lam).sum()) <= 1e-11 * N * (1 + np.abs(p).max())
    phi = lambda b: float(huber(np.abs(p - b), lam).sum())  # noqa: E731
    for delta in (1e-6, 1e-3, 0.1, 1.0):
        assert phi(beta) <= phi(beta + delta) + 1e-12 and phi(beta) <= phi(beta - delta) + 1e-12
    # Counting identity behind the densities: λ(N₊ − N₋) = −Σ_in (p − β), so |N₊ − N₋| ≤ N_in
    # and each side holds at most half of the points.
    n_plus, n_minus = int((p > beta + lam).sum()), int((p < beta - lam).sum())
    n_in = N - n_plus - n_minus
    assert abs(n_plus - n_minus) <= n_in
    assert 2 * n_plus <= N and 2 * n_minus <= N


@FAST
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["ties", "skewed", "normal"]),
       lam=st.floats(0.02, 1.5), d=st.integers(2, 5))
def test_pair_satisfies_every_condition_and_is_labelled(seed, kind, lam, d) -> None:
    # The pair (±w, b = c + β* w) is the limit dictionary; from its closed form:
    # C3 (mean residual = 0) is the Huber equation, supports are disjoint (never co-active),
    # C4 holds (no atom on every point), C5 holds for both orders with c_ij = −1:
    # L_ij ≤ 2 ā_i ≤ H_ij. The checker must find no violation and label the pair "antipodal"
    # exactly when both densities reach its dense_fraction (0.2).
    rng = np.random.default_rng(seed)
    p = _projections(rng, 200, kind)
    x, w = _line(rng, p, d)
    beta = huber_location(p, lam)
    a_plus, a_minus = _pair(p, beta, lam)
    assert not np.any((a_plus > 0) & (a_minus > 0))
    b = x[0] - (x[0] @ w) * w + beta * w
    r = x - b - np.outer(a_plus, w) + np.outer(a_minus, w)
    assert np.linalg.norm(r.mean(axis=0)) <= 1e-10 * (1 + np.abs(p).max())  # C3
    for ai, aj in ((a_plus, a_minus), (a_minus, a_plus)):
        inactive_j = aj <= 0
        H, Lo = ai[inactive_j].max(), ai[inactive_j].min()
        mean_i = ai.mean()
        assert Lo <= 2 * mean_i + 1e-12 and 2 * mean_i <= H + 1e-12  # C5 with c_ij = −1
        assert ai.min() == 0.0  # C4: not always on
    dic = Dictionary(atoms=torch.as_tensor(np.stack([w, -w])), bias=torch.as_tensor(b), lam=lam)
    codes = torch.as_tensor(np.stack([a_plus, a_minus], axis=1))
    report = check(dic, torch.as_tensor(x), codes=codes)
    assert all(v == 0 for v in report.summary["counts"].values()), report.summary["counts"]
    dens = ((a_plus > 0).mean(), (a_minus > 0).mean())
    dense = min(dens) >= 0.2
    event("dense pair" if dense else "pair not dense")
    assert report.summary["labels"]["antipodal"] == int(dense)
    found = find_antipodal_pair(dic, torch.as_tensor(x), torch.as_tensor(w), codes=codes)
    assert found.antipodal and abs(found.density_plus - dens[0]) < 1e-12
    assert max(dens) <= 0.5  # each atom of the pair is active on at most half of the points


@FAST
@given(seed=st.integers(0, 2**31 - 1), lam=st.floats(0.05, 0.4),
       config=st.sampled_from(["one_random", "one_w", "one_sided", "rotated", "random_pair"]),
       theta=st.floats(0.05, 3.0))
def test_pair_beats_every_other_configuration(seed, lam, config, theta) -> None:
    # With both sides of the Huber location populated beyond λ, L_∞ is attained only by
    # dictionaries containing both +w and −w (equality case of the bound), so every 1-atom and
    # every non-antipodal 2-atom dictionary stays strictly above it, whatever its bias and
    # codes (optimised jointly here by cvxpy for the fixed atoms). The pair itself reaches
    # L_∞ with its bias at the Huber location.
    rng = np.random.default_rng(seed)
    p = rng.normal(size=14) * rng.uniform(0.5, 2.0)
    x, w = _line(rng, p, 2)
    pr = predict_one_d(x, lam, direction=w)
    assume(pr.density_plus > 0 and pr.density_minus > 0)
    bias, _, pair_loss = best_codes_and_bias(x, np.stack([w, -w]), lam)
    assert abs(pair_loss - pr.l_inf) <= 1e-8 * max(1, pr.l_inf)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    atoms = {
        "one_random": unit_rows(rng.normal(size=(1, 2))),
        "one_w": w[None, :],
        "one_sided": np.stack([w, rot @ w]) if theta < 1.5 else np.stack([w, w]),
        "rotated": np.stack([w, rot @ -w]),  # angle π − θ between the atoms: not antipodal
        "random_pair": unit_rows(rng.normal(size=(2, 2))),
    }[config]
    if config == "random_pair":
        assume(min(np.abs(atoms @ w)) < 0.999 or float(atoms[0] @ atoms[1]) > -0.999)
    _, _, cfg_loss = best_codes_and_bias(x, atoms, lam)
    assert cfg_loss > pr.l_inf + 1e-9


def test_flat_root_interval_admits_a_single_atom() -> None:
    # The caveat of proofs/antipodal_pairs.md §2: p = {0, 10}, λ = 1. Every β ∈ [1, 9] solves
    # the Huber equation and f is flat at 4.5; at the endpoint β = 1 the lower point sits at
    # distance exactly λ, so the single atom +w (code 10 − 1 − 1 = 8 on the upper point)
    # attains L_∞: uniqueness of the pair needs both sides populated at every root.
    w = np.array([0.6, 0.8])
    c = np.array([0.8, -0.6])
    x = np.stack([c + 0.0 * w, c + 10.0 * w])
    beta = huber_location(x @ w, 1.0)
    assert abs(np.clip(x @ w - beta, -1, 1).sum()) < 1e-12 and abs(beta - 5.0) < 1e-9
    one = Dictionary(atoms=torch.as_tensor(w[None, :]), bias=torch.as_tensor(c + w), lam=1.0)
    codes = torch.tensor([[0.0], [8.0]], dtype=torch.float64)
    loss = objective(one, torch.as_tensor(x), codes).loss
    assert abs(loss - 4.5) < 1e-12
    assert abs(wide_limit_bound(x, 1.0).value - 4.5) < 1e-9
