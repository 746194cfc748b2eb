"""Width sweeps against L_∞: the bound is below every run, reached once every ray owns an atom."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dictopt.data.worlds import make_world
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError
from dictopt.wide.limit_dictionary import limit_dictionary
from dictopt.wide.sweep import check_widths, sweep


def truncated_limit_fit(x, *, K, lam, seed, progress, init=None, **_):
    """Test double: the K limit rays carrying the most code mass (or ``init`` unchanged)."""
    if init is not None:
        return init
    ld = limit_dictionary(x, lam)
    order = torch.argsort(ld.codes.sum(dim=0), descending=True)[:K]
    return Dictionary(atoms=ld.dictionary.atoms[order], bias=ld.dictionary.bias, lam=lam)


def test_sweep_mechanics_with_exact_fit(tmp_path) -> None:
    w = make_world("rays", n=30, d=4, n_rays=3, seed=0)
    lam = 0.2
    res = sweep(w.x, [1, 2, 4, 8, 16, 30], [0], lam, truth=w.atoms, fit=truncated_limit_fit)
    assert res.n_rays <= res.n_outside <= 30
    for row in res.rows:
        assert res.l_inf <= row.best + 1e-12
        assert row.split_counts is not None and len(row.split_counts) == 3
    gaps = [row.gap for row in res.rows]
    assert all(b <= a + 1e-12 for a, b in zip(gaps, gaps[1:], strict=False))
    for row in res.rows:
        assert row.attained == (row.K >= res.n_rays)
        if row.K >= res.n_rays:
            assert row.ray_ownership == 1.0 and row.c5_violations == 0
    data = json.loads(res.to_json(tmp_path).read_text())
    assert {"l_inf", "bias", "rows"} <= set(data)
    assert len(data["rows"]) == 6 and data["rows"][0]["K"] == 1


def test_bad_widths_and_seeds() -> None:
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(DictoptInputError, match="increasing"):
        check_widths([2, 2, 4])
    with pytest.raises(DictoptInputError, match="increasing"):
        check_widths([4, 2])
    with pytest.raises(DictoptInputError, match="widths"):
        check_widths([0, 2])
    with pytest.raises(DictoptInputError, match="exceeds N"):
        sweep(x, [2, 11], [0], 0.1, fit=truncated_limit_fit)
    with pytest.raises(DictoptInputError, match="seeds"):
        sweep(x, [2], [], 0.1, fit=truncated_limit_fit)
    with pytest.raises(DictoptInputError, match="lam"):
        sweep(x, [2], [0], -0.1, fit=truncated_limit_fit)
    with pytest.raises(DictoptInputError, match="non-empty"):
        sweep(np.zeros((0, 2)), [2], [0], 0.1, fit=truncated_limit_fit)


def test_classical_sweep_bound_and_attainment() -> None:
    w = make_world("rays", n=24, d=4, n_rays=3, seed=1)
    lam = 0.3
    res = sweep(w.x, [1, 3, 24], [0, 1], lam, truth=w.atoms, fit_options={"max_iter": 300})
    for row in res.rows:
        for loss in row.losses:
            assert res.l_inf <= loss + 1e-10
    bests = [row.best for row in res.rows]
    assert bests[-1] < bests[0]
    last = res.rows[-1]
    assert last.K >= res.n_outside
    assert last.limit_init_loss is not None
    assert abs(last.limit_init_loss - res.l_inf) <= 1e-6 * res.l_inf
    assert last.attained
