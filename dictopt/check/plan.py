"""Between the passes: classify every ordered pair from pass 1's top buffers.

:func:`decide_pairs` decides ``H_ij`` exactly for almost every ordered pair from the buffers
(:mod:`dictopt.check.pairs`), lists the C5 violations they already prove (ranked by slope) and
the pairs pass 2 must track: pairs left open, certified pairs (step bounds) and label
candidates (co-activity). Memory: ``K × block`` blocks of the Gram matrix at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dictopt.check.absorption import candidate_block, merge_candidate_keys
from dictopt.check.conditions import atom_floor
from dictopt.check.pairs import BufferExtremes, buffer_extremes, dense_extremes
from dictopt.check.stats import PassOneStats, argsort_stable, sort_unique
from dictopt.check.tolerances import LabelThresholds, Tolerances
from dictopt.problem import Dictionary

F64 = torch.float64


class KnownViolations(NamedTuple):
    """C5 violations the buffers decide exactly, ranked by slope (steepest first)."""

    i: torch.Tensor
    j: torch.Tensor
    side: torch.Tensor
    """``+1`` upper (``θ_ij > H_ij``), ``−1`` lower (``L_ij > θ_ij``)."""
    value: torch.Tensor
    """``H_ij`` (upper) or ``L_ij`` (lower)."""
    n_certified: int
    """The first ``n_certified`` get step bounds from pass 2; the rest step 0."""


class LabelCandidates(NamedTuple):
    """Pairs ``i < j`` whose cosine may earn a structural label (duplicate, absorption, C6)."""

    i: torch.Tensor
    j: torch.Tensor
    cos: torch.Tensor


class PairPlan(NamedTuple):
    """Between the passes: what the buffers decided and what pass 2 must compute."""

    known: KnownViolations
    unknown_keys: torch.Tensor
    """``i·K + j`` of the pairs the buffers could not decide (C5 computed in pass 2)."""
    labels: LabelCandidates
    key: torch.Tensor
    """Sorted ``i·K + j`` of every pair pass 2 tracks (unknown, certified, label pairs)."""
    H0: torch.Tensor
    """Initial ``H`` of the tracked pairs: exact where the buffers know it, else 0."""
    L0: torch.Tensor
    """Initial ``L`` of the tracked pairs: the safe bound ``max_n a_in``."""
    absorption: tuple[torch.Tensor, torch.Tensor] | None = None
    """``(i, j)`` candidate pairs of the structural absorption statistics
    (:mod:`dictopt.check.absorption`), streamed in pass 2."""


class BlockPairs(NamedTuple):
    """The pairs of one block of rows ``i``, classified from the buffers."""

    found: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    """``(i, j, side, value)`` of known violations."""
    unknown: tuple[torch.Tensor, torch.Tensor]
    """``(i, j)`` of pairs left to pass 2."""
    labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    """``(i, j, cos)`` of label candidates."""



def decide_pairs(
    dic: Dictionary,
    lam: float,
    st1: PassOneStats,
    tau: float,
    tol: Tolerances,
    thresholds: LabelThresholds,
    block: int,
    max_pair_certificates: int,
) -> PairPlan:
    """Classify every ordered pair from the top buffers (:mod:`dictopt.check.pairs`), a block
    of ``block`` rows of the Gram matrix at a time, and list the pairs pass 2 must track.

    Parameters
    ----------
    dic:
        The dictionary (with λ).
    lam:
        λ.
    st1, tau, tol:
        Pass 1's statistics, the inactivity threshold and the tolerances.
    thresholds:
        Label thresholds (which pairs are label candidates).
    block:
        Rows of the Gram matrix per block.
    max_pair_certificates:
        Known violations (by slope) that get step bounds in pass 2.

    Returns
    -------
    PairPlan
        The known violations, the open pairs and what pass 2 tracks.
    """
    K, D, dev = dic.K, dic.atoms, dic.device
    abar = st1.mean_a
    top = buffer_extremes(st1.top, K)
    floor = atom_floor(abar, tol)
    # one Gram block at a time, formed once: the C5 classification and the absorption
    # candidates read the same cosines (never a K × K matrix)
    blocks, cand_keys = [], []
    for rows in torch.arange(K, device=dev).split(block):
        c = D[rows] @ D.t()
        blocks.append(_classify_block(rows, c.to(F64), st1, top, abar, floor, tau, tol,
                                      thresholds, dic.has_bias))
        cand_keys.append(candidate_block(rows, c, thresholds.absorption))
        del c
    fi, fj, fside, fval = (torch.cat([b.found[c] for b in blocks]) for c in range(4))
    ui, uj = (torch.cat([b.unknown[c] for b in blocks]) for c in range(2))
    li, lj, lc = (torch.cat([b.labels[c] for b in blocks]) for c in range(3))
    # rank known violations by slope λ·side·(θ_ij − value); only the first
    # max_pair_certificates get step bounds
    fc = (D[fi] * D[fj]).sum(1).to(F64)
    fslope = lam * fside * ((1 - fc) * abar[fi] - fval)
    order = argsort_stable(-fslope)
    fi, fj, fside, fval = (t[order] for t in (fi, fj, fside, fval))
    nb = min(max_pair_certificates, fi.numel())
    # pass-2 pair list: unknown pairs, certified pairs (step bounds), label pairs (co-activity)
    P_i = torch.cat([ui, fi[:nb], li])
    P_j = torch.cat([uj, fj[:nb], lj])
    key = sort_unique(torch.cat([P_i * K + P_j]))
    P_i, P_j = key // K, key % K
    # initial extremes: exact where the buffers know them, otherwise the safe bounds
    # (H ≥ 0 and L ≤ max_n a_in always hold)
    Hk = _lookup(top, P_i, P_j, K)
    H0 = torch.where(torch.isnan(Hk), torch.zeros(key.numel(), dtype=F64, device=dev), Hk)
    L0 = st1.max_a[P_i].clone()
    return PairPlan(
        KnownViolations(fi, fj, fside, fval, nb), ui * K + uj, LabelCandidates(li, lj, lc),
        key, H0, L0, merge_candidate_keys(cand_keys, K),
    )


def _classify_block(
    rows: torch.Tensor,
    c: torch.Tensor,
    st1: PassOneStats,
    top: BufferExtremes,
    abar: torch.Tensor,
    floor: float,
    tau: float,
    tol: Tolerances,
    thresholds: LabelThresholds,
    has_bias: bool,
) -> BlockPairs:
    """The pairs ``(i, j)``, ``i ∈ rows``: C5 with ``θ_ij = (1 − c_ij) ā_i`` against the
    buffer's ``H_ij`` (THEORY C5), pairs the buffers leave open, and label candidates.

    The upper side is decided only on the rows that can violate it (:func:`upper_rows`, a
    bound from ā, the buffers and the row's smallest cosine); the pairs left open are read
    from the buffers' sparse list (``H_ij`` unknown) and from the counts and the cosines
    (lower side). Every output is the one the dense classification of the whole block gives,
    in the same (row-major) order."""
    K = c.shape[1]
    N = st1.n
    dev = rows.device
    n_inactive = N - st1.n_active
    theta = (1 - c) * abar[rows, None]
    tol_row = tol.pair_rel * abar[rows] + floor
    # a pair is testable when j is inactive somewhere (else H_ij, L_ij are empty) and i ≠ j
    col_ok = n_inactive > 0
    # known upper violations, on the rows whose bound allows one
    sub = upper_rows(rows, c, top, abar, tol_row, has_bias).nonzero().flatten()
    if sub.numel():
        H = dense_extremes(top, rows[sub], K)
        known = col_ok[None, :] & ~torch.isnan(H)
        known[torch.arange(sub.numel(), device=dev), rows[sub]] = False
        tol_i = tol_row[sub, None]
        if has_bias:
            up_viol = known & (theta[sub] - H > tol_i)
        else:  # without a bias only the strict hierarchy survives (THEORY C5)
            up_viol = known & (H <= 0) & (theta[sub] > tol_i)
        ii, jj = up_viol.nonzero(as_tuple=True)
        found = (rows[sub[ii]], jj, torch.ones_like(ii), H[ii, jj])
    else:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        found = (empty, empty, empty, torch.zeros(0, dtype=F64, device=dev))
    # pairs left open: H_ij unknown (listed NaN in the buffers) ...
    lo_row, hi_row = int(rows[0]), int(rows[-1])
    nan = torch.isnan(top.val) & (top.pi >= lo_row) & (top.pi <= hi_row)
    nan &= col_ok[top.pj] & (top.pi != top.pj)
    keys = [top.pi[nan] * K + top.pj[nan]]
    if has_bias:  # ... and the lower side: see the lemma in dictopt.check.pairs
        both = st1.n_active[rows, None] + st1.n_active[None, :] >= N
        lo = (both | (theta < tau)) & col_ok[None, :]
        lo[torch.arange(rows.numel(), device=dev), rows] = False
        ii, jj = lo.nonzero(as_tuple=True)
        keys.append(rows[ii] * K + jj)
    key = sort_unique(torch.cat(keys))
    unknown = (key // K, key % K)
    # label candidates (upper triangle only)
    cand = ((c >= thresholds.duplicate_cos) | (c <= -thresholds.antipodal_cos)) & (
        rows[:, None] < torch.arange(K, device=dev)[None, :]
    )
    ii, jj = cand.nonzero(as_tuple=True)
    return BlockPairs(found, unknown, (rows[ii], jj, c[ii, jj]))


def upper_rows(
    rows: torch.Tensor,
    c: torch.Tensor,
    top: BufferExtremes,
    abar: torch.Tensor,
    tol_row: torch.Tensor,
    has_bias: bool,
) -> torch.Tensor:
    """Which rows ``i`` can hold a known upper C5 violation ``θ_ij − H_ij > tol_i``.

    With a bias: ``θ_ij = (1 − c_ij) ā_i ≤ (1 − min_j c_ij) ā_i`` and ``H_ij ≥ H_i`` (the
    smallest known extreme of row ``i``: ``first[i]`` or a listed value), so a row whose
    ``(1 − min_j c_ij) ā_i − H_i`` is within ``tol_i`` has no violation. Rounding keeps the
    bound: each operation is monotone in its inputs, so the bound computed in floating point
    is at least every ``θ_ij − H_ij`` computed in floating point. Without a bias a violation
    needs ``H_ij ≤ 0``, so ``H_i ≤ 0``.

    Parameters
    ----------
    rows:
        The block's rows ``[B]``.
    c:
        Their cosines with every atom ``[B, K]`` (float64).
    top:
        The buffers' extremes.
    abar:
        ``ā`` ``[K]``.
    tol_row:
        ``tol_i`` of each row ``[B]``.
    has_bias:
        Whether the dictionary has a bias.

    Returns
    -------
    torch.Tensor
        ``[B]`` bool.
    """
    K = abar.shape[0]
    known = ~torch.isnan(top.val)
    h_min = top.first.clone().scatter_reduce(
        0, top.pi[known], top.val[known], reduce="amin", include_self=True
    )[rows]
    if not has_bias:
        return h_min <= 0
    del K
    return (1 - c.amin(dim=1)) * abar[rows] - h_min > tol_row


def _lookup(ext: BufferExtremes, P_i: torch.Tensor, P_j: torch.Tensor, K: int) -> torch.Tensor:
    """Buffer value of each pair (NaN = unknown): sparse entries override ``first[i]``."""
    out = ext.first[P_i].clone()
    keys = ext.pi * K + ext.pj
    order = argsort_stable(keys)
    sk = keys[order]
    q = P_i * K + P_j
    pos = torch.searchsorted(sk, q).clamp(max=max(sk.numel() - 1, 0))
    if sk.numel():
        hit = sk[pos] == q
        out[hit] = ext.val[order[pos[hit]]]
    return out
