"""Pass 2's sparse update (only the rows where ``a_i > 0``) equals the dense one exactly:
same ``H``, ``L``, co-activity and step bounds, on codes with ties at zero, atoms that are
always on (``L > 0``), atoms never inactive (``H = −∞``), empty chunks of support and
several chunks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check.stats import PassTwoStats


def _codes(seed: int, n: int, K: int, density: float, dtype: torch.dtype) -> torch.Tensor:
    g = np.random.default_rng(seed)
    a = g.exponential(size=(n, K)) * (g.random((n, K)) < density)
    a[:, 0] = g.exponential(size=n) + 0.1  # always on: L > 0 against every j
    a[:, 1] = 0.0  # dead in this chunk
    a[: n // 2, 2] = 1.5  # ties
    return torch.as_tensor(a, dtype=dtype)


def _run(chunks, pi, pj, H0, L0, sparse: bool, block: int) -> PassTwoStats:
    st2 = PassTwoStats(pi, pj, H0, L0, block_elements=block)
    for a in chunks:
        st2.update(a, 0.0, sparse=sparse)
    return st2


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 40),
    K=st.integers(3, 9),
    density=st.floats(0.0, 0.9),
    n_chunks=st.integers(1, 3),
    block=st.sampled_from([7, 64, 1 << 20]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_sparse_update_equals_dense(seed, n, K, density, n_chunks, block, dtype):
    chunks = [_codes(seed + c, n, K, density, dtype) for c in range(n_chunks)]
    g = torch.Generator().manual_seed(seed)
    pairs = torch.tensor([(i, j) for i in range(K) for j in range(K) if i != j])
    pairs = pairs[torch.randperm(len(pairs), generator=g)[: max(1, len(pairs) // 2)]]
    pi, pj = pairs[:, 0], pairs[:, 1]
    P = pi.numel()
    # start values as the pair plan gives them: some known extremes, some unknown
    def start(unknown: float) -> torch.Tensor:
        known = torch.rand(P, generator=g, dtype=torch.float64)
        return torch.where(torch.rand(P, generator=g) < 0.5, known, unknown)

    H0, L0 = start(-torch.inf), start(torch.inf)
    dense = _run(chunks, pi, pj, H0, L0, False, block)
    sparse = _run(chunks, pi, pj, H0, L0, True, block)
    for name in ("H", "L", "coact", "t_up", "t_lo"):
        assert torch.equal(getattr(dense, name), getattr(sparse, name)), name


def test_sparse_update_refuses_a_positive_tau():
    st2 = PassTwoStats(torch.tensor([0]), torch.tensor([1]), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="tau = 0"):
        st2.update(torch.ones(3, 2), 0.1, sparse=True)
