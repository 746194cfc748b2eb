"""The canonical problem: canonicalisation, objective, explained variance, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt import Dictionary, DictoptInputError, evaluate, explained_variance, objective
from dictopt.data.sources import ArraySource
from dictopt.problem import ExplainedVariance, residuals


def _random_problem(seed: int, n: int = 40, k: int = 6, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(k, d, generator=g, dtype=torch.float64) * (
        0.2 + 3 * torch.rand(k, 1, generator=g, dtype=torch.float64)
    )
    f = torch.relu(torch.randn(n, k, generator=g, dtype=torch.float64))
    b = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return W, f, b, x


@given(seed=st.integers(0, 10_000), lam=st.floats(1e-3, 10.0))
@settings(max_examples=30, deadline=None)
def test_canonicalisation_preserves_reconstruction_and_weighted_l1_loss(seed, lam):
    """THEORY §1: d_k = W_k/s_k, a_k = s_k f_k leaves x̂ unchanged and turns the
    decoder-norm-weighted L1 penalty into the canonical one: the losses are equal."""
    W, f, b, x = _random_problem(seed)
    D = Dictionary.from_decoder(W, b, lam=lam)
    codes = f * D.code_scale
    assert torch.allclose(D.decode(codes), f @ W + b, atol=1e-12)
    s = W.norm(dim=1)
    raw_loss = (0.5 * ((x - f @ W - b) ** 2).sum(1) + lam * (f * s).sum(1)).mean()
    assert math.isclose(objective(D, x, codes).loss, float(raw_loss), rel_tol=1e-12)
    assert torch.allclose(D.atoms.norm(dim=1), torch.ones(D.K, dtype=torch.float64))


class _ScaleEncoder:
    """A raw encoder returning fixed codes, to test that code_scale is applied."""

    architecture = "test-fixed"

    def __init__(self, f):
        self.f = f

    def encode(self, x):
        return self.f[: x.shape[0]]

    def config(self):
        return {}

    def tensors(self):
        return {}


def test_encode_applies_code_scale():
    W, f, b, x = _random_problem(1)
    D = Dictionary.from_decoder(W, b, lam=0.5, encoder=_ScaleEncoder(f))
    assert torch.allclose(D.encode(x), f * W.norm(dim=1))
    assert torch.allclose(D.decode(D.encode(x)), f @ W + b)


def test_objective_matches_definition_by_hand():
    atoms = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    D = Dictionary(atoms, torch.tensor([1.0, 0.0], dtype=torch.float64), lam=0.5)
    x = torch.tensor([[3.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    a = torch.tensor([[2.0, 0.5], [0.0, 0.0]], dtype=torch.float64)
    # r_1 = (3,1) - (1,0) - (2,0.5) = (0, 0.5); r_2 = (0, 0)
    out = objective(D, x, a)
    assert out.reconstruction == pytest.approx(0.5 * 0.25 / 2)
    assert out.sparsity == pytest.approx(0.5 * 2.5 / 2)
    assert out.loss == pytest.approx(out.reconstruction + out.sparsity)
    assert out.l0 == pytest.approx(1.0)
    assert torch.allclose(residuals(D, x, a)[0], torch.tensor([0.0, 0.5], dtype=torch.float64))


def test_explained_variance_pinned_cases():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 7)) * np.arange(1, 8) + 5.0
    assert explained_variance(x, x) == 1.0
    mean = np.broadcast_to(x.mean(0), x.shape)
    assert explained_variance(x, mean) == pytest.approx(0.0, abs=1e-12)
    # Predicting zeros for data with a large offset is worse than the mean: negative.
    assert explained_variance(x, np.zeros_like(x)) < 0
    # Half the centred signal: EV = 1 - 1/4.
    assert explained_variance(x, mean + 0.5 * (x - mean)) == pytest.approx(0.75)


@given(n=st.integers(2, 60), split=st.integers(1, 59), seed=st.integers(0, 1000))
@settings(max_examples=40, deadline=None)
def test_explained_variance_merges_exactly(n, split, seed):
    split = min(split, n - 1)
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.normal(size=(n, 3)) + 10.0)
    y = torch.as_tensor(rng.normal(size=(n, 3)))
    whole = ExplainedVariance(3)
    whole.update(x, y)
    left, right = ExplainedVariance(3), ExplainedVariance(3)
    left.update(x[:split], y[:split])
    right.update(x[split:], y[split:])
    left.merge(right)
    assert left.value == pytest.approx(whole.value, rel=1e-10, abs=1e-10)


def test_evaluate_streams_to_the_same_loss_as_one_batch():
    W, f, b, x = _random_problem(3, n=101)
    D = Dictionary.from_decoder(W, b, lam=0.3, encoder=_FullEncoder(f, x))
    whole = objective(D, x, D.encode(x))
    streamed = evaluate(D, ArraySource(x, chunk_size=7))
    for a, b_ in zip(whole, streamed, strict=True):
        assert a == pytest.approx(b_, rel=1e-12)


class _FullEncoder:
    """Looks rows up by value so that chunked calls return the matching codes."""

    architecture = "test-lookup"

    def __init__(self, f, x):
        self.f, self.x = f, x

    def encode(self, xb):
        idx = [int(torch.nonzero((self.x == row).all(dim=1))[0]) for row in xb]
        return self.f[idx]

    def config(self):
        return {}

    def tensors(self):
        return {}


@pytest.mark.parametrize(
    "atoms, match",
    [
        ([[1.0, 0.0], [0.0, 0.0]], "atom 1 is zero"),
        ([[2.0, 0.0], [0.0, 1.0]], "not canonical"),
        ([[1.0, float("nan")]], "row 0"),
        ([1.0, 0.0], "2-D"),
        (np.zeros((0, 3)), "empty"),
    ],
)
def test_bad_atoms_are_named(atoms, match):
    with pytest.raises(DictoptInputError, match=match):
        Dictionary(atoms, np.zeros(np.asarray(atoms).shape[-1] if np.ndim(atoms) else 1), lam=1.0)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_bad_lambda(lam):
    with pytest.raises(DictoptInputError, match="lam"):
        Dictionary(np.eye(2), np.zeros(2), lam=lam)


def test_bad_bias_and_batches():
    with pytest.raises(DictoptInputError, match="bias"):
        Dictionary(np.eye(2), np.zeros(3), lam=1.0)
    D = Dictionary(np.eye(3), np.zeros(3), lam=1.0)
    with pytest.raises(DictoptInputError, match="transposed"):
        D.prepare_batch(np.zeros((3, 5)))
    x = np.zeros((5, 3))
    x[3, 1] = np.inf
    with pytest.raises(DictoptInputError, match="row 3"):
        D.prepare_batch(x)
    with pytest.raises(DictoptInputError, match="nonnegative"):
        objective(D, np.zeros((2, 3)), -np.ones((2, 3)))
    with pytest.raises(DictoptInputError, match="zero"):
        Dictionary.from_decoder(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_optimal_codes_need_lambda():
    D = Dictionary(np.eye(2), np.zeros(2))
    with pytest.raises(DictoptInputError, match="λ"):
        D.optimal_codes(np.ones((1, 2)))
    assert D.with_lam(0.1).lam == 0.1
