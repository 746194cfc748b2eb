"""Property tests of proofs/wide_limit.md: the bound L ≥ f(b) ≥ L_∞ step by step, convexity
and derivatives of f, the epigraph form, and the dual form of L_∞ (weak and strong duality).

Each test recomputes the mathematics with plain numpy (tests/proofs/_maths.py) and compares it
with the library (Dictionary/objective, dictopt.wide.bound).
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.problem import Dictionary, objective
from dictopt.wide.bound import bound_objective, huber, wide_limit_bound
from dictopt.wide.limit_dictionary import limit_dictionary
from tests.proofs._maths import dual_value, f_bias, feasible_dual, grad_f, unit_rows
from tests.proofs._maths import huber as np_huber

FAST = settings(max_examples=40, deadline=None)


def _atoms(rng: np.random.Generator, K: int, d: int, kind: str) -> np.ndarray:
    """Random unit atoms, with ties on purpose: duplicates, antipodal pairs, a single ray."""
    D = unit_rows(rng.normal(size=(K, d)))
    if kind == "duplicates" and K >= 2:
        D[1] = D[0]
    elif kind == "antipodal" and K >= 2:
        D[1] = -D[0]
    elif kind == "one_ray":
        D[:] = D[0]
    return D


def _codes(
    rng: np.random.Generator, x: np.ndarray, D: np.ndarray, b: np.ndarray, lam: float, kind: str
) -> np.ndarray:
    N, K = x.shape[0], D.shape[0]
    if kind == "dense":  # every atom active on every point
        return rng.uniform(0.01, 2.0, size=(N, K))
    if kind == "sparse":
        return rng.uniform(0, 2.0, size=(N, K)) * (rng.random((N, K)) < 0.4)
    if kind == "zero":
        return np.zeros((N, K))
    # "optimal": the exact lasso codes of the library
    dic = Dictionary(atoms=torch.as_tensor(D), bias=torch.as_tensor(b), lam=lam)
    return dic.optimal_codes(torch.as_tensor(x)).numpy()


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    N=st.integers(1, 15),
    d=st.integers(1, 4),
    K=st.integers(1, 6),
    lam=st.floats(0.05, 2.0),
    atom_kind=st.sampled_from(["random", "duplicates", "antipodal", "one_ray"]),
    code_kind=st.sampled_from(["dense", "sparse", "zero", "optimal"]),
)
def test_bound_chain_term_by_term(seed, N, d, K, lam, atom_kind, code_kind) -> None:
    # proofs/wide_limit.md §1: L − f(b) = (1/N) Σ_n (T1 + T2 + T3) with
    #   T1 = λ(Σ_k a_kn − ‖z_n‖)          ≥ 0  (triangle inequality, unit atoms, a ≥ 0)
    #   T2 = ½‖y_n − z_n‖² − ½(t_n − s_n)² ≥ 0  (reverse triangle inequality)
    #   T3 = ½(t_n − s_n)² + λ s_n − h(t_n) ≥ 0  (h is the min over s ≥ 0)
    # and f(b) ≥ L_∞. A negative term or a broken identity would refute the proof step.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)) * rng.uniform(0.1, 3.0, size=(N, 1))
    b = rng.normal(size=d) * 0.5
    D = _atoms(rng, K, d, atom_kind)
    A = _codes(rng, x, D, b, lam, code_kind)
    y = x - b
    z = A @ D
    t = np.linalg.norm(y, axis=1)
    s = np.linalg.norm(z, axis=1)
    T1 = lam * (A.sum(axis=1) - s)
    T2 = 0.5 * ((y - z) ** 2).sum(axis=1) - 0.5 * (t - s) ** 2
    T3 = 0.5 * (t - s) ** 2 + lam * s - np_huber(t, lam)
    scale = 1.0 + float(((y**2).sum(axis=1) + A.sum(axis=1)).max())
    assert T1.min() >= -1e-12 * scale
    assert T2.min() >= -1e-12 * scale
    assert T3.min() >= -1e-12 * scale
    dic = Dictionary(atoms=torch.as_tensor(D), bias=torch.as_tensor(b), lam=lam)
    L = objective(dic, torch.as_tensor(x), torch.as_tensor(A)).loss  # the library's loss
    fb = bound_objective(x, b, lam)
    assert abs(fb - f_bias(x, b, lam)) <= 1e-13 * scale
    assert abs((L - fb) - float((T1 + T2 + T3).mean())) <= 1e-12 * scale
    l_inf = wide_limit_bound(x, lam).value
    assert fb >= l_inf - 1e-12 * scale
    assert L >= l_inf - 1e-12 * scale


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(1, 12), d=st.integers(1, 4),
       lam=st.floats(0.05, 2.0), theta=st.floats(0.0, 1.0))
def test_f_is_convex_with_the_stated_gradient_and_hessian(seed, N, d, lam, theta) -> None:
    # proofs/wide_limit.md "Convexity and derivatives": a violated midpoint inequality, or a
    # gradient/Hessian that differs from finite differences, would refute the formulas that the
    # Newton solver and the C3 identification rely on.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)) * rng.uniform(0.1, 3.0, size=(N, 1))
    b1, b2 = rng.normal(size=d), rng.normal(size=d)
    mid = theta * b1 + (1 - theta) * b2
    assert f_bias(x, mid, lam) <= theta * f_bias(x, b1, lam) + (1 - theta) * f_bias(
        x, b2, lam
    ) + 1e-12
    # Gradient against central differences (f is C¹ with a 1-Lipschitz gradient, so the
    # error of the central difference is at most h).
    g = grad_f(x, b1, lam)
    h = 1e-6
    fd = np.array([
        (f_bias(x, b1 + h * e, lam) - f_bias(x, b1 - h * e, lam)) / (2 * h) for e in np.eye(d)
    ])
    assert np.abs(g - fd).max() <= 2e-6
    # ‖∇f‖ ≤ λ always (ψ ≤ λ): the solver's relative residual is ≤ 1.
    assert np.linalg.norm(g) <= lam * (1 + 1e-12)
    # Hessian: (1/N)(Σ_in I + Σ_out (λ/t)(I − u uᵀ)), PSD; compare with differences of ∇f.
    y = x - b1
    t = np.linalg.norm(y, axis=1)
    H = np.zeros((d, d))
    for yn, tn in zip(y, t, strict=True):
        if tn <= lam:
            H += np.eye(d)
        else:
            u = yn / tn
            H += (lam / tn) * (np.eye(d) - np.outer(u, u))
    H /= N
    assert np.linalg.eigvalsh(H).min() >= -1e-12
    if np.all(np.abs(t - lam) > 1e-3):  # away from the kink of ψ the Hessian exists
        hd = np.array([(grad_f(x, b1 + h * e, lam) - grad_f(x, b1 - h * e, lam)) / (2 * h)
                       for e in np.eye(d)])
        assert np.abs(H - hd).max() <= 1e-4


@FAST
@given(t=st.floats(0.0, 10.0), lam=st.floats(0.01, 5.0), s=st.floats(-5.0, 10.0),
       u=st.floats(0.0, 10.0))
def test_epigraph_form_gives_huber(t, lam, s, u) -> None:
    # min {½s² + λu : s + u ≥ t, u ≥ 0} = h_λ(t), attained at s = min(t, λ), u = (t − λ)₊;
    # every feasible (s, u) costs at least h_λ(t). The library's huber must agree.
    h = float(huber(torch.tensor(t, dtype=torch.float64), lam))
    assert abs(h - float(np_huber(t, lam))) <= 1e-12 * (1 + h)
    s0, u0 = min(t, lam), max(t - lam, 0.0)
    assert abs(0.5 * s0 * s0 + lam * u0 - h) <= 1e-12 * (1 + h)
    if s + u >= t:
        assert 0.5 * s * s + lam * u >= h - 1e-12 * (1 + h)


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(2, 25), d=st.integers(1, 4),
       lam=st.floats(0.05, 2.0))
def test_dual_form_weak_and_strong_duality(seed, N, d, lam) -> None:
    # proofs/wide_limit.md §"Dual form": L_∞ = max {(1/N) Σ ρ_n·x_n − ½‖ρ_n‖² : ‖ρ_n‖ ≤ λ,
    # Σ ρ_n = 0}. Every feasible ρ gives a value ≤ L_∞ (weak duality), and the residuals of
    # the limit dictionary are feasible and give exactly L_∞ (strong duality). A dual value
    # above L_∞ or a gap at the limit residuals would refute the derivation.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, d)) * rng.uniform(0.1, 3.0, size=(N, 1))
    bound = wide_limit_bound(x, lam)
    for _ in range(5):
        rho = feasible_dual(rng.normal(size=(N, d)) * rng.uniform(0, 2 * lam), lam)
        assert dual_value(x, rho) <= bound.value + 1e-12
    b = bound.bias.numpy()
    y = x - b
    t = np.linalg.norm(y, axis=1, keepdims=True)
    r = np.where(t <= lam, y, lam * y / np.maximum(t, lam))  # limit residuals
    assert np.linalg.norm(r, axis=1).max() <= lam * (1 + 1e-12)
    assert np.linalg.norm(r.mean(axis=0)) <= 1e-9 * lam  # Σρ = 0 is C3 = ∇f(b*) = 0
    assert abs(dual_value(x, r) - bound.value) <= 1e-9 * max(1.0, bound.value)
    if bound.n_outside:  # the limit dictionary's own residuals are these r
        ld = limit_dictionary(x, lam, bound=bound)
        r_lib = (torch.as_tensor(x) - ld.dictionary.decode(ld.codes)).numpy()
        # limit_dictionary merges points whose directions have cosine ≥ 1 − ray_tol (1e-9)
        # into one atom, so a point's residual may move by up to its code (t − λ)₊ times the
        # distance between unit vectors, √(2·ray_tol); apart from that they are these r.
        merge = np.maximum(t[:, 0] - lam, 0.0) * np.sqrt(2 * 1e-9) * (1 + 1e-6)
        assert (np.linalg.norm(r_lib - r, axis=1) <= 1e-9 + merge).all()
