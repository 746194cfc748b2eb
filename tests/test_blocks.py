"""Block sizes from a memory budget (issue #21): the budget holds, small arrays are one block,
and the blocked per-chunk statistics equal the unblocked ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check.absorption import absorption_start, absorption_update
from dictopt.check.blocks import column_block
from dictopt.check.stats import PassTwoStats, density


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 70_000), st.integers(1, 1 << 26))
def test_column_block_respects_the_budget(rows, cols, budget):
    w = column_block(rows, cols, budget)
    assert 1 <= w <= max(cols, 1)
    if rows * cols <= budget:
        assert w == max(cols, 1)  # small arrays: the computation they always ran
    else:
        # within the budget unless one column alone exceeds it; and no wider block fits
        assert rows * w <= budget or w == 1
        assert w == cols or rows * (w + 1) > budget


def test_column_block_refuses_a_bad_budget():
    with pytest.raises(ValueError, match="budget"):
        column_block(4, 4, 0)
    with pytest.raises(ValueError, match="negative"):
        column_block(-1, 4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(2, 30), st.integers(1, 200))
def test_blocked_absorption_sums_equal_the_whole_chunk(seed, n, K, budget):
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.random((n, K)) * (rng.random((n, K)) < 0.3), dtype=torch.float32)
    pi, pj = torch.triu_indices(K, K, 1)
    whole = absorption_start(pi, pj, K)
    absorption_update(whole, A)
    small = dataclasses.replace(absorption_start(pi, pj, K), dense_elements=budget)
    absorption_update(small, A)
    a = A.double().numpy()
    assert torch.equal(small.n_k, whole.n_k)
    assert torch.equal(small.n_k, torch.tensor((a > 0).sum(0), dtype=torch.float64))
    for name in ("s_k", "q_k", "co", "s_i_on_j", "q_j_on_i"):
        torch.testing.assert_close(getattr(small, name), getattr(whole, name),
                                   rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(small.q_k, torch.tensor((a * a).sum(0)), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 50), st.integers(2, 12))
def test_sparse_pass_two_matches_dense(seed, n, K):
    """The support lists formed once per chunk give the dense update's statistics."""
    rng = np.random.default_rng(seed)
    A = torch.tensor(rng.random((n, K)) * (rng.random((n, K)) < 0.2))
    pi, pj = (t.flatten() for t in torch.meshgrid(torch.arange(K), torch.arange(K),
                                                   indexing="ij"))
    keep = pi != pj
    pi, pj = pi[keep], pj[keep]
    H0 = torch.zeros(pi.numel(), dtype=torch.float64)
    L0 = A.amax(0)[pi].clone()
    dense, sparse = PassTwoStats(pi, pj, H0, L0), PassTwoStats(pi, pj, H0, L0)
    dense.update(A, 0.0, sparse=False)
    sparse.update(A, 0.0, sparse=True)
    for name in ("H", "L", "coact", "t_up", "t_lo"):
        assert torch.equal(getattr(sparse, name), getattr(dense, name)), name
    assert density(A, 0.0) == float((A > 0).double().mean())
