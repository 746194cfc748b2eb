"""The Gram formulation of the wide limit (proofs/wide_gram.md): the DNN relaxation is tight."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dictopt.validation import DictoptInputError
from dictopt.wide.gram import (
    MAX_GRAM_N,
    dual_certificate,
    gram_objective,
    gram_relaxation,
    limit_gram,
)
from dictopt.wide.limit_dictionary import limit_dictionary


def _data(seed: int, n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + 0.1


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_over_dictionary_matches_limit_loss(seed: int) -> None:
    # F(Q*, b*)/N with Q* the balanced Gram of the limit codes equals L_∞ exactly.
    x = _data(seed, 30, 3)
    ld = limit_dictionary(x, 0.4)
    assert abs(gram_objective(limit_gram(ld), x, ld.bound.bias, 0.4) - ld.bound.value) < 1e-12


def test_closed_form_is_min_over_dictionary() -> None:
    # For random nonnegative codes A, F(AᵀA) ≤ the balanced objective at any dictionary D, with
    # equality at the ridge solution D = Yᵀ Aᵀ (A Aᵀ + λI)⁻¹.
    g = torch.Generator().manual_seed(0)
    x = _data(0, 15, 3)
    b = torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64)
    lam = 0.7
    A = torch.rand(4, 15, generator=g, dtype=torch.float64)
    Y = (x - b).T  # [d, N]

    def balanced(D: torch.Tensor) -> float:
        rec = 0.5 * float(((Y - D @ A) ** 2).sum())
        return (rec + 0.5 * lam * (float((D**2).sum()) + float((A.sum(dim=1) ** 2).sum()))) / 15

    D_star = Y @ A.T @ torch.linalg.inv(A @ A.T + lam * torch.eye(4, dtype=torch.float64))
    F = gram_objective(A.T @ A, x, b, lam)
    assert abs(F - balanced(D_star)) < 1e-12
    for _ in range(5):
        assert balanced(D_star + 0.05 * torch.randn(3, 4, generator=g, dtype=torch.float64)) > F


@pytest.mark.parametrize("seed", range(4))
def test_dual_certificate_is_nonnegative_and_complementary(seed: int) -> None:
    x = _data(seed, 40, 4)
    ld = limit_dictionary(x, 0.3)
    M = dual_certificate(x, ld.bound)
    assert M.min() >= -1e-12
    assert abs((M * limit_gram(ld)).sum()) < 1e-9


@pytest.mark.parametrize("seed", range(2))
def test_dnn_relaxation_is_tight(seed: int) -> None:
    x = _data(seed, 12, 3)
    ld = limit_dictionary(x, 0.5)
    dnn = gram_relaxation(x, 0.5)
    assert abs(dnn.value - ld.bound.value) <= 1e-6 * ld.bound.value
    assert np.abs(dnn.Q - limit_gram(ld)).max() < 1e-3
    # The PSD-only relaxation (codes of either sign) is strictly looser: its infimum is 0.
    psd = gram_relaxation(x, 0.5, relaxation="psd")
    assert psd.value < 0.01 * ld.bound.value


def test_bad_input() -> None:
    with pytest.raises(DictoptInputError, match="N = "):
        gram_relaxation(np.ones((MAX_GRAM_N + 1, 2)), 1.0)
    with pytest.raises(DictoptInputError, match="relaxation"):
        gram_relaxation(np.ones((3, 2)), 1.0, relaxation="cp")
    with pytest.raises(DictoptInputError, match="lam"):
        gram_relaxation(np.ones((3, 2)), -1.0)
    with pytest.raises(DictoptInputError, match="Q"):
        gram_objective(np.eye(2), np.ones((3, 2)), np.zeros(2), 1.0)
