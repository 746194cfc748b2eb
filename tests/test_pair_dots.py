"""Blocked per-pair and per-atom work (issue #17: the gathers ``D[i] * D[j]`` of every known
C5 violation at once were the check's peak memory at K = 65,536, d = 2,304, and C2's split
of the gradients the next): the blocked dot products equal the unblocked ones bit for bit,
float64 rows on demand equal rows of a float64 copy, a check whose absorption statistics and
C2 split use one-row blocks writes the same report, byte for byte, and the
released gradients cannot be read by mistake."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.check.absorption as absorption
import dictopt.check.conditions as conditions
import dictopt.check.plan as plan
from dictopt.check import check
from dictopt.check.blocks import pair_dots
from dictopt.problem import Dictionary

F64 = torch.float64
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dictopt_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(1, 40), d=st.integers(1, 300),
       P=st.integers(0, 500), budget=st.integers(1, 5_000),
       dtype=st.sampled_from([torch.float32, torch.float64]), to64=st.booleans())
def test_blocked_pair_dots_are_the_unblocked_bits(seed, K, d, P, budget, dtype, to64):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(K, d, generator=g, dtype=dtype)
    i, j = torch.randint(K, (P,), generator=g), torch.randint(K, (P,), generator=g)
    if to64:
        D64 = D.to(F64)
        want = (D64[i] * D64[j]).sum(1)
        got = pair_dots(D, i, j, budget, dtype=F64)
    else:
        want = (D[i] * D[j]).sum(1)
        got = pair_dots(D, i, j, budget)
    assert got.dtype == want.dtype and got.shape == (P,)
    assert torch.equal(got, want)
    # and against the mathematics: each entry is the dot product of the two rows
    if P:
        np.testing.assert_allclose(got.double().numpy(),
                                   np.einsum("pd,pd->p", D[i].double(), D[j].double()),
                                   rtol=1e-4 if dtype == torch.float32 else 1e-12, atol=1e-4)


def test_pair_dots_refuses_a_bad_budget():
    D = torch.eye(3)
    with pytest.raises(ValueError, match="budget"):
        pair_dots(D, torch.tensor([0]), torch.tensor([1]), 0)


def test_float64_rows_on_demand_are_the_rows_of_a_float64_copy():
    D = torch.randn(7, 5, dtype=torch.float32)
    rows = absorption._RowsF64(D)
    for idx in (3, [4, 0, 4], torch.tensor([6, 1])):
        got = rows[idx]
        assert got.dtype == F64 and torch.equal(got, D.to(F64)[idx])


def _world(seed: int, K: int, N: int, d: int):
    g = np.random.default_rng(seed)
    D = g.standard_normal((K, d))
    D[1] = D[0] + 0.3 * g.standard_normal(d)  # a close pair: absorption candidates
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = g.exponential(size=(N, K)) * (g.random((N, K)) < 0.2)
    A[:, 0::2][:, : K // 2] *= A[:, 1::2][:, : K // 2] > 0  # atom 2t fires only with 2t + 1
    x = A @ D + 0.2 + 0.01 * g.standard_normal((N, d))
    dic = Dictionary(atoms=torch.tensor(D, dtype=torch.float32),
                     bias=torch.full((d,), 0.2, dtype=torch.float32), lam=0.05)
    return dic, torch.tensor(x, dtype=torch.float32), torch.tensor(A, dtype=torch.float32)


def _checked(dic, x, A, with_conditions=False):
    """The report of a check on ``A``'s codes, with the plan its planner made (and the C1–C4
    violations, whose moves the report rounds)."""
    calls, conds = [], []
    real, real_conditions = plan.decide_pairs, conditions.atom_conditions

    def recorded(*a, **k):
        calls.append(real(*a, **k))
        return calls[-1]

    def recorded_conditions(*a, **k):
        conds.append(real_conditions(*a, **k))
        return conds[-1]

    with pytest.MonkeyPatch.context() as m:
        m.setattr("dictopt.check.checker.decide_pairs", recorded)
        m.setattr("dictopt.check.checker.atom_conditions", recorded_conditions)
        rep = check(dic, x, codes=A, lam=0.05, hull=False, amortisation="off", chunk_size=17)
    return (rep, calls[0], conds[0][0]) if with_conditions else (rep, calls[0])


def _rotations(violations):
    """``(k, step, u)`` of the C2 rotations, ``u`` exact."""
    return [(v.i, v.step, v.move.u) for v in violations if v.label == "rotation"]


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(12, 40), N=st.integers(20, 80),
       d=st.sampled_from([8, 33]))
def test_one_pair_blocks_write_the_same_report(seed, K, N, d):
    dic, x, A = _world(seed, K, N, d)
    out, known, rotations = [], [], []
    for budget in (None, 1):
        with pytest.MonkeyPatch.context() as m:
            if budget is not None:  # one pair per block: every block boundary is exercised
                m.setattr(absorption, "pair_dots", functools.partial(pair_dots, budget=budget))
                m.setattr(conditions, "_c2_split",  # C2's split: one atom per block
                          functools.partial(conditions._c2_split, budget=budget))
            rep, pairs, conds = _checked(dic, x, A, with_conditions=True)
        out.append(golden.render(rep))
        known.append(int(pairs.known.i.numel()))
        rotations.append(_rotations(conds))
    assert known[0] == known[1]
    assert out[0] == out[1]
    assert len(rotations[0]) == len(rotations[1]) > 0
    for (k, t, u), (k2, t2, u2) in zip(*rotations, strict=True):
        assert (k, t) == (k2, t2) and torch.equal(u, u2)


def test_the_world_has_known_pair_violations():
    """The end-to-end test above is not vacuous: its worlds have known C5 violations (whose
    cosines the planner computes in row slices, as ``pair_dots`` does)."""
    _, pairs = _checked(*_world(0, 30, 60, 8))
    assert pairs.known.i.numel() > 1


def test_released_gradients_cannot_be_read():
    from dictopt.check.stats import PassOneStats

    st1 = PassOneStats(3, 2, 0.1, 2, torch.device("cpu"))
    st1.n = 1
    assert st1.G.shape == (3, 2)
    st1.release_gradients()
    with pytest.raises(RuntimeError, match="released"):
        _ = st1.G
