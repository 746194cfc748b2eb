"""Active-set steps for large supports, holding the inverse of each face's Gram matrix.

The same Lawson–Hanson method as :func:`dictopt.lasso._active_set` (add the worst violators of
C1 on an optimal face, solve on the face, step towards the solution as far as nonnegativity
allows, drop the blocking atom), but each point keeps ``H = G_PP⁻¹`` for its support ``P``
across steps instead of gathering ``G_PP`` from the ``K × K`` Gram matrix and factoring it at
every step (at K = 4,096, d = 768 with supports of ~335 atoms that gather alone took ~5 ms of
CPU per point and step). With ``S = |P|``:

- **adding** ``m`` atoms is the bordering (block-inverse) update: with ``B = H G_P,new`` and the
  Schur complement ``C = G_new,new − G_new,P B``, ``H ← [[H + B C⁻¹ Bᵀ, −B C⁻¹], [−C⁻¹ Bᵀ, C⁻¹]]``,
  ``O(S² m)``; ``C``'s Cholesky pivots tell whether the new atoms are well inside the span
  of the face (else only the worst violator is tried, then the point is handed back);
- **dropping** an atom ``j`` is the Schur complement of the inverse,
  ``H ← H − h_j h_jᵀ / H_jj`` (row and column ``j`` become zero), ``O(S²)``;
- **the face solve** is ``z = H q_P``, ``O(S²)``.

Only adds need the gradient over all ``K`` atoms. Points are processed in groups in lockstep:
padded slots (``idx``, ``valid``, ``val``) with ``H`` zero on free slots, new atoms put in the
first free slots, slots widened when they run out.

**Precision.** For float64 problems a first pass holds ``H`` (and reads ``G``) in float32:
half the memory traffic of every update, which is what the steps cost. Gradients that only
choose joining atoms are float32 too; once a point's rough violations are all below
:data:`ROUGH_MARGIN` ``λ`` its gradients are float64, its face optimum is refined in float64
(``a ← a + H (q − a G)_P`` until at rounding level) and its face solves are corrections from
its codes with float64 violations, so float32 errs by ~1e-7 of the correction, not of the
codes. Points whose faces are poorly conditioned for float32 (a joining atom with less than
:data:`SCHUR_WELL_LOW` of its squared norm outside the span, refinement that stops gaining,
a stall even after a precise solve) are handed back by that pass and run again with float64
inverses (the method above, unchanged).

Nothing here certifies the result: rounding in ``H`` accumulates over the updates, so
:func:`dictopt.lasso.solve_codes` measures the KKT residual of every point from its residual
and finishes any point above the tolerance (and every point handed back here) with its
from-scratch face solves. Returned codes are always feasible (nonnegative).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

GROW_FRACTION = 0.25
"""Atoms one add step may join to a point's support, as a fraction of its size (at least
:data:`GROW_MIN_ADD`): fewer steps, each needing one gradient over all ``K`` atoms, against
more atoms that join and leave again. At K = 4,096, d = 768 (supports of ~335): 36.5, 32.9
and 36.4 ms of CPU per point with 0.15, 0.25 and 0.4 (0.1: 56 ms; 0.5: 88 ms)."""

GROW_MIN_ADD = 8
"""Least number of atoms an add step may join (an empty support starts with this many; 16
and 32 were no faster at K = 4,096, 64 twice as slow)."""

SCHUR_WELL = 1e-4
"""Smallest Schur pivot² of a joining atom relative to its squared norm (the share of the
atom outside the face's span). Below it the inverse would lose accuracy: only the worst
violator is tried, and if it fails too the point is handed back."""

SCHUR_WELL_LOW = 1e-2
""":data:`SCHUR_WELL` for float32 inverses: a joining atom with less than a tenth of its norm
outside the face's span makes the face poorly conditioned for float32 (each update's rounding
grows with the condition number), and the point is handed back to the float64 run."""

KEEP_POSITIVE_ROUNDS = 8
"""An add whose face solve makes some joining atoms non-positive drops those (keeping the
worst violator) and solves again, up to this many times; then, or when only the worst
violator is non-positive, the worst violator stays alone."""


MULTI_DROP_MAX = 64
"""Most multi-drops (:func:`_multi_drop`) per point: their acceptance compares objectives
tracked in rounding, so their number is bounded (Lawson–Hanson's single drops terminate)."""

MULTI_DROP_ROUNDS = 4
"""Most extra rounds of dropping non-positive atoms in one multi-drop."""

RECON_SLOTS = 8
"""``a D`` comes from the support's atoms (:meth:`_Group.recon`) while the slots per point
are fewer than ``K`` / this (the gather of ``S`` atoms costs more per value than the dense
product's ``K``)."""

SEED_QUANTILE = 0.9
"""A seed holds at most this quantile (over the points) of the warm start's support sizes
(the atoms with the largest ``q``): at K = 4,096 an SAE's own L0 of 45 on average came with
single points of 168 atoms, which set the width of every step of their group."""

SEED_ROUNDS = 16
"""Most rounds of dropping a seed face's non-positive atoms (then the usual add's rules)."""


ROUGH_MARGIN = 1e-2
"""Violations that choose joining atoms come from a float32 gradient (half the cost of the
float64 one); a point whose rough violations off its support are all at most this many λ
gets the float64 gradient instead (float32's error in ``q − a G`` is ~1e-5 here, well
below ``ROUGH_MARGIN λ``), which decides that it is done and refines its face optimum."""


REFINE_ROUNDS = 4
"""Most float64 gradients per point and step for refining its face optimum (float32
inverses: each refinement gains ~7 digits)."""

REFINE_TOL = 0.01
"""A point whose ``|(q − a G)_P|`` on its support stays above ``REFINE_TOL · tol · λ`` is not
yet optimal on its face (it solves its face again; if the rounds ran out, the float32
inverses drifted and it is handed back)."""

REFINE_FLOOR = 1e-4
"""Refinement goes on while ``|(q − a G)_P| > REFINE_FLOOR · tol · λ`` and each round still
gains a digit: codes then agree with the float64 path's to rounding (~1e-13)."""


class GrowResult(NamedTuple):
    """Codes from the incremental steps."""

    codes: torch.Tensor
    """``[n, K]`` nonnegative codes (the last accepted iterate of every point)."""
    steps: int
    """Lockstep iterations of the slowest group."""
    handed: torch.Tensor
    """``[n]`` bool: points that stopped without reaching an optimal face with no violator
    (ill-conditioned adds, step budget): finish them elsewhere."""


def _add_count(count: torch.Tensor) -> torch.Tensor:
    return torch.clamp((GROW_FRACTION * count).long(), min=GROW_MIN_ADD)




class _Stores:
    """Three flat buffers for the ``[n, S, S]`` inverses of a group, held across its steps
    and across the groups of one :func:`grow_codes` call: the current ``H``, its next widened
    (or shed) copy, and the copy of ``H[rows]`` for a subset of the group. Fresh tensors of
    that size cost more in page faults than the copy itself (at K = 4,096, d = 768, ~5×)."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.flat = [torch.empty(0, dtype=dtype, device=device) for _ in range(3)]

    def view(self, which: int, n: int, S: int) -> torch.Tensor:
        """Buffer ``which`` as an uninitialised contiguous ``[n, S, S]`` tensor."""
        if self.flat[which].numel() < n * S * S:
            self.flat[which] = torch.empty(n * S * S, dtype=self.flat[which].dtype,
                                           device=self.flat[which].device)
        return self.flat[which][: n * S * S].view(n, S, S)


class _Group:
    """Padded-slot state of a group of points (``H`` zero on free slots)."""

    def __init__(self, n: int, S: int, stores: _Stores, dtype: torch.dtype) -> None:
        self.stores, self.at = stores, 0  # H lives in stores.flat[self.at] (0 or 1)
        device = stores.flat[0].device
        self.idx = torch.zeros(n, S, dtype=torch.long, device=device)
        self.valid = torch.zeros(n, S, dtype=torch.bool, device=device)
        self.val = torch.zeros(n, S, dtype=dtype, device=device)
        self.H = stores.view(0, n, S).zero_()
        self.fresh = torch.zeros(n, S, dtype=torch.bool, device=device)

    @property
    def S(self) -> int:
        """Slots per point (the widest support the arrays can hold)."""
        return self.idx.shape[1]

    def _moved(self, n: int, S: int) -> torch.Tensor:
        """The other of the two ``H`` buffers as ``[n, S, S]`` (uninitialised)."""
        self.at = 1 - self.at
        return self.stores.view(self.at, n, S)

    def make_room(self, need: int) -> None:
        """Widen the slots so that every support can take ``need`` more atoms."""
        S = self.S
        want = int(self.valid.sum(dim=1).max()) + need
        if want > S:
            new = -(-max(want, S + S // 2) // 32) * 32
            pad = new - S
            self.idx, self.valid, self.val, self.fresh = (
                torch.nn.functional.pad(t, (0, pad))
                for t in (self.idx, self.valid, self.val, self.fresh))
            H = self._moved(self.H.shape[0], new)
            H[:, S:, :].zero_()
            H[:, :S, S:].zero_()
            H[:, :S, :S] = self.H
            self.H = H

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the points ``rows`` (the others are finished)."""
        self.idx, self.valid, self.val, self.fresh = (
            t[rows] for t in (self.idx, self.valid, self.val, self.fresh))
        H = self._moved(rows.shape[0], self.S)
        self.H = torch.index_select(self.H, 0, rows, out=H)

    def take_H(self, rows: torch.Tensor) -> torch.Tensor:
        """The inverses of ``rows``: ``H`` itself when ``rows`` is every point in order, else
        a copy into a buffer held across steps (a fresh ``[r, S, S]`` tensor each time cost
        ~5× the copy in page faults); write it back with :meth:`put_H`."""
        n = self.H.shape[0]
        if rows.shape[0] == n:
            return self.H
        return torch.index_select(self.H, 0, rows,
                                  out=self.stores.view(2, rows.shape[0], self.S))

    def put_H(self, rows: torch.Tensor, Hs: torch.Tensor) -> None:
        """Write back what :meth:`take_H` gave for ``rows`` (nothing to do for ``H`` itself)."""
        if Hs is not self.H:
            self.H.index_copy_(0, rows, Hs)

    def times_H(self, rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for the points ``rows`` (``v [len(rows), S]``): for more than half of the
        group one product over all of it with zero vectors elsewhere (reading every ``H``
        once costs what a copy of ``H[rows]`` would), else on a copy of ``H[rows]``."""
        n, out = self.H.shape[0], v.dtype
        v = v.to(self.H.dtype)
        if rows.shape[0] == n:
            return (self.H @ v.unsqueeze(-1)).squeeze(-1).to(out)
        if 2 * rows.shape[0] > n:
            v = torch.zeros(n, v.shape[1], dtype=v.dtype, device=v.device).index_copy_(0, rows, v)
            return (self.H @ v.unsqueeze(-1)).squeeze(-1)[rows].to(out)
        return (self.take_H(rows) @ v.unsqueeze(-1)).squeeze(-1).to(out)

    def dense(self, rows: torch.Tensor, K: int) -> torch.Tensor:
        """The codes ``[len(rows), K]`` of these points, dense (empty slots add zero)."""
        v = torch.where(self.valid[rows], self.val[rows], 0.0)
        a = torch.zeros(v.shape[0], K, dtype=v.dtype, device=v.device)
        return a.scatter_add_(1, self.idx[rows], v)

    def recon(self, rows: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """``a D`` for the codes of ``rows`` (``[len(rows), d]`` in ``D``'s dtype): the sum of
        the support's atoms weighted by their codes (``embedding_bag``, which reads the rows
        of ``D`` in place: ``S · d`` per point against ``K · d`` for the dense product, and
        ~10× faster than gathering the atoms first) while the slots are few next to ``K``."""
        K = D.shape[0]
        if RECON_SLOTS * self.S > K:
            return self.dense(rows, K).to(D.dtype) @ D
        v = torch.where(self.valid[rows], self.val[rows], 0.0).to(D.dtype)
        return torch.nn.functional.embedding_bag(self.idx[rows], D, per_sample_weights=v,
                                                 mode="sum")

    def solve(self, rows: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``z = H q_P`` on the valid slots of ``rows`` (``q`` is the group's ``[n, K]``)."""
        q_S = torch.where(self.valid[rows], torch.gather(q[rows], 1, self.idx[rows]), 0.0)
        return self.times_H(rows, q_S)

    def drop(self, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Remove the slots ``mask [len(rows), S]`` from the supports of ``rows``: the Schur
        complement of the inverse, ``H ← H − H_:J (H_JJ)⁻¹ H_J:`` (rows and columns ``J``
        become zero). Returns ``[len(rows)]`` bool: ``H_JJ`` was positive definite."""
        sane = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
        count = mask.sum(dim=1)
        r = torch.where(count > 0)[0]
        if not r.numel():
            return sane
        n = self.H.shape[0]
        if 2 * r.shape[0] > n and rows.shape[0] < n:  # every point, no copy of H
            full = torch.zeros(n, self.S, dtype=torch.bool, device=rows.device)
            full[rows] = mask
            return self.drop(torch.arange(n, device=rows.device), full)[rows]
        t = int(count.max())
        J = torch.argsort((~mask[r]).to(torch.int8), dim=1, stable=True)[:, :t]
        inJ = torch.arange(t, device=rows.device) < count[r, None]
        rr = rows[r]
        Hs = self.take_H(rr)
        S = Hs.shape[1]
        HJ = torch.where(inJ[:, None, :], torch.gather(Hs, 2, J[:, None, :].expand(-1, S, t)), 0.0)
        eye = torch.eye(t, dtype=Hs.dtype, device=Hs.device)
        pair = inJ[:, :, None] & inJ[:, None, :]
        HJJ = torch.where(pair, torch.gather(HJ, 1, J[:, :, None].expand(-1, t, t)), eye)
        L, info = torch.linalg.cholesky_ex(HJJ)
        sane[r] = info == 0
        X = torch.linalg.solve_triangular(L, HJ.transpose(1, 2), upper=False)  # L⁻¹ H_J:
        Hs.baddbmm_(X.transpose(1, 2), X, alpha=-1.0)
        m = mask[r]
        i, j = m.nonzero(as_tuple=True)
        Hs[i, j, :] = 0.0
        Hs[i, :, j] = 0.0
        self.put_H(rr, Hs)
        self.valid[rr] &= ~m
        self.fresh[rr] &= ~m
        self.val[rr] = torch.where(m, 0.0, self.val[rr])
        self.idx[rr] = torch.where(m, 0, self.idx[rr])
        return sane

    def add(self, G: torch.Tensor, rows: torch.Tensor, atoms: torch.Tensor,
            take: torch.Tensor, well_pivot: float = SCHUR_WELL,
            D: torch.Tensor | None = None) -> torch.Tensor:
        """Join ``atoms [r, M]`` where ``take`` (a prefix per row) to the supports of ``rows``,
        in the first free slots, in order, marked ``fresh``. Returns ``well``:
        whether the Schur complement was well conditioned (if not, nothing changed).
        With the atoms ``D`` (in ``G``'s dtype) the new atoms' Gram block is their product
        (``M² d`` per point, read in rows) instead of ``M²`` scattered reads of ``G``: for a
        seed's many atoms those reads wait on memory (~50 ns each at K = 4,096)."""
        K = G.shape[0]
        r, M = atoms.shape
        self.make_room(M)
        S = self.S
        # the first M free slots of each row, in order (H is zero there)
        slots = torch.argsort(self.valid[rows].to(torch.int8), dim=1, stable=True)[:, :M]
        idx, valid = self.idx[rows], self.valid[rows]
        pair = take[:, :, None] & valid[:, None, :]
        if bool(valid.any()):
            Gp = torch.where(pair, G.reshape(-1)[atoms[:, :, None] * K + idx[:, None, :]], 0.0)
        else:  # empty faces
            Gp = torch.zeros(r, M, S, dtype=G.dtype, device=G.device)
        nn = take[:, :, None] & take[:, None, :]
        eye = torch.eye(M, dtype=G.dtype, device=G.device)
        if D is None:
            Gnn = torch.where(nn, G.reshape(-1)[atoms[:, :, None] * K + atoms[:, None, :]], eye)
        else:
            Dn = D[atoms]
            Gnn = torch.where(nn, Dn @ Dn.transpose(1, 2), eye)
        Hs = self.take_H(rows)
        B = Hs @ Gp.transpose(1, 2)  # [r, S, M]
        C = Gnn - Gp @ B
        L, info = torch.linalg.cholesky_ex(C)
        piv = L.diagonal(dim1=1, dim2=2)
        norm = Gnn.diagonal(dim1=1, dim2=2)
        well = (info == 0) & ((piv * piv >= well_pivot * norm) | ~take).all(dim=1)
        ok = torch.where(well)[0]
        if ok.numel():
            Ci = torch.where(nn[ok], torch.cholesky_inverse(L[ok]), 0.0)
            BC = B[ok] @ Ci
            Ho = Hs if ok.shape[0] == Hs.shape[0] else Hs[ok]
            Ho.baddbmm_(BC, B[ok].transpose(1, 2))
            slots = slots[ok]
            tk = take[ok]
            # new columns/rows −B C⁻¹ (zero where not taken), then the C⁻¹ block
            Ho.scatter_(2, slots[:, None, :].expand(-1, S, M), -BC)
            Ho.scatter_(1, slots[:, :, None].expand(-1, M, S), -BC.transpose(1, 2))
            ar = torch.arange(ok.shape[0], device=G.device)[:, None, None]
            Ho[ar, slots[:, :, None], slots[:, None, :]] = Ci
            ro = rows[ok]
            if Ho is Hs:
                self.put_H(rows, Hs)
            else:
                self.H[ro] = Ho
            self.idx[ro] = self.idx[ro].scatter(1, slots, torch.where(tk, atoms[ok], 0))
            self.valid[ro] = self.valid[ro].scatter(1, slots, tk)
            self.fresh[ro] = self.fresh[ro].scatter(1, slots, tk)
            self.val[ro] = self.val[ro].scatter(
                1, slots, torch.zeros(slots.shape, dtype=self.val.dtype, device=G.device))
        return well


Seed = tuple[torch.Tensor, torch.Tensor]
"""A first support per point: atoms ``[n, M]`` and ``take [n, M]`` (a prefix per row), the
first atom a violator of C1 at zero codes (see :func:`seed_from_codes`)."""


def seed_from_codes(init: torch.Tensor, q: torch.Tensor, lam: float, tol: float) -> Seed:
    """The supports of warm-start codes ``init [n, K]`` as a :data:`Seed`, each ordered by
    ``q = D y − λ`` (largest first, so the first atom is the worst C1 violator of the seed at
    zero codes). A point whose seed holds no violator at zero codes gets no seed (its first
    step is then the usual add from zero codes)."""
    P = init > 0
    count = P.sum(dim=1)
    # every point's seed is padded to the widest one, and every later step works at that
    # width: the few points with many more atoms than the rest keep their strongest ones
    M = max(int(torch.quantile(count.double(), SEED_QUANTILE)) if P.numel() else 0, 1)
    key = torch.where(P, q, torch.tensor(float("-inf"), dtype=q.dtype, device=q.device))
    top_v, top_j = key.topk(min(M, q.shape[1]), dim=1)
    take = (top_v > float("-inf")) & (top_v[:, :1] > tol * lam)
    return torch.where(take, top_j, 0), take


def _multi_drop(
    st: _Group, rows: torch.Tensor, nonpos: torch.Tensor, valid: torch.Tensor, q: torch.Tensor,
    fval: torch.Tensor, opt: torch.Tensor, jumps: torch.Tensor, face: Any,
) -> torch.Tensor:
    """After a blocked step of the points ``rows``: drop every other atom whose face solve
    was non-positive (``nonpos & valid`` on the slots before the step) at once and solve
    again (dropping the new non-positive atoms, up to :data:`MULTI_DROP_ROUNDS` times). If
    the face optimum is then positive and its objective ``−½ q_Pᵀ z`` below the tracked
    objective of the codes, the point jumps there (optimal on its face). Returns ``[len(rows)]``
    bool: the points that could not (their codes are feasible but off the path: hand them
    back). Lawson–Hanson drops one atom per blocked step: when an add makes many atoms
    leave, that is one face solve per leaving atom, for every point of the group in lockstep.
    """
    sane = st.drop(rows, nonpos & st.valid[rows] & valid)
    z = face(rows)
    for _ in range(MULTI_DROP_ROUNDS):
        bad = st.valid[rows] & (z <= 0)
        b = torch.where(bad.any(dim=1))[0]
        if not b.numel():
            break
        sane[b] &= st.drop(rows[b], bad[b])
        z[b] = face(rows[b])
    valid_now = st.valid[rows]
    q_P = torch.where(valid_now, torch.gather(q[rows], 1, st.idx[rows]), 0.0)
    f_z = -0.5 * (q_P * z).sum(dim=1)
    ok = sane & ((z > 0) | ~valid_now).all(dim=1) & (f_z < fval[rows])
    jumps[rows] += 1
    a = torch.where(ok)[0]
    if a.numel():
        st.val[rows[a]] = torch.where(valid_now[a], z[a], 0.0)
        fval[rows[a]] = f_z[a]
        opt[rows[a]] = True
    return ~ok


def grow_codes(
    G: torch.Tensor | Callable[[], torch.Tensor], D: torch.Tensor, q: torch.Tensor, lam: float,
    tol: float, max_steps: int, group_rows: int, seed: Seed | None = None,
    G32: torch.Tensor | None = None,
) -> GrowResult:
    """Lawson–Hanson from zero codes (or a seed support) with the face inverses held across
    steps.

    Parameters
    ----------
    G : ``[K, K]`` Gram matrix ``D Dᵀ``, or a function giving it (called only when needed:
        float64 problems with ``G32`` read it only for the points their first pass hands back).
    D : ``[K, d]`` atoms.
    q : ``[n, K]`` ``D y − λ`` per point.
    lam, tol : λ and the relative C1 tolerance for choosing violators.
    max_steps : most lockstep iterations per group.
    group_rows : points per group (each holds ``S × S`` inverses).
    seed : optional first supports (:func:`seed_from_codes`, e.g. an SAE's own codes): the
        first step joins them all to the empty face instead of the worst violators (the
        usual add: joining atoms whose code comes out non-positive leave, the first one stays),
        and the steps go on from that face's optimum. Only the number of steps depends on
        it; the stopping rule is the same.
    G32 : optional float32 copy of ``G`` for the first pass of float64 problems (else
        ``G`` rounded).

    Returns
    -------
    GrowResult
    """
    full = (lambda: G) if isinstance(G, torch.Tensor) else G
    if q.dtype != torch.float64:
        return _grow_all(full(), D, q, lam, tol, max_steps, group_rows, low=False, seed=seed)
    # float64 problems hold the inverses (and read the Gram matrix) in float32 first: half
    # the memory traffic of every update, the face optimum refined in float64 at the end;
    # points that this hands back (poorly conditioned faces) run again in float64
    first = _grow_all(full().to(torch.float32) if G32 is None else G32, D, q, lam, tol,
                      max_steps, group_rows, low=True, seed=seed)
    h = torch.where(first.handed)[0]
    if not h.numel():
        return first
    again = _grow_all(full(), D, q[h], lam, tol, max_steps, group_rows, low=False,
                      seed=None if seed is None else (seed[0][h], seed[1][h]))
    first.codes[h] = again.codes
    first.handed[h] = again.handed
    return GrowResult(first.codes, max(first.steps, again.steps), first.handed)


def _grow_all(
    G: torch.Tensor, D: torch.Tensor, q: torch.Tensor, lam: float, tol: float,
    max_steps: int, group_rows: int, low: bool, seed: Seed | None = None,
) -> GrowResult:
    n, K = q.shape
    codes = torch.zeros(n, K, dtype=q.dtype, device=q.device)
    handed = torch.zeros(n, dtype=torch.bool, device=q.device)
    steps = 0
    stores = _Stores(G.dtype, q.device)
    for lo in range(0, n, group_rows):
        part = None if seed is None else (seed[0][lo : lo + group_rows],
                                          seed[1][lo : lo + group_rows])
        a, s, h = _grow_group(G, D, q[lo : lo + group_rows], lam, tol, max_steps, stores, low,
                              part)
        codes[lo : lo + group_rows], handed[lo : lo + group_rows] = a, h
        steps = max(steps, s)
    return GrowResult(codes, steps, handed)


def _grow_group(
    G: torch.Tensor, D: torch.Tensor, q: torch.Tensor, lam: float, tol: float, max_steps: int,
    stores: _Stores, low: bool, seed: Seed | None = None,
) -> tuple[torch.Tensor, int, torch.Tensor]:
    n, K = q.shape
    dev = q.device
    st = _Group(n, 64, stores, q.dtype)
    opt = torch.ones(n, dtype=torch.bool, device=dev)  # zero codes: optimal on the empty face
    fval = torch.zeros(n, dtype=q.dtype, device=dev)  # the objective at the codes (tracked)
    jumps = torch.zeros(n, dtype=torch.long, device=dev)  # multi-drops taken per point
    live = torch.ones(n, dtype=torch.bool, device=dev)
    # points near their optimum (rough violations all below ROUGH_MARGIN λ) solve their faces
    # as a correction from their codes with float64 violations, z = a + H (q − a G)_P: the
    # float32 inverse then errs by ~1e-7 of the correction, not of the codes, so the small
    # codes of the last joining atoms keep their sign
    precise = torch.zeros(n, dtype=torch.bool, device=dev)

    def face(rows: torch.Tensor) -> torch.Tensor:
        p = precise[rows]
        if not bool(p.any()):
            return st.solve(rows, q)
        z = torch.empty(rows.shape[0], st.S, dtype=q.dtype, device=dev)
        r = torch.where(~p)[0]
        if r.numel():
            z[r] = st.solve(rows[r], q)
        r = torch.where(p)[0]
        rp = rows[r]
        valid = st.valid[rp]
        g = q[rp] - st.recon(rp, D) @ D.T
        e = torch.where(valid, torch.gather(g, 1, st.idx[rp]), 0.0)
        z[r] = torch.where(valid, st.val[rp] + st.times_H(rp, e), 0.0)
        return z
    handed = torch.zeros(n, dtype=torch.bool, device=dev)
    inf = torch.tensor(float("inf"), dtype=q.dtype, device=dev)
    rough = low  # float32 inverses: rough gradients, precise solves near the optimum
    well_pivot = SCHUR_WELL_LOW if low else SCHUR_WELL
    D_r = D.to(torch.float32) if rough else D
    steps = 0
    out = torch.zeros(n, K, dtype=q.dtype, device=dev)
    out_handed = torch.zeros(n, dtype=torch.bool, device=dev)
    orig = torch.arange(n, device=dev)
    while steps < max_steps and bool(live.any()):
        steps += 1
        if 5 * int(live.sum()) < 4 * live.shape[0]:  # shed finished points: fewer copies of H
            fin, keep = torch.where(~live)[0], torch.where(live)[0]
            out[orig[fin]] = st.dense(fin, K)
            out_handed[orig[fin]] = handed[fin]
            st.keep(keep)
            opt, live, handed, q, orig = opt[keep], live[keep], handed[keep], q[keep], orig[keep]
            precise, fval, jumps = precise[keep], fval[keep], jumps[keep]
        st.fresh.zero_()
        # adds wait until every point is optimal on its face: one gradient call for all
        o = torch.where(live & opt)[0] if bool((opt | ~live).all()) else opt[:0].nonzero()[:, 0]
        if seed is not None and steps == 1:
            # the first step joins the seed supports to the empty faces (no gradient); a
            # point whose seed is ill-conditioned starts from zero codes at the next step
            s_j, s_take = seed
            o = torch.where(s_take[:, 0])[0]
            if o.numel():
                width = int(s_take[o].sum(dim=1).max())
                st.add(G, o, s_j[o, :width], s_take[o, :width], well_pivot, D_r)
            o = o[:0]
        if o.numel():
            # the violations q − a G, through D (K·d per point, one BLAS-3 call), in float32
            # while they only choose atoms; points whose rough violations are all below
            # ROUGH_MARGIN λ get them in full precision, and the face refinement with them
            valid_o = st.valid[o]
            viol = (q[o].to(D_r.dtype) - st.recon(o, D_r) @ D_r.T).to(q.dtype)
            mask = torch.where(valid_o, -inf, inf)
            near = viol.scatter_reduce(1, st.idx[o], mask, reduce="amin").amax(dim=1)
            ex = torch.where(near <= ROUGH_MARGIN * lam)[0] if rough else torch.arange(
                o.shape[0], device=dev)
            if ex.numel():
                # float64 violations; iterative refinement of the face optimum (the inverses
                # are float32 and their rounding accumulates over the updates): (q − a G)_P
                # is zero at the exact one; the last violations are those of the last codes
                oe = o[ex]
                valid_e, idx_e = valid_o[ex], st.idx[oe]
                loose = torch.zeros(oe.shape[0], dtype=torch.bool, device=dev)
                spent, prev = loose, torch.full_like(loose, float("inf"), dtype=q.dtype)
                for rnd in range(REFINE_ROUNDS if low else 1):
                    g = q[oe] - st.recon(oe, D) @ D.T
                    e_P = torch.where(valid_e, torch.gather(g, 1, idx_e), 0.0)
                    if low:
                        # refine until at rounding level: far below the tolerance, or no
                        # longer gaining a digit (each round gains ~7 when all is well)
                        err = e_P.abs().amax(dim=1)
                        loose = err > REFINE_TOL * tol * lam
                        more = (err > REFINE_FLOOR * tol * lam) & (loose | (err < 0.1 * prev))
                        if rnd == REFINE_ROUNDS - 1 or not bool(more.any()):
                            spent = loose if rnd == REFINE_ROUNDS - 1 else spent
                            break
                        prev = err
                    fixed = torch.where(valid_e, st.val[oe] + st.times_H(oe, e_P), 0.0)
                    keep = ((fixed > 0) | ~valid_e).all(dim=1, keepdim=True)
                    if low:
                        keep &= more[:, None]
                    st.val[oe] = torch.where(keep, fixed, st.val[oe])
                    if low and not bool(keep.any()):
                        break
                viol[ex] = g  # float64 mode: before its one refinement, as Lawson–Hanson's
                precise[oe] = rough
                if bool(spent.any()):  # refinement too slow: the float32 inverses drifted
                    handed[oe[spent]] = True
                    live[oe[spent]] = False
            viol = viol.scatter_reduce(1, st.idx[o], mask, reduce="amin")
            m = _add_count(st.valid[o].sum(dim=1))
            top_v, top_j = viol.topk(min(int(m.max()), K), dim=1)
            rank = torch.arange(top_v.shape[1], device=dev)
            take = (top_v > tol * lam) & (rank < m[:, None])
            # a point whose codes are not yet its face's optimum to the refinement tolerance
            # (a refinement would make a code non-positive, or the rounds ran out) is not
            # optimal on its face: it solves its face again (precisely) instead of adding
            hold = ~live[o]
            if ex.numel() and low:
                hold[ex] |= loose
            opt[o[hold]] = False
            done = ~take[:, 0] & ~hold
            live[o[done]] = False
            go = ~done & ~hold
            o, top_j, take = o[go], top_j[go], take[go]
            if o.numel():
                width = int(take.sum(dim=1).max())
                well = st.add(G, o, top_j[:, :width], take[:, :width], well_pivot)
                bad = torch.where(~well)[0]
                if bad.numel():  # the worst violator alone, else hand the point back
                    ob = o[bad]
                    w1 = st.add(G, ob, top_j[bad, :1], take[bad, :1], well_pivot)
                    handed[ob[~w1]] = True
                    live[ob[~w1]] = False
        w = torch.where(live & (~opt | st.fresh.any(dim=1)))[0]
        if not w.numel():
            continue
        slots = torch.arange(st.S, device=dev)
        z = face(w)
        added = st.fresh[w]
        first = added & (slots == added.to(torch.int8).argmax(dim=1, keepdim=True))
        if seed is not None and steps == 1:
            # a seed face: any subset of it is a valid start, so its non-positive atoms all
            # leave (the first one too) until the rest is positive on its face
            for _ in range(SEED_ROUNDS):
                bad = added & (z <= 0)
                f = torch.where(bad.any(dim=1))[0]
                if not f.numel():
                    break
                st.drop(w[f], bad[f])
                z[f] = face(w[f])
                added[f] &= st.valid[w[f]]
            first = added & (slots == added.to(torch.int8).argmax(dim=1, keepdim=True))
        failed = (added & (z <= 0)).any(dim=1)
        for _ in range(KEEP_POSITIVE_ROUNDS):  # drop the non-positive adds, solve again
            bad = added & (z <= 0)
            f = torch.where(bad.any(dim=1))[0]
            if not f.numel():
                break
            # keep the worst violator unless it is the only non-positive add: then it stays
            # alone (on an optimal face its code is positive, as in Lawson–Hanson)
            alone = ~(bad[f] & ~first[f]).any(dim=1)
            cut = torch.where(alone[:, None], added[f] & ~first[f], bad[f] & ~first[f])
            f = f[cut.any(dim=1)]
            if not f.numel():
                break
            st.drop(w[f], torch.where(alone[cut.any(dim=1)][:, None],
                                      added[f] & ~first[f], bad[f] & ~first[f]))
            z[f] = face(w[f])
            added[f] &= st.valid[w[f]]
        failed = (added & (z <= 0)).any(dim=1)
        redo = torch.where(failed & (added.sum(dim=1) > 1))[0]
        if redo.numel():  # rounds spent: the worst violator alone
            st.drop(w[redo], added[redo] & ~first[redo])
            z[redo] = face(w[redo])
            added[redo] &= st.valid[w[redo]]
            failed[redo] = (added[redo] & (z[redo] <= 0)).any(dim=1)
        retry = torch.where(failed & ~precise[w])[0] if rough else failed[:0].nonzero()[:, 0]
        if retry.numel():  # a float32 face solve may get the sign wrong on a poorly
            # conditioned face: solve it again precisely before giving up on the point
            precise[w[retry]] = True
            z[retry] = face(w[retry])
            failed[retry] = (added[retry] & (z[retry] <= 0)).any(dim=1)
        stall = torch.where(failed)[0]
        if stall.numel():  # even the worst violator alone gets no positive code: hand back
            st.drop(w[stall], added[stall])
            handed[w[stall]] = True
            live[w[stall]] = False
        go = torch.where(~failed)[0]
        if not go.numel():
            continue
        wg, zg = w[go], z[go]
        valid, val = st.valid[wg], st.val[wg]
        ratio = torch.where(valid & (zg <= 0),
                            val / (val - zg).clamp(min=torch.finfo(q.dtype).tiny), 2.0)
        t, blocking = ratio.min(dim=1)
        t = t.clamp(max=1.0)
        new = torch.where(valid, val + t[:, None] * (zg - val), 0.0).clamp(min=0)
        hit = t < 1
        new[hit, blocking[hit]] = 0.0
        # the objective ½ aᵀGa − qᵀa along the step: with f(z) = −½ q_Pᵀ z on the face,
        # f(a + t (z − a)) = f(a) − (2t − t²) (f(a) − f(z))
        q_P = torch.where(valid, torch.gather(q[wg], 1, st.idx[wg]), 0.0)
        f_z = -0.5 * (q_P * zg).sum(dim=1)
        fval[wg] -= (2 * t - t * t) * (fval[wg] - f_z)
        st.val[wg] = new
        sane = st.drop(wg, valid & (new <= 0))
        opt[wg] = ~hit | ~st.valid[wg].any(dim=1)
        insane = wg[~sane]
        handed[insane] = True
        live[insane] = False
        # (the float32 pass only: a point it cannot take hands back to the float64 run,
        # which keeps to single drops)
        jump = torch.where(hit & sane & (jumps[wg] < (MULTI_DROP_MAX if low else 0))
                           & ((valid & (zg <= 0)).sum(dim=1) > 1))[0]
        if jump.numel():
            off = wg[jump][_multi_drop(st, wg[jump], zg[jump] <= 0, valid[jump], q, fval,
                                       opt, jumps, face)]
            handed[off] = True
            live[off] = False
    out[orig] = st.dense(torch.arange(orig.shape[0], device=dev), K)
    out_handed[orig] = handed | live  # live: the step budget is spent
    return out, steps, out_handed
