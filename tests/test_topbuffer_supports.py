"""The top buffer read from the chunk's active list (row-major ``nonzero`` of ``a > 0``) holds
exactly what the dense update holds: the same values, row ids and supports of the buffered
rows (the supports are no longer read from a copy of the buffered rows of the codes)."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check.stats import TopBuffer


def _state(buf: TopBuffer) -> tuple[torch.Tensor, ...]:
    return buf.vals, buf.ids, buf.row_id, buf.row_col, buf.row_val


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(1, 12), m=st.integers(1, 5),
       sizes=st.lists(st.integers(1, 30), min_size=1, max_size=4),
       density=st.sampled_from([0.1, 0.4, 1.0]))
def test_active_list_update_equals_the_dense_update(seed, K, m, sizes, density):
    g = np.random.default_rng(seed)
    chunks = []
    for i, n in enumerate(sizes):
        a = g.exponential(size=(n, K)) * (g.random((n, K)) < density)
        if i == 0:  # every atom positive on its first m rows: no tie at zero in the buffers
            n = max(n, m)
            a = np.vstack([g.exponential(size=(m, K)) + 0.1, a])[:n]
        chunks.append(torch.tensor(a, dtype=torch.float32))
    sparse = TopBuffer(m, K, largest=True, device=torch.device("cpu"))
    dense = TopBuffer(m, K, largest=True, device=torch.device("cpu"))
    start = 0
    for a in chunks:
        rows, cols = (a > 0).nonzero(as_tuple=True)
        sparse.update(a, start, 0.0, active=(rows, cols, a[rows, cols]))
        dense.update(a, start, 0.0)
        start += a.shape[0]
        for u, v in zip(_state(sparse), _state(dense), strict=True):
            assert u.dtype == v.dtype and torch.equal(u, v)
