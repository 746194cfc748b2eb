"""Repair that reuses work (held optimal codes, warm-started trial solves) takes the same
moves to the same losses as repair that solves every code from zero."""

from __future__ import annotations

import pytest

from dictopt.check.repair import repair
from dictopt.data.sources import ArraySource
from dictopt.data.worlds import make_world

LAM = 0.05


@pytest.mark.parametrize(("seed", "chunk_size"), [(0, None), (3, None), (0, 128)])
def test_held_codes_and_warm_starts_give_the_same_descent(seed, chunk_size):
    w = make_world("hierarchy", seed=seed, n=300, d=10, n_roots=2, branching=2, bias_norm=1.0)
    # in several chunks, the held data and the held check chunks must keep their order
    x = w.x if chunk_size is None else ArraySource(w.x, chunk_size=chunk_size)
    cold = repair(w.truth(LAM), x, max_rounds=6, code_budget_bytes=0)
    warm = repair(w.truth(LAM), x, max_rounds=6)
    assert len(cold.losses) > 2
    assert [m["conditions"] for m in warm.moves] == [m["conditions"] for m in cold.moves]
    assert [m["pairs"] for m in warm.moves] == [m["pairs"] for m in cold.moves]
    assert warm.losses == pytest.approx(cold.losses, rel=1e-9, abs=0)
    assert (warm.dictionary.atoms - cold.dictionary.atoms).abs().max() < 1e-7
    # the final reports agree on every count and on the loss
    assert warm.report.summary["counts"] == cold.report.summary["counts"]
    assert warm.report.summary["loss"] == pytest.approx(cold.report.summary["loss"], rel=1e-9)
    assert warm.report.summary["codes"] == cold.report.summary["codes"]
