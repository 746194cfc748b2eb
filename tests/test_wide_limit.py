"""The explicit wide-limit dictionary attains L_∞ and satisfies C1–C5 (THEORY §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.problem import Dictionary, objective
from dictopt.validation import DictoptInputError
from dictopt.wide.bound import wide_limit_bound
from dictopt.wide.conditions import c5_violations, first_order_summary
from dictopt.wide.limit_dictionary import limit_dictionary


def _data(seed: int, n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) * 3
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale - 0.2


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), d=st.integers(1, 5),
       lam=st.floats(0.05, 1.5))
def test_limit_dictionary_attains_bound_and_is_stationary(seed, n, d, lam) -> None:
    x = _data(seed, n, d)
    bound = wide_limit_bound(x, lam)
    if bound.n_outside == 0:
        with pytest.raises(DictoptInputError, match="within"):
            limit_dictionary(x, lam, bound=bound)
        return
    ld = limit_dictionary(x, lam, bound=bound)
    assert ld.dictionary.K <= bound.n_outside
    loss = objective(ld.dictionary, x, ld.codes).loss
    assert abs(loss - bound.value) <= 1e-12 * max(1.0, bound.value)
    s = first_order_summary(ld.dictionary, x, ld.codes)
    assert s.c1 < 1e-10  # the codes are the optimal lasso codes (KKT)
    assert s.c2 < 1e-10
    assert s.c3 < 1e-8  # bias stationarity = the bound's residual
    assert s.c4 == 0
    assert s.c5 == 0


def test_codes_are_the_exact_lasso_codes() -> None:
    # Cross-check KKT by brute force: no single-entry change of the codes lowers the loss.
    x = _data(1, 25, 3)
    ld = limit_dictionary(x, 0.4)
    D, b, lam = ld.dictionary.atoms, ld.dictionary.bias, 0.4

    def point_loss(a: torch.Tensor, n: int) -> float:
        r = x[n] - b - a @ D
        return 0.5 * float(r @ r) + lam * float(a.sum())

    for n in range(25):
        base = point_loss(ld.codes[n], n)
        for k in range(ld.dictionary.K):
            for step in (1e-4, -1e-4):
                a = ld.codes[n].clone()
                a[k] = max(0.0, float(a[k]) + step)
                assert point_loss(a, n) >= base - 1e-15


def test_shared_rays_are_merged() -> None:
    # Points on 3 rays from the origin, symmetric so that b = 0: 3 atoms, not 30.
    g = torch.Generator().manual_seed(0)
    h = 3**0.5 / 2
    dirs = torch.tensor([[1.0, 0.0], [-0.5, h], [-0.5, -h]], dtype=torch.float64)
    mags = torch.rand(10, generator=g, dtype=torch.float64) + 1.0
    x = torch.cat([mags[:, None] * u for u in dirs])
    ld = limit_dictionary(x, 0.3)
    assert ld.dictionary.K == 3
    assert torch.allclose(ld.dictionary.bias, torch.zeros(2, dtype=torch.float64), atol=1e-9)
    assert abs(objective(ld.dictionary, x, ld.codes).loss - ld.bound.value) < 1e-12
    assert torch.allclose(ld.codes.sum(dim=1), torch.cat([mags, mags, mags]) - 0.3, atol=1e-9)


def test_c5_counter_flags_a_strict_hierarchy() -> None:
    # Atom 1 only fires with atom 0 (S_1 ⊆ S_0): H_10 = 0 < (1 − c) ā_1, a C5 violation.
    atoms = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    codes = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    count, worst = c5_violations(atoms, codes)
    assert count >= 1 and worst > 0
    # Mutually exclusive features are fine.
    ok = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    assert c5_violations(atoms, ok)[0] == 0


def test_limit_dictionary_passes_the_checker() -> None:
    # The full checker (C1–C5 and the joint hull, with its own tolerances) finds no violation:
    # the limit dictionary is a global minimiser, so every necessary condition must hold.
    check = pytest.importorskip("dictopt.check")
    x = _data(2, 40, 3)
    ld = limit_dictionary(x, 0.5)
    report = check.check(ld.dictionary, x, codes=ld.codes)
    assert all(v == 0 for v in report.summary["counts"].values()), report.summary["counts"]
    assert report.violations == []


def test_bad_input() -> None:
    x = _data(3, 10, 2)
    with pytest.raises(DictoptInputError, match="lam"):
        limit_dictionary(x, 0.0)
    bound = wide_limit_bound(x, 0.5)
    with pytest.raises(DictoptInputError, match="bound"):
        limit_dictionary(x, 0.6, bound=bound)
    d = Dictionary(atoms=np.eye(2), bias=np.zeros(2))
    with pytest.raises(DictoptInputError, match="λ"):
        first_order_summary(d, x, torch.zeros(10, 2))
