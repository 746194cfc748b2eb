"""Repair's reuse of work is exact: a trial move's codes re-solved only on the rows the move
can change equal the exact coder's codes on every row, and a hull basis held across checks
gives the same hull verdicts as the column-generation LP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances
from dictopt.check.hull import HullBasis, hull_distance, joint_hull
from dictopt.check.repair import SolvedCodes, changed_atoms, solve_after_move
from dictopt.data.worlds import make_world
from dictopt.lasso import solve_codes
from dictopt.problem import Dictionary, objective

F64 = torch.float64


def unit(rows: np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(rows, dtype=F64)
    return t / t.norm(dim=1, keepdim=True)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    N=st.integers(5, 120),
    d=st.integers(2, 9),
    K=st.integers(2, 10),
    lam=st.floats(0.02, 0.5),
    n_moved=st.integers(0, 2),
    size=st.floats(1e-4, 1.0),
    chunks=st.integers(1, 3),
)
def test_trial_codes_from_the_changed_rows_equal_solving_every_row(
    seed, N, d, K, lam, n_moved, size, chunks
):
    rng = np.random.default_rng(seed)
    atoms = unit(rng.normal(size=(K, d)))
    bias = torch.as_tensor(rng.normal(scale=0.1, size=d), dtype=F64)
    x = torch.as_tensor(rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 0.4),
                        dtype=F64) @ atoms + bias + 0.05 * torch.as_tensor(
                            rng.normal(size=(N, d)), dtype=F64)
    old = Dictionary(atoms=atoms, bias=bias, lam=lam)
    data = list(torch.tensor_split(x, chunks))
    held_codes = [solve_codes(atoms, c, lam, bias=bias).codes for c in data]
    held = SolvedCodes(objective(old, x, torch.cat(held_codes)).loss, held_codes, data)
    moved = torch.as_tensor(rng.choice(K, size=min(n_moved, K), replace=False), dtype=torch.long)
    new_atoms = atoms.clone()
    new_atoms[moved] = unit(atoms[moved].numpy() + size * rng.normal(size=(moved.numel(), d)))
    new = Dictionary(atoms=new_atoms, bias=bias, lam=lam)
    assert changed_atoms(new, old).tolist() == sorted(moved.tolist())
    got = solve_after_move(new, old, held)
    if 2 * moved.numel() > K:
        assert got is None
        return
    assert got is not None
    full = solve_codes(new_atoms, x, lam, bias=bias).codes  # every row, from zero
    assert got.loss == pytest.approx(objective(new, x, full).loss, rel=0, abs=1e-9)
    assert torch.cat(got.codes).sub(full).abs().max() < 1e-5
    # and it is the loss of its own codes, summed as evaluate sums it
    assert got.loss == pytest.approx(objective(new, x, torch.cat(got.codes)).loss, abs=1e-12)


def test_a_moved_bias_solves_every_row():
    w = make_world("hierarchy", seed=0, n=50, d=8, n_roots=2, branching=2)
    d = w.truth(0.05)
    shifted = Dictionary(atoms=d.atoms, bias=d.bias + 1e-3, lam=0.05)
    held = SolvedCodes(0.0, [torch.zeros(50, d.K, dtype=F64)], [w.x])
    assert changed_atoms(shifted, d) is None
    assert solve_after_move(shifted, d, held) is None


def lp_distance(A: torch.Tensor, k: int, v: np.ndarray, tau: float) -> float:
    off = A[:, k] <= tau
    J = [j for j in range(A.shape[1]) if j != k]
    return hull_distance(v, np.unique(A[off][:, J].numpy(), axis=0))[0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-9, 1e-2), steps=st.integers(1, 4),
       batch=st.booleans())
def test_a_held_hull_basis_gives_the_verdicts_of_the_lp(seed, scale, steps, batch):
    """Perturb the codes of a world step by step (as repair's rounds do) and check each step
    with and without a held basis: same violations, same gaps; every atom the basis passes
    has an LP distance within the threshold (with and without the batched weights first)."""
    compare_with_and_without_basis(seed, scale, steps, batch)


def test_a_held_hull_basis_saves_lps_after_small_changes():
    """The basis saves LPs where the LP decides (without the batched weights, which pass
    these atoms without a basis)."""
    basis = compare_with_and_without_basis(0, 1e-6, 2, batch=False)
    assert basis.reused > 0


def compare_with_and_without_basis(seed: int, scale: float, steps: int,
                                   batch: bool) -> HullBasis:
    w = make_world("hierarchy", seed=seed % 7, n=300)
    d = w.truth(0.05)
    rng = np.random.default_rng(seed)
    A = torch.as_tensor(w.codes, dtype=F64)
    tol = Tolerances(tau=0.0)
    basis = HullBasis()
    for _ in range(steps + 1):
        abar = A.mean(0)
        before = basis.reused
        held = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol, duals="working_set", basis=basis,
                          batch=batch)
        fresh = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol, duals="working_set", batch=batch)
        assert held.tested == fresh.tested
        assert [(v.j, v.detail["gap"]) for v in held.violations] == [
            (v.j, v.detail["gap"]) for v in fresh.violations]
        if not batch:  # (the batch's shared rows depend on which atoms it is given)
            assert held.lp_solves <= fresh.lp_solves
        # every atom tested is passed by the basis, by batched weights or decided by an LP
        assert basis.reused - before + len(held.certified) + held.lp_solves >= len(held.tested)
        assert not set(held.certified) & set(basis.rows)
        # the atoms the basis passed pass the LP on every point too
        gram = d.atoms.to(F64) @ d.atoms.to(F64).T
        for k in list(basis.rows):
            J = [j for j in range(A.shape[1]) if j != k]
            v = ((1 - gram[J, k]) * abar[J]).numpy()
            threshold = max(tol.hull_rel * (1 + np.abs(v).sum()),
                            tol.pair_rel * float(abar.max()) + tol.floor_rel * float(abar.max()))
            assert lp_distance(A, k, v, 0.0) <= threshold + 1e-9
        # the next round: codes move a little where they are positive (zeros stay zero)
        A = A * (1 + scale * torch.as_tensor(rng.normal(size=A.shape), dtype=F64)).clamp(min=0)
    return basis
