"""End to end: a check whose planner sweeps (small blocks, so the sweep runs at test sizes)
writes the same report, byte for byte, as the row-block planner (``sweep=False``), on worlds
whose atoms are spread (most blocks decided by the sweep) or close (labels and neighbours:
most blocks form their own products)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.check.checker as checker
import dictopt.check.plan as plan
from dictopt.check import check
from dictopt.problem import Dictionary

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dictopt_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def _world(seed: int, K: int, N: int, d: int, n_dup: int, f32: bool):
    g = np.random.default_rng(seed)
    D = g.standard_normal((K, d))
    for t in range(n_dup):  # near-duplicates spread over the blocks
        D[(7 * t + 5) % K] = D[(11 * t + 2) % K] + 1e-3 * g.standard_normal(d)
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = g.exponential(size=(N, K)) * (g.random((N, K)) < 0.2)
    x = A @ D + 0.2 + 0.01 * g.standard_normal((N, d))
    dt = torch.float32 if f32 else torch.float64
    dic = Dictionary(atoms=torch.tensor(D, dtype=dt), bias=torch.full((d,), 0.2, dtype=dt),
                     lam=0.05)
    return dic, torch.tensor(x, dtype=dt), torch.tensor(A, dtype=dt)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(9, 60), N=st.integers(20, 120),
       d=st.sampled_from([8, 120]), n_dup=st.integers(0, 2), block=st.integers(2, 9),
       f32=st.booleans())
def test_the_report_is_the_row_block_planners(seed, K, N, d, n_dup, block, f32):
    dic, x, A = _world(seed, K, N, d, n_dup, f32)
    out = []
    for sweep in (True, False):
        with pytest.MonkeyPatch.context() as m:
            m.setattr(checker, "decide_pairs", functools.partial(plan.decide_pairs, sweep=sweep))
            rep = check(dic, x, codes=A, lam=0.05, hull=False, amortisation="off",
                        chunk_size=17, block=block)
        out.append(golden.render(rep))
    assert out[0] == out[1]


def test_the_sweep_runs_in_a_check(monkeypatch):
    """On a spread world the check's planner decides most blocks from the sweep (the report
    test above compares both planners there, not two runs of the same one)."""
    dic, x, A = _world(1, 48, 80, 120, 0, True)
    formed = []
    own = plan._classify_block
    monkeypatch.setattr(plan, "_classify_block", lambda *a, **k: formed.append(1) or own(*a, **k))
    check(dic, x, codes=A, lam=0.05, hull=False, amortisation="off", chunk_size=17, block=4)
    assert 1 <= len(formed) < 12 // 2
