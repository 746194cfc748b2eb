"""proofs/canonical_form.md: rescaling and permutation invariance, zero-norm atoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt import Dictionary, DictoptInputError, objective
from dictopt.check.reference import brute_force
from tests.proofs._common import instance, loss


def _raw(seed: int):
    """A raw decoder with arbitrary positive atom norms and raw codes ``f ≥ 0``."""
    rng = np.random.default_rng(seed)
    N, K, d = int(rng.integers(3, 30)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    W = rng.standard_normal((K, d)) * rng.uniform(1e-3, 1e3, (K, 1))
    f = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 0.6)
    b = rng.standard_normal(d)
    x = rng.standard_normal((N, d)) * 3
    return x, W, f, b


def _raw_loss(x, W, f, b, lam):
    """The SAELens-style loss: ½ squared error plus L1 weighted by decoder norm."""
    r = x - f @ W - b
    return float(0.5 * (r * r).sum(1).mean() + lam * (f * np.linalg.norm(W, axis=1)).sum(1).mean())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), lam=st.floats(1e-3, 10.0),
       log_c=st.lists(st.floats(-6, 6), min_size=5, max_size=5))
def test_rescaling_orbit_is_one_canonical_point(seed, lam, log_c):
    """(W diag c, f / c) is the same raw model for every c > 0: the reconstruction and the
    weighted loss are constant on the orbit, and from_decoder maps the whole orbit to the same
    canonical atoms d_k = W_k/‖W_k‖ and codes ‖W_k‖ f_k (computed here independently)."""
    x, W, f, b = _raw(seed)
    K = W.shape[0]
    c = np.exp(np.asarray(log_c[:K]))
    W2, f2 = W * c[:, None], f / c
    assert np.allclose(f2 @ W2, f @ W, rtol=1e-12, atol=1e-9)
    assert _raw_loss(x, W2, f2, b, lam) == pytest.approx(_raw_loss(x, W, f, b, lam), rel=1e-10)
    s = np.linalg.norm(W, axis=1)
    D_np, A_np = W / s[:, None], f * s
    for Wx, fx in ((W, f), (W2, f2)):
        dic = Dictionary.from_decoder(Wx, b, lam=lam)
        codes = fx * dic.code_scale.numpy()
        np.testing.assert_allclose(dic.atoms.numpy(), D_np, rtol=0, atol=1e-12)
        np.testing.assert_allclose(codes, A_np, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dic.decoder.numpy(), Wx, rtol=1e-12)
        # the canonical loss (library) equals the raw weighted loss (numpy)
        got = objective(dic, x, torch.as_tensor(codes)).loss
        assert got == pytest.approx(_raw_loss(x, W, f, b, lam), rel=1e-10)
    assert loss(x, A_np, D_np, b, lam) == pytest.approx(_raw_loss(x, W, f, b, lam), rel=1e-10)


def test_unweighted_l1_is_not_invariant_so_it_has_no_minimiser():
    """Why the penalty must be weighted by decoder norm: with a plain L1 penalty the loss
    strictly decreases along the orbit c → ∞ (codes shrink, reconstruction fixed)."""
    x, W, f, b = _raw(3)
    f[0, 0] = 1.0  # at least one active code
    lam = 0.5

    def plain(c):
        r = x - (f / c) @ (W * c) - b
        return float(0.5 * (r * r).sum(1).mean() + lam * (f / c).sum(1).mean())

    vals = [plain(c) for c in (1.0, 10.0, 100.0, 1e4)]
    assert all(b_ < a_ for a_, b_ in zip(vals, vals[1:], strict=False))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), has_bias=st.booleans(), pseed=st.integers(0, 10**6))
def test_permuting_atoms_permutes_every_verdict(seed, has_bias, pseed):
    """L(D P, b, A P) = L(D, b, A); every condition of THEORY §2 is a statement about labelled
    atoms, so the reference verdicts are permuted, not changed."""
    x, A, D, b, lam = instance(seed, has_bias)
    K = D.shape[0]
    perm = np.random.default_rng(pseed).permutation(K)
    Dp, Ap = D[perm], A[:, perm]
    assert loss(x, Ap, Dp, b, lam) == pytest.approx(loss(x, A, D, b, lam), rel=1e-12)
    r0 = brute_force(x, A, D, b, lam, 0.0, has_bias=has_bias)
    r1 = brute_force(x, Ap, Dp, b, lam, 0.0, has_bias=has_bias)
    inv = np.argsort(perm)  # new index of old atom k is inv[k]
    assert r1.c1 == {int(inv[k]) for k in r0.c1}
    assert r1.c4 == {int(inv[k]) for k in r0.c4}
    assert r1.c5_upper == {(int(inv[i]), int(inv[j])) for i, j in r0.c5_upper}
    assert r1.c5_lower == {(int(inv[i]), int(inv[j])) for i, j in r0.c5_lower}
    np.testing.assert_allclose(r1.tangential.numpy(), r0.tangential.numpy()[perm], atol=1e-12)
    Hp, H0 = r1.H.numpy(), r0.H.numpy()[np.ix_(perm, perm)]
    assert np.array_equal(np.isnan(Hp), np.isnan(H0))
    np.testing.assert_allclose(Hp[~np.isnan(Hp)], H0[~np.isnan(H0)], atol=0)


def test_zero_norm_atom_is_refused_and_dropping_it_changes_nothing():
    """A zero atom reconstructs nothing and its weighted penalty is λ·0·f = 0, so the raw loss
    equals the loss without it; it has no direction, so from_decoder refuses it (naming it)
    and the caller drops it."""
    x, W, f, b = _raw(7)
    W = np.vstack([W, np.zeros(W.shape[1])])
    f = np.hstack([f, np.full((f.shape[0], 1), 5.0)])
    with pytest.raises(DictoptInputError, match=f"atom {W.shape[0] - 1} is zero"):
        Dictionary.from_decoder(W, b, lam=0.3)
    dic = Dictionary.from_decoder(W[:-1], b, lam=0.3)
    codes = torch.as_tensor(f[:, :-1]) * dic.code_scale
    assert objective(dic, x, codes).loss == pytest.approx(_raw_loss(x, W, f, b, 0.3), rel=1e-12)
