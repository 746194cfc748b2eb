"""Per-atom reductions a block at a time (:mod:`dictopt.check.columns`): the same bits as
torch's whole-array ``amax``/``vector_norm``/``topk``, ties included, and the same check report
whatever the block sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.check.columns as columns
from dictopt.check import check
from dictopt.check.columns import relu_column_stats, topk_columns
from dictopt.problem import Dictionary

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dictopt_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

DTYPES = st.sampled_from([torch.float32, torch.float64])


def _array(seed: int, rows: int, K: int, dtype: torch.dtype, ties: bool) -> torch.Tensor:
    """Random entries of mixed scales; with ``ties`` few distinct values (and many zeros)."""
    g = np.random.default_rng(seed)
    if ties:
        a = g.integers(0, 4, size=(rows, K)) * 0.25 * (g.random((rows, K)) < 0.4)
    else:
        a = g.standard_normal((rows, K)) * np.exp(3 * g.standard_normal(K))
    return torch.tensor(a, dtype=dtype)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 70), K=st.integers(1, 50),
       block=st.integers(1, 400), dtype=DTYPES, ties=st.booleans(),
       lam=st.sampled_from([0.0, 0.05, 0.7]))
def test_relu_column_stats_are_torchs_bits(seed, rows, K, block, dtype, ties, lam):
    g = _array(seed, rows, K, dtype, ties)
    v = (g - lam).clamp(min=0)
    top, norm = relu_column_stats(g.clone(), lam, block_elements=block)
    assert top.dtype == norm.dtype == dtype
    assert torch.equal(top, v.amax(0))
    assert torch.equal(norm, torch.linalg.vector_norm(v, dim=0))


def test_relu_column_stats_many_rows_of_a_wide_chunk():
    # thousands of sequential additions per column, blocks of a few rows: still the same bits
    g = _array(3, 3000, 700, torch.float32, ties=False)
    v = (g - 0.05).clamp(min=0)
    top, norm = relu_column_stats(g.clone(), 0.05, block_elements=4 * 700)
    assert torch.equal(top, v.amax(0))
    assert torch.equal(norm, torch.linalg.vector_norm(v, dim=0))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), rows=st.integers(1, 60), K=st.integers(1, 40),
       k=st.integers(1, 8), block=st.integers(1, 300), dtype=DTYPES, ties=st.booleans(),
       largest=st.booleans())
def test_topk_columns_is_torchs_topk(seed, rows, K, k, block, dtype, ties, largest):
    a = _array(seed, rows, K, dtype, ties)
    k = min(k, rows)
    want_v, want_i = a.topk(k, dim=0, largest=largest, sorted=True)
    got_v, got_i = topk_columns(a, k, largest=largest, block_elements=block)
    assert torch.equal(got_v, want_v)
    assert torch.equal(got_i, want_i)  # the same rows, ties broken the same way


def test_the_check_report_is_the_same_whatever_the_blocks(monkeypatch):
    g = np.random.default_rng(5)
    K, d, N = 40, 12, 300
    D = g.standard_normal((K, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = g.exponential(size=(N, K)) * (g.random((N, K)) < 0.15)
    x = A @ D + 0.01 * g.standard_normal((N, d))
    dic = Dictionary(atoms=torch.tensor(D, dtype=torch.float32),
                     bias=torch.zeros(d, dtype=torch.float32), lam=0.05)
    X = torch.tensor(x, dtype=torch.float32)

    def report() -> str:
        return golden.render(check(dic, X, codes="optimal", hull=False, amortisation="off",
                                   chunk_size=128))

    whole = report()
    monkeypatch.setattr(columns, "ROW_BLOCK_ELEMENTS", 3 * K)
    monkeypatch.setattr(columns, "COLUMN_BLOCK_ELEMENTS", 5 * 128)
    assert report() == whole
