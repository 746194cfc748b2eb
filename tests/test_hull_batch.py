"""The batched membership weights of the joint hull (dictopt.check.hullbatch) against the exact
LP on every inactive point: an atom is passed only with explicit convex weights within its
threshold, so the LP's distance is within it too; and the check's hull verdicts, distances,
gaps and directions are those of the column generation alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import Tolerances
from dictopt.check.hull import hull_distance, joint_hull
from dictopt.check.hullbatch import _hessians, _outer_products, certify_members
from dictopt.data.worlds import make_world

F64 = torch.float64


def random_codes(rng: np.random.Generator, N: int, K: int, density: float,
                 zero_rows: bool) -> np.ndarray:
    A = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < density)
    if zero_rows:
        A[rng.random(N) < 0.3] = 0.0
    else:  # no all-zero point: the hull has no origin
        A[np.arange(N), rng.integers(0, K, N)] += 0.1
    return A


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), N=st.integers(4, 120), K=st.integers(2, 16),
       density=st.floats(0.05, 0.8), zero_rows=st.booleans(),
       regime=st.sampled_from(["inside", "boundary", "random"]))
def test_every_atom_passed_is_within_its_threshold_by_the_lp(seed, N, K, density, zero_rows,
                                                            regime):
    """Random sparse codes; per atom a target inside its hull, on it (the threshold set to the
    LP's own distance, times 1 ± 1e-6) or anywhere. Every atom passed carries weights that
    check out, and the LP on every inactive point agrees that it passes."""
    rng = np.random.default_rng(seed)
    A = random_codes(rng, N, K, density, zero_rows)
    active = A > 0
    atoms = [k for k in range(K) if (~active[:, k]).any()]
    if not atoms:
        return
    V = np.zeros((len(atoms), K))
    thr = np.zeros(len(atoms))
    exact = {}
    for i, k in enumerate(atoms):
        J = [j for j in range(K) if j != k]
        P = A[~active[:, k]][:, J]
        if regime == "random":
            v = rng.uniform(0, 1.5 * A.max(initial=1.0) / 2, K - 1) * (rng.random(K - 1) < 0.7)
        else:  # a convex combination of the points, then a small push outwards
            w = rng.dirichlet(np.ones(P.shape[0]) * 0.5)
            v = P.T @ w + (rng.normal(0, 1e-3, K - 1) if regime == "boundary" else 0.0)
            v = np.maximum(v, 0.0)
        V[i, J] = v
        dist = hull_distance(v, P)[0]
        exact[k] = dist
        if regime == "boundary":
            thr[i] = dist * (1 + rng.choice([-1e-6, 1e-6, -0.5, 0.5])) + 1e-12
        else:
            thr[i] = rng.choice([1e-9, 1e-7 * (1 + np.abs(v).sum()), 1e-3])
    top_idx = torch.topk(torch.as_tensor(A), min(N, 32), dim=0).indices
    res = certify_members(torch.as_tensor(A), torch.as_tensor(active), atoms, V, thr, top_idx,
                          sample=int(rng.integers(1, 64)), per_coordinate=int(rng.integers(1, 8)))
    for i, k in enumerate(atoms):
        mem = res.passed.get(k)
        if mem is None:
            continue
        J = [j for j in range(K) if j != k]
        rows = mem.rows.numpy()
        assert not active[rows, k].any()  # points of k's hull only
        assert (mem.weights >= 0).all() and mem.weights.sum() == pytest.approx(1.0, abs=1e-12)
        residual = np.abs(A[rows][:, J].T @ mem.weights - V[i, J]).sum()
        assert residual == pytest.approx(mem.residual, rel=1e-9, abs=1e-13)  # rounding
        assert residual <= thr[i] * (1 + 1e-9)
        # the LP on every inactive point: no farther than the weights (to its own rounding)
        assert exact[k] <= thr[i] + 1e-9


@pytest.mark.parametrize("world_seed", [0, 1, 2])
def test_the_check_reports_the_same_hull_with_and_without_the_batch(world_seed):
    """The hierarchy world's truth (planted failing atoms) and a perturbed copy: the batch
    passes most atoms without an LP, and the violations are bit for bit those of the column
    generation alone (atoms, distances, gaps, directions, steps)."""
    w = make_world("hierarchy", seed=world_seed, n=600)
    d = w.truth(0.05)
    rng = np.random.default_rng(world_seed)
    for A in (torch.as_tensor(w.codes, dtype=F64),
              torch.as_tensor(w.codes * (1 + 0.05 * rng.random(w.codes.shape)), dtype=F64)):
        abar = A.mean(0)
        tol = Tolerances(tau=0.0)
        fast = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol)
        slow = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol, batch=False)
        assert fast.tested == slow.tested and slow.certified == []
        assert fast.certified and fast.lp_solves < slow.lp_solves
        key = [(v.j, v.slope, v.step, v.detail, v.move.q.tolist(), v.move.kappa)
               for v in fast.violations]
        assert key == [(v.j, v.slope, v.step, v.detail, v.move.q.tolist(), v.move.kappa)
                       for v in slow.violations]
        assert not {v.j for v in fast.violations} & set(fast.certified)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), R=st.integers(1, 30), C=st.integers(1, 9))
def test_the_hessians_from_sparse_upper_triangles_are_the_dense_sums(seed, R, C):
    rng = np.random.default_rng(seed)
    M = rng.exponential(1.0, (R, C)) * (rng.random((R, C)) < 0.5)
    W = rng.random((R, 3))
    H = _hessians(_outer_products(M), W, C, full=True)
    assert np.allclose(H, np.einsum("nk,ni,nj->kij", W, M, M), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("world_seed", [0, 1])
def test_the_batch_rows_from_any_top_list_leave_the_violations_unchanged(world_seed):
    """``top=`` (the check's pass-1 buffer) only chooses the batch's rows: with the buffer,
    with a shuffled (not descending) list, with rows out of range or too few rows, the
    violations are bit for bit those without it, and the batch still passes atoms; a list that
    is not a descending list of the codes is replaced by ``topk``."""
    import dictopt.check.hull as hull

    w = make_world("hierarchy", seed=world_seed, n=600)
    d = w.truth(0.05)
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    tol = Tolerances(tau=0.0)

    def key(res):
        return [(v.j, v.slope, v.step, v.detail, v.move.q.tolist(), v.move.kappa)
                for v in res.violations]

    ref = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol)
    assert ref.violations and ref.certified
    buffer = torch.topk(A, 16, dim=0).indices
    rng = np.random.default_rng(world_seed)
    shuffled = buffer[torch.from_numpy(rng.permutation(16))]
    for top, used in [(buffer, True), (shuffled, False), (buffer + A.shape[0], False),
                      (buffer[:4], False)]:
        calls = []
        real = hull.certify_members

        def spy(*a, real=real, calls=calls, **k):
            calls.append(a[5])
            return real(*a, **k)

        hull.certify_members = spy
        try:
            res = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol, top=top)
        finally:
            hull.certify_members = real
        assert key(res) == key(ref) and res.certified
        assert torch.equal(calls[0], top) == used
        if not used:  # the codes' own topk
            assert torch.equal(calls[0], torch.topk(A, calls[0].shape[0], dim=0).indices)


def test_above_128_atoms_the_batch_runs_and_the_violations_are_the_lps():
    """BATCH_MAX_K is 256 (measured): at K = 160 the batch passes atoms before any LP and the
    violations are bit for bit those of the column generation alone; above the limit the
    batch does not run."""
    import dictopt.check.hull as hull

    w = make_world("hierarchy", seed=0, n=400, d=48, n_roots=40, branching=3)
    d = w.truth(0.05)
    assert 128 < d.K <= hull.BATCH_MAX_K
    A = torch.as_tensor(w.codes, dtype=F64)
    abar = A.mean(0)
    tol = Tolerances(tau=0.0)
    fast = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol)
    slow = joint_hull(A, d.atoms, abar, 0.05, 0.0, tol, batch=False)
    assert fast.tested == slow.tested and fast.certified and fast.lp_solves < slow.lp_solves
    key = [(v.j, v.slope, v.step, v.detail, v.move.q.tolist(), v.move.kappa)
           for v in fast.violations]
    assert fast.violations and key == [
        (v.j, v.slope, v.step, v.detail, v.move.q.tolist(), v.move.kappa)
        for v in slow.violations]
    old = hull.BATCH_MAX_K
    hull.BATCH_MAX_K = d.K - 1
    try:
        assert joint_hull(A, d.atoms, abar, 0.05, 0.0, tol).certified == []
    finally:
        hull.BATCH_MAX_K = old
