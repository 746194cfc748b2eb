"""Property tests of proofs/wide_attainment.md: the limit dictionary attains L_∞ at every
width K ≥ R, with rays counted from b*; fewer atoms than rays cannot attain it; a dictionary
of rays from any other bias pays f(b) > L_∞."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dictopt.problem import Dictionary, objective
from dictopt.wide.bound import wide_limit_bound
from dictopt.wide.limit_dictionary import limit_dictionary
from tests.proofs._maths import best_codes_and_bias, f_bias, grad_f, unit_rows

FAST = settings(max_examples=25, deadline=None)


def _data(seed: int, N: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, d)) * rng.uniform(0.1, 3.0, size=(N, 1)) + 0.3


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(2, 20), d=st.integers(1, 4),
       lam=st.floats(0.05, 1.0), extra=st.integers(0, 4))
def test_attained_at_every_width_at_least_R(seed, N, d, lam, extra) -> None:
    # Padding the limit dictionary (R atoms) with `extra` arbitrary atoms, including a copy of
    # a limit atom, keeps the optimum at L_∞: with the limit codes (zeros on the extra atoms)
    # the loss is L_∞ exactly, and the library's optimal lasso codes cannot go below L_∞ nor
    # (being optimal) above it. R ≤ n_outside ≤ N. Would fail if the limit dictionary did not
    # reach the bound, or if wider dictionaries could beat it.
    x = _data(seed, N, d)
    bound = wide_limit_bound(x, lam)
    if bound.n_outside == 0:
        return
    ld = limit_dictionary(x, lam, bound=bound)
    R = ld.dictionary.K
    assert R <= bound.n_outside <= N
    rng = np.random.default_rng(seed + 1)
    pad = unit_rows(rng.normal(size=(extra, d)))
    if extra:
        pad[0] = ld.dictionary.atoms[0].numpy()  # a tie: a duplicate of a limit atom
    atoms = np.concatenate([ld.dictionary.atoms.numpy(), pad])
    dic = Dictionary(atoms=torch.as_tensor(atoms), bias=ld.dictionary.bias, lam=lam)
    codes = torch.cat([ld.codes, torch.zeros(N, extra, dtype=torch.float64)], dim=1)
    xt = torch.as_tensor(x)
    assert abs(objective(dic, xt, codes).loss - bound.value) <= 1e-12 * max(1, bound.value)
    opt = objective(dic, xt, dic.optimal_codes(xt)).loss
    assert bound.value - 1e-12 <= opt <= bound.value + 1e-9 * max(1, bound.value)
    # Independently: per point the limit cost is h_λ(t_n), i.e. the loss equals f(b*).
    assert abs(f_bias(x, ld.dictionary.bias.numpy(), lam) - bound.value) <= 1e-12


@FAST
@given(seed=st.integers(0, 2**31 - 1), N=st.integers(4, 14), d=st.integers(2, 3),
       lam=st.floats(0.05, 0.5))
def test_fewer_atoms_than_rays_cannot_attain(seed, N, d, lam) -> None:
    # Equality case of the bound (proofs/wide_attainment.md §3): L = L_∞ forces b to minimise
    # f and every point outside the λ-ball to be coded along its own ray u_n(b) only. For
    # generic data b* is unique, so a dictionary missing one of the rays from b* stays strictly
    # above L_∞ even with the best bias and codes (computed here by cvxpy for fixed atoms).
    x = _data(seed, N, d)
    bound = wide_limit_bound(x, lam)
    if bound.n_outside == 0:
        return
    ld = limit_dictionary(x, lam, bound=bound)
    # drop the ray carrying the most code mass, replace it with a random atom
    k = int(ld.codes.sum(dim=0).argmax())
    if float(ld.codes[:, k].max()) < 0.1:
        return
    rng = np.random.default_rng(seed + 2)
    atoms = ld.dictionary.atoms.numpy().copy()
    atoms[k] = unit_rows(rng.normal(size=(1, d)))[0]
    if float(atoms[k] @ ld.dictionary.atoms[k].numpy()) > 0.99:
        return
    event("reached the comparison")
    _, _, best = best_codes_and_bias(x, atoms, lam)
    assert best > bound.value + 1e-7


@FAST
@given(seed=st.integers(0, 2**31 - 1), n_rays=st.integers(2, 5), per_ray=st.integers(2, 8),
       d=st.integers(2, 5), lam=st.floats(0.05, 0.5))
def test_rays_are_counted_from_b_star(seed, n_rays, per_ray, d, lam) -> None:
    # Data on rays from b0 (x = b0 + s u_c, s > λ). The ground-truth dictionary (the ray
    # directions, bias b0, codes s − λ) costs exactly f(b0) (one atom per ray from b0), so it
    # is optimal iff b0 minimises f, i.e. iff ∇f(b0) = −(1/N) Σ_c u_c Σ_{n∈c} λ = 0. Unbalanced
    # rays give ∇f(b0) ≠ 0, hence f(b0) > L_∞ and the limit dictionary needs its own rays,
    # counted from b* ≠ b0.
    rng = np.random.default_rng(seed)
    U = unit_rows(rng.normal(size=(n_rays, d)))
    b0 = rng.normal(size=d)
    s = rng.uniform(lam * 1.5, 3.0, size=(n_rays, per_ray))
    x = np.concatenate([b0 + s[c][:, None] * U[c] for c in range(n_rays)])
    lab = np.repeat(np.arange(n_rays), per_ray)
    truth = Dictionary(atoms=torch.as_tensor(U), bias=torch.as_tensor(b0), lam=lam)
    codes = np.zeros((x.shape[0], n_rays))
    codes[np.arange(x.shape[0]), lab] = s.reshape(-1) - lam
    L_truth = objective(truth, torch.as_tensor(x), torch.as_tensor(codes)).loss
    assert abs(L_truth - f_bias(x, b0, lam)) <= 1e-12 * max(1, L_truth)
    g0 = grad_f(x, b0, lam)
    assert np.allclose(g0, -lam * per_ray * U.sum(axis=0) / x.shape[0], atol=1e-12)
    bound = wide_limit_bound(x, lam)
    assert bound.value <= L_truth + 1e-12
    if np.linalg.norm(g0) > 1e-3 * lam:  # unbalanced: b0 is not the minimiser
        assert bound.value < L_truth - 1e-12
        assert float(np.linalg.norm(bound.bias.numpy() - b0)) > 1e-9
