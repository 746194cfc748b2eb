"""Membership certificates for many atoms' hulls at once, without an LP (issue 17).

Atom ``k`` passes the joint hull condition C5′ when ``v_k`` is within the threshold of
``conv{a_n[J] : n inactive for k}`` in ℓ1 (:mod:`dictopt.check.hull`). *Any* convex weights
``w ≥ 0``, ``Σ w = 1`` on inactive rows with ``‖Σ_n w_n a_n[J] − v_k‖₁ ≤ threshold`` prove it:
the LP's optimum is no larger. This module finds such weights for all atoms together and
declares an atom passed only with them in hand (the residual is computed from the weights
themselves); every atom it does not pass goes to the exact column generation, so the verdicts,
distances, gaps and directions are those of the LP.

*The weights.* Each atom's weights are the projection of a prior ``u`` onto its hull
constraints in the ``u``-weighted ℓ2 norm::

    min Σ_n (w_n − u_n)² / u_n   s.t.  Σ_n w_n m_n = b,  w ≥ 0,     m_n = (a_n[J], 1), b = (v, 1)

whose dual is the concave, piecewise-quadratic ``φ(θ) = θ·b − ½ Σ_n u_n (1 + θ·m_n)₊²`` with
``w_n = u_n (1 + θ·m_n)₊``: nonnegative for every ``θ``. Its (semismooth) Newton method
ends after a few steps when ``v`` is inside the hull (the set of clipped rows settles), and
``φ`` grows without bound when it is not (then the atom goes to the LP). The first step from
``θ = 0`` is the linear tilt of the prior toward ``v``.

*The rows* (shared by every atom, each atom using those where it is inactive): an evenly
spaced sample of the rows (prior ``1/S`` each, so ``Σ u a ≈ ā`` and the start is nearly
feasible; identical all-zero rows merged into one with their summed prior), the largest codes
of every coordinate, and for every pair ``(j, k)`` the largest code of ``j`` among the rows
where ``k`` is inactive (so no coordinate lacks a point that carries it), these with a small
prior. The Hessians ``Σ_n u_n [1 + θ·m_n > 0] m_n m_nᵀ`` of all atoms come from one sparse
product (the rows' outer products are sparse like the codes). An atom left after
``max_steps`` gets the rows its ``θ`` weights most among *all* its inactive rows (one product
``A θ``: column generation for this projection) and its Newton steps go on from that ``θ``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import ThreadpoolController

F64 = torch.float64

#: Rows of the evenly spaced sample.
SAMPLE_ROWS = 1024
#: Largest codes of each coordinate added to the rows.
TOP_PER_COORDINATE = 16
#: Prior of an added (non-sample) row, relative to a sample row's.
ADDED_PRIOR = 0.1
#: Newton steps before the atoms left over go to the LP.
MAX_STEPS = 7
#: Rounds that add rows for the atoms left, and how many rows per atom.
ROUNDS = 1
ADD_PER_ROUND = 32
#: Armijo constant and the smallest step of the backtracking line search.
ARMIJO = 1e-4
MIN_STEP = 1e-8


class Membership(NamedTuple):
    """Convex weights that put ``v`` within ``residual`` of an atom's hull."""

    rows: torch.Tensor
    """Row indices (inactive rows of the atom) with positive weight."""
    weights: np.ndarray
    """Their weights (nonnegative, summing to 1 up to rounding)."""
    residual: float
    """``‖Σ_n w_n a_n[J] − v‖₁`` computed from these weights (≤ the threshold)."""


class BatchMembership(NamedTuple):
    """What :func:`certify_members` passed and how much it did."""

    passed: dict[int, Membership]
    steps: int
    """Newton steps taken (over the rounds)."""
    rows: int
    """Rows shared by the atoms."""


def pool_rows(
    A_NK: torch.Tensor, active_NK: torch.Tensor, top_idx: torch.Tensor, atoms: list[int],
    *, sample: int = SAMPLE_ROWS, per_coordinate: int = TOP_PER_COORDINATE,
) -> tuple[torch.Tensor, np.ndarray]:
    """The shared rows and their prior (module docstring).

    Parameters
    ----------
    A_NK:
        Codes ``[N, K]`` (float64).
    active_NK:
        Activity ``[N, K]``.
    top_idx:
        Row indices of each coordinate's largest codes ``[m, K]``, largest first.
    atoms:
        The atoms to certify.
    sample, per_coordinate:
        Sample size and the largest codes per coordinate taken.

    Returns
    -------
    tuple
        Row indices ``[R]`` (distinct) and their prior ``[R]``.
    """
    N = A_NK.shape[0]
    S = min(sample, N)
    sample_rows = torch.unique(torch.linspace(0, N - 1, S, dtype=F64).round().long())
    zero = ~(A_NK[sample_rows] != 0).any(1)
    n_zero = int(zero.sum())
    kept = torch.cat([sample_rows[zero][:1], sample_rows[~zero]])
    prior = [np.full(1 if n_zero else 0, n_zero / sample_rows.numel()),
             np.full(int((~zero).sum()), 1.0 / sample_rows.numel())]
    # every coordinate's largest codes, and for every (j, k) the largest code of j among the
    # rows where k is inactive (within the top rows)
    top = top_idx[: min(per_coordinate, top_idx.shape[0])].flatten()
    off = ~active_NK[top_idx][:, :, atoms]  # [m, K, atoms]
    first = off.to(torch.uint8).argmax(0)  # [K, atoms]
    cover = top_idx[first, torch.arange(top_idx.shape[1]).unsqueeze(1)][off.any(0)]
    added = torch.unique(torch.cat([top, cover]))
    added = added[~torch.isin(added, sample_rows) & (A_NK[added] != 0).any(1)]
    rows = torch.cat([kept, added])
    prior.append(np.full(added.numel(), ADDED_PRIOR / sample_rows.numel()))
    return rows, np.concatenate(prior)


def _outer_products(M: np.ndarray) -> sp.csc_matrix:
    """The lower triangles (``i ≤ j``, entry ``j·C + i``) of the rows' outer products
    ``m_n m_nᵀ`` as the columns of a sparse ``[C², R]`` matrix (each row's nonzeros in order,
    so the indices come out sorted): a product with it reshapes to ``[C, C]`` matrices whose
    lower triangles are set, with no transposition."""
    R, C = M.shape
    nz_r, nz_c = np.nonzero(M)
    count = np.bincount(nz_r, minlength=R)
    start = np.concatenate([[0], np.cumsum(count)])
    per_row = count * count
    ptr = np.concatenate([[0], np.cumsum(per_row)])
    row_of_pair = np.repeat(np.arange(R), per_row)  # entry e of row n pairs with every entry
    local = np.arange(ptr[-1]) - ptr[row_of_pair]
    c_row = np.maximum(count[row_of_pair], 1)
    b, a = local // c_row, local % c_row
    upper = a <= b
    row_of_pair, a, b = row_of_pair[upper], a[upper], b[upper]
    i, j = nz_c[start[row_of_pair] + a], nz_c[start[row_of_pair] + b]
    values = M[row_of_pair, i] * M[row_of_pair, j]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(row_of_pair, minlength=R))])
    return sp.csc_matrix((values, j * C + i, ptr), shape=(C * C, R))


def _hessians(outer: sp.csc_matrix, weights: np.ndarray, C: int, *,
              full: bool = False, out: np.ndarray | None = None) -> np.ndarray:
    """``Σ_n weights[n, i] m_n m_nᵀ`` for every column ``i`` of ``weights [R, l]``:
    ``[l, C, C]``, its lower triangle and diagonal only (what the Cholesky factorisation
    reads) unless ``full``. ``out`` (``[≥ l, C, C]``, C-contiguous) receives them when given
    (a fresh array of this size cost 3× the copy into a held one on the loaded 2-core box)."""
    X = np.asarray(outer @ weights)  # [C², l]
    l = X.shape[1]
    if out is None:
        lower = np.ascontiguousarray(X.T).reshape(l, C, C)
    else:
        lower = out[:l]
        lower.reshape(l, C * C)[...] = X.T
    return _symmetric(lower) if full else lower


def _symmetric(lower: np.ndarray) -> np.ndarray:
    """The symmetric matrices whose lower triangles and diagonals are ``lower``'s."""
    H = np.tril(lower) + np.tril(lower, -1).transpose(0, 2, 1)
    return H


_BLAS: list[ThreadpoolController] = []


def _one_blas_thread() -> object:
    """A context holding BLAS at one thread. The controller (a scan of the loaded libraries,
    ~3 ms: a quarter of a second over repair's 100 rounds) is made once, on first use: the
    BLAS libraries this module calls (numpy's and torch's) are loaded by its imports."""
    if not _BLAS:
        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def _solve(H: np.ndarray, G: np.ndarray) -> np.ndarray:
    """``H⁻¹ G`` for a batch of symmetric positive (semi)definite ``H [l, C, C]`` given by
    their lower triangles and diagonals."""
    try:
        L = torch.from_numpy(np.linalg.cholesky(H))
        y = torch.linalg.solve_triangular(L, torch.from_numpy(G).unsqueeze(2), upper=False)
        return torch.linalg.solve_triangular(L.transpose(1, 2), y, upper=True)[:, :, 0].numpy()
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(h, g, rcond=None)[0]
                         for h, g in zip(_symmetric(H), G, strict=True)])


class _Rows(NamedTuple):
    """The shared rows: indices, ``m_n = (a_n, 1)``, the outer products, the prior."""

    index: torch.Tensor
    M: np.ndarray
    outer: sp.csc_matrix
    u: np.ndarray

    def extend(self, A_NK: torch.Tensor, more: torch.Tensor, prior: float) -> _Rows:
        """These rows plus the new ones in ``more`` (each with prior ``prior``)."""
        more = more[~torch.isin(more, self.index)]
        if more.numel() == 0:
            return self
        Mm = np.hstack([A_NK[more].numpy(), np.ones((more.numel(), 1))])
        return _Rows(torch.cat([self.index, more]), np.vstack([self.M, Mm]),
                     sp.hstack([self.outer, _outer_products(Mm)], format="csc"),
                     np.concatenate([self.u, np.full(more.numel(), prior)]))


def certify_members(
    A_NK: torch.Tensor,
    active_NK: torch.Tensor,
    atoms: list[int],
    V: np.ndarray,
    thresholds: np.ndarray,
    top_idx: torch.Tensor,
    *,
    sample: int = SAMPLE_ROWS,
    per_coordinate: int = TOP_PER_COORDINATE,
    max_steps: int = MAX_STEPS,
    rounds: int = ROUNDS,
) -> BatchMembership:
    """Convex weights proving ``v_k`` within the threshold of its hull, for as many of
    ``atoms`` as a few batched Newton steps find (module docstring). An atom not in the
    result is undecided here (the LP decides it), never failed.

    Parameters
    ----------
    A_NK:
        Codes ``[N, K]`` (float64).
    active_NK:
        Activity ``[N, K]``: row ``n`` is a point of atom ``k``'s hull when not active.
    atoms:
        The atoms ``[m]``.
    V:
        ``[m, K]``: row ``i`` is ``v`` of ``atoms[i]`` over every coordinate (the atom's own
        coordinate is ignored).
    thresholds:
        ``[m]`` the ℓ1 distance each atom may have.
    top_idx:
        Row indices of each coordinate's largest codes ``[t, K]``, largest first.
    sample, per_coordinate, max_steps:
        Rows sampled, largest codes per coordinate taken, Newton steps per round.
    rounds:
        Rounds that add, for each atom left, the rows its dual ``θ`` weights most (among all
        its inactive rows) and continue from that ``θ``.

    Returns
    -------
    BatchMembership
    """
    # The Newton steps are many small dense products and Cholesky factors, for which BLAS's
    # threads cost more than they save: on 2 cores they doubled repair's wall time.
    with _one_blas_thread():
        K = A_NK.shape[1]
        m = len(atoms)
        if m == 0:
            return BatchMembership({}, 0, 0)
        index, u = pool_rows(A_NK, active_NK, top_idx, atoms, sample=sample,
                             per_coordinate=per_coordinate)
        M = np.hstack([A_NK[index].numpy(), np.ones((index.numel(), 1))])
        pool = _Rows(index, M, _outer_products(M), u)
        added_prior = ADDED_PRIOR / min(sample, A_NK.shape[0])
        C = K + 1
        idx = np.arange(m)
        own = np.zeros((m, C), dtype=bool)
        own[idx, np.asarray(atoms)] = True
        Bfull = np.hstack([np.where(own[:, :K], 0.0, V), np.ones((m, 1))])
        live = idx
        theta = np.zeros((m, C))
        passed: dict[int, Membership] = {}
        steps = 0
        for rnd in range(rounds + 1):
            live, done_steps = _newton(pool, active_NK, atoms, live, theta, Bfull, V, own,
                                       np.asarray(thresholds, dtype=np.float64), max_steps, passed)
            steps += done_steps
            if live.size == 0 or rnd == rounds:
                break
            # add the rows the duals of the atoms left weight most (column generation)
            score = 1.0 + A_NK @ torch.from_numpy(theta[live, :K]).T + torch.from_numpy(
                theta[live, K])  # [N, l]
            score[active_NK[:, [atoms[i] for i in live]]] = -np.inf
            score[pool.index] = -np.inf
            best = torch.topk(score, min(ADD_PER_ROUND, score.shape[0]), dim=0)
            pool = pool.extend(A_NK, torch.unique(best.indices[best.values > 0]), added_prior)
        return BatchMembership(passed, steps, pool.index.numel())


def _newton(
    pool: _Rows, active_NK: torch.Tensor, atoms: list[int], live: np.ndarray,
    theta: np.ndarray, Bfull: np.ndarray, V: np.ndarray, own: np.ndarray,
    thresholds: np.ndarray, max_steps: int, passed: dict[int, Membership],
) -> tuple[np.ndarray, int]:
    """Newton steps on the duals of the atoms ``live`` (``theta`` updated in place, the atoms
    certified added to ``passed``). Returns the atoms left and the steps taken."""
    M, u = pool.M, pool.u
    R, C = M.shape
    K = C - 1
    off = (~active_NK[pool.index][:, [atoms[i] for i in live]]).numpy()  # [R, l]
    # coordinates each atom's rows carry (else θ_j = 0: such a coordinate adds |v_j|)
    free = ((M != 0).T.astype(np.float64) @ off.astype(np.float64)).T > 0  # [l, C]
    free &= ~own[live]
    free[:, K] = True
    uo = u[:, None] * off
    th = theta[live] * free
    B = Bfull[live] * free
    F = 1.0 + M @ th.T  # [R, l]
    phi = None
    held = np.empty((live.size, C, C))  # the Hessians, written in place every step
    steps = 0
    for step in range(max_steps + 1):
        pos = F > 0
        Wt = np.maximum(F, 0.0)
        Wt *= uo  # [R, l] the weights (unnormalised)
        Pw = Wt.T @ M  # [l, C]: Σ_n w_n m_n (the last column is Σ_n w_n)
        total = Pw[:, K]
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = np.abs(Pw[:, :K] / total[:, None] - V[live])
        resid[own[live][:, :K]] = 0.0
        res_l1 = resid.sum(1)
        done = (total > 0) & (res_l1 <= thresholds[live])
        for i in np.flatnonzero(done):
            on = Wt[:, i] > 0
            passed[atoms[live[i]]] = Membership(
                pool.index[torch.from_numpy(on)], Wt[on, i] / total[i], float(res_l1[i]))
        keep = ~done
        if step == max_steps or not keep.any():
            theta[live] = th
            return live[keep], steps
        if not keep.all():
            theta[live] = th
            live, uo, th, F, Pw, B, free, pos, Wt = (
                live[keep], uo[:, keep], th[keep], F[:, keep], Pw[keep], B[keep], free[keep],
                pos[:, keep], Wt[:, keep])
            phi = None if phi is None else phi[keep]
        steps = step + 1
        # Newton step on φ (the Hessian: the rows with positive weight)
        G = (B - Pw) * free  # [l, C]
        if phi is None:  # φ(θ) = θ·b − ½ Σ_n w_n F_n (w_n = u_n F_n where F_n > 0)
            phi = (th * B).sum(1) - 0.5 * np.einsum("nl,nl->l", Wt, F)
        H = _hessians(pool.outer, np.multiply(uo, pos, out=Wt), C, out=held)
        fixed_i, fixed_j = np.nonzero(~free)  # θ_j = 0 there: rows and columns of the identity
        H[fixed_i, fixed_j, :] = 0.0
        H[fixed_i, :, fixed_j] = 0.0
        diag = np.einsum("ijj->ij", H)
        diag += np.where(free, 1e-12 * diag.max(1, initial=0.0)[:, None], 1.0)
        delta = _solve(H, G)
        # backtracking line search on φ, per atom
        slope = (delta * G).sum(1)
        t = np.ones(live.size)
        todo = np.arange(live.size)
        while todo.size:
            trial = th[todo] + t[todo, None] * delta[todo]
            Ft = M @ trial.T
            Ft += 1.0
            phi_t = _dual(trial, B[todo], Ft, uo[:, todo])
            good = phi_t >= phi[todo] + ARMIJO * t[todo] * slope[todo]
            if good.all() and todo.size == live.size:
                F = Ft
            else:
                F[:, todo[good]] = Ft[:, good]
            th[todo[good]] = trial[good]
            phi[todo[good]] = phi_t[good]
            t[todo[~good]] *= 0.5
            todo = todo[~good & (t[todo] >= MIN_STEP)]
        moving = t >= MIN_STEP
        if not moving.all():
            theta[live] = th
            live, uo, th, F, B, free, phi = (live[moving], uo[:, moving], th[moving],
                                             F[:, moving], B[moving], free[moving], phi[moving])
        if live.size == 0:
            return live, steps
    theta[live] = th
    return live, steps


def _dual(theta: np.ndarray, B: np.ndarray, F: np.ndarray, uo: np.ndarray) -> np.ndarray:
    """``φ(θ) = θ·b − ½ Σ_n u_n (1 + θ·m_n)₊²`` per atom (``F = 1 + θ·m_n`` given)."""
    Fp = np.maximum(F, 0.0)
    return (theta * B).sum(1) - 0.5 * np.einsum("nl,nl,nl->l", uo, Fp, Fp)
