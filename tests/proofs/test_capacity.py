"""Property tests of proofs/capacity.md: the exact loss drop of a new atom (one point, several
points), the checker's capacity summary, and capacity as dual feasibility of the wide limit."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dictopt.check import check
from dictopt.problem import Dictionary, objective
from dictopt.wide.bound import wide_limit_bound
from dictopt.wide.limit_dictionary import limit_dictionary
from tests.proofs._maths import best_codes_and_bias, dual_value, feasible_dual, unit_rows

FAST = settings(max_examples=30, deadline=None)


def _instance(seed: int, N: int, d: int, K: int, lam: float, codes: str):
    """Random data, dictionary and codes (optimal lasso codes, or arbitrary nonnegative)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)) * rng.uniform(0.2, 3.0, size=(N, 1))
    D = unit_rows(rng.normal(size=(K, d)))
    b = rng.normal(size=d) * 0.3
    dic = Dictionary(atoms=torch.as_tensor(D), bias=torch.as_tensor(b), lam=lam)
    xt = torch.as_tensor(x)
    if codes == "optimal":
        A = dic.optimal_codes(xt)
    else:
        A = torch.as_tensor(rng.uniform(0, 1, size=(N, K)) * (rng.random((N, K)) < 0.5))
    r = (xt - dic.decode(A)).numpy()
    return rng, x, dic, A, r


def _extend(dic: Dictionary, atom: np.ndarray) -> Dictionary:
    atoms = torch.cat([dic.atoms, torch.as_tensor(atom)[None, :]])
    return Dictionary(atoms=atoms, bias=dic.bias, lam=dic.lam)


def gain(r: np.ndarray, atom: np.ndarray, lam: float) -> float:
    """G(d) = (1/2N) Σ_n (d·r_n − λ)₊², the drop from a new atom d, codes (d·r_n − λ)₊."""
    return float((np.maximum(r @ atom - lam, 0.0) ** 2).sum() / (2 * r.shape[0]))


def best_new_atom(r: np.ndarray, lam: float, start: np.ndarray, iters: int = 200):
    """Maximise G over the unit sphere by d ← Σ_n (d·r_n − λ)₊ r_n / ‖·‖. G is convex, so each
    step is an ascent step (G(d') ≥ G(d) + ∇G(d)·(d' − d) ≥ G(d)); returns (d, gains)."""
    dvec, gains = start / np.linalg.norm(start), []
    for _ in range(iters):
        gains.append(gain(r, dvec, lam))
        v = np.maximum(r @ dvec - lam, 0.0) @ r
        if np.linalg.norm(v) == 0:
            break
        dvec = v / np.linalg.norm(v)
    return dvec, gains


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 20), d=st.integers(1, 5),
       K=st.integers(1, 4), lam=st.floats(0.02, 1.0),
       codes=st.sampled_from(["optimal", "arbitrary"]))
def test_new_atom_along_one_residual_drops_loss_exactly(seed, N, d, K, lam, codes) -> None:
    # THEORY §3: for ‖r_n‖ > λ, the atom u = r_n/‖r_n‖ with code ‖r_n‖ − λ on point n alone
    # lowers L by exactly (‖r_n‖ − λ)²/(2N), for ANY current codes. Measured by building the
    # K+1-atom Dictionary and evaluating dictopt's objective; then with the optimal codes of
    # the new atom on every point the drop is G(u) ≥ that, and re-optimising all K+1 codes
    # drops it at least as much again.
    rng, x, dic, A, r = _instance(seed, N, d, K, lam, codes)
    xt = torch.as_tensor(x)
    norms = np.linalg.norm(r, axis=1)
    n = int(norms.argmax())
    if norms[n] <= lam:
        event("no residual above λ")
        return
    event("residual above λ")
    u = r[n] / norms[n]
    big = _extend(dic, u)
    base = objective(dic, xt, A).loss
    new = torch.zeros(N, 1, dtype=torch.float64)
    new[n, 0] = norms[n] - lam
    one = objective(big, xt, torch.cat([A, new], dim=1)).loss
    assert abs((base - one) - (norms[n] - lam) ** 2 / (2 * N)) <= 1e-12 * (1 + base)
    c = torch.as_tensor(np.maximum(r @ u - lam, 0.0))[:, None]
    many = objective(big, xt, torch.cat([A, c], dim=1)).loss
    assert abs((base - many) - gain(r, u, lam)) <= 1e-12 * (1 + base)
    assert gain(r, u, lam) >= (norms[n] - lam) ** 2 / (2 * N) * (1 - 1e-12)
    # (d·r_n − λ)₊ are the optimal codes of the new atom with the rest fixed: perturbing them
    # (keeping them ≥ 0) never helps.
    pert = (c + torch.as_tensor(rng.normal(size=(N, 1))) * 0.05).clamp_min(0)
    assert objective(big, xt, torch.cat([A, pert], dim=1)).loss >= many - 1e-12
    # Re-optimising every code of the K+1 dictionary drops the loss by at least G(u).
    full = objective(big, xt, big.optimal_codes(xt)).loss
    assert full <= many + 1e-9


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 30), d=st.integers(1, 5),
       K=st.integers(1, 4), lam=st.floats(0.02, 1.0),
       codes=st.sampled_from(["optimal", "arbitrary"]))
def test_checker_capacity_summary_and_its_bounds(seed, N, d, K, lam, codes) -> None:
    # The checker reports points_over_lam = #{‖r_n‖ > λ}, total_gain = (1/2N) Σ (‖r_n‖ − λ)₊²
    # and max_gain = max_n (‖r_n‖ − λ)₊²/(2N) (recomputed here with numpy). For every unit d,
    # G(d) ≤ total_gain (d·r_n ≤ ‖r_n‖); the best single new atom G* satisfies
    # max_gain ≤ G* ≤ total_gain, with G* = total_gain when all residuals above λ share a ray.
    rng, x, dic, A, r = _instance(seed, N, d, K, lam, codes)
    rep = check(dic, torch.as_tensor(x), codes=A)
    cap = rep.summary["capacity"]
    norms = np.linalg.norm(r, axis=1)
    excess = np.maximum(norms - lam, 0.0)
    assert cap["points_over_lam"] == int((norms > lam).sum())
    assert abs(cap["total_gain"] - (excess**2).sum() / (2 * N)) <= 1e-12 * (1 + cap["total_gain"])
    assert abs(cap["max_gain"] - (excess**2).max() / (2 * N)) <= 1e-12 * (1 + cap["max_gain"])
    for _ in range(5):
        g_rand = gain(r, unit_rows(rng.normal(size=(1, d)))[0], lam)
        assert g_rand <= cap["total_gain"] * (1 + 1e-12) + 1e-15
    if cap["points_over_lam"] == 0:
        return
    start = r[int(norms.argmax())]
    dstar, gains = best_new_atom(r, lam, start)
    tol = 1e-13 * (1 + gains[-1])  # rounding only
    assert all(g1 >= g0 - tol for g0, g1 in zip(gains, gains[1:], strict=False))  # ascent
    g_star = gains[-1]
    assert cap["max_gain"] - tol <= g_star <= cap["total_gain"] + tol
    # The best new atom satisfies C2 with its own codes: Σ_n c_n r_n ∥ d.
    cvec = np.maximum(r @ dstar - lam, 0.0)
    G = cvec @ r
    assert np.linalg.norm(G - (G @ dstar) * dstar) <= 1e-6 * (1 + np.linalg.norm(G))


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(3, 14), d=st.integers(1, 3),
       K=st.integers(1, 3), lam=st.floats(0.05, 1.0), with_limit=st.booleans())
def test_capacity_is_dual_feasibility(seed, N, d, K, lam, with_limit) -> None:
    # proofs/capacity.md §4: if C1 and C3 hold (here: the best bias and codes for fixed atoms,
    # by cvxpy), then with s = max(1, max_n ‖r_n‖/λ)
    #     0 ≤ L − L_∞ ≤ (1 − 1/s) [λ Σ ā_k + ½ (1 − 1/s) mean ‖r_n‖²],
    # so no residual above λ ⇔ L = L_∞ (the K-atom dictionary is optimal for every width).
    # Weak duality with ρ_n = (r_n − r̄)/s' is checked independently of C1 and C3.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)) * rng.uniform(0.2, 2.0, size=(N, 1))
    bound = wide_limit_bound(x, lam)
    atoms = unit_rows(rng.normal(size=(K, d)))
    if with_limit and bound.n_outside:
        atoms = np.concatenate([limit_dictionary(x, lam, bound=bound).dictionary.atoms.numpy(),
                                atoms])
    b, A, L = best_codes_and_bias(x, atoms, lam)
    r = x - b - A @ atoms
    rho = feasible_dual(r, lam)
    assert dual_value(x, rho) <= bound.value + 1e-12  # weak duality, any residuals
    assert L >= bound.value - 1e-9
    s = max(1.0, float(np.linalg.norm(r, axis=1).max()) / lam)
    gap_bound = (1 - 1 / s) * (lam * A.sum(axis=1).mean()
                               + 0.5 * (1 - 1 / s) * (r * r).sum(axis=1).mean())
    assert L - bound.value <= gap_bound + 1e-7
    if with_limit and bound.n_outside:
        event("contains the limit rays")
        assert abs(L - bound.value) <= 1e-7
        assert s <= 1 + 1e-5
    if L - bound.value > 1e-5:  # strictly above the wide limit: some residual exceeds λ
        event("strictly above L_inf")
        assert s > 1 + 1e-9
