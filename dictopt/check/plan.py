"""Between the passes: classify every ordered pair from pass 1's top buffers.

:func:`decide_pairs` decides ``H_ij`` exactly for almost every ordered pair from the buffers
(:mod:`dictopt.check.pairs`), lists the C5 violations they already prove (ranked by slope) and
the pairs pass 2 must track: pairs left open, certified pairs (step bounds) and label
candidates (co-activity). Memory: ``K × block`` blocks of the Gram matrix at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

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
    of ``block`` rows of the Gram matrix at a time, and list the pairs pass 2 must track."""
    K, D, dev = dic.K, dic.atoms, dic.device
    abar = st1.mean_a
    top = buffer_extremes(st1.top, K)
    floor = atom_floor(abar, tol)
    blocks = [
        _classify_block(rows, D, st1, top, abar, floor, tau, tol, thresholds, dic.has_bias)
        for rows in torch.arange(K, device=dev).split(block)
    ]
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
        key, H0, L0,
    )


def _classify_block(
    rows: torch.Tensor,
    D: torch.Tensor,
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
    buffer's ``H_ij`` (THEORY C5), pairs the buffers leave open, and label candidates."""
    K = D.shape[0]
    N = st1.n
    n_inactive = N - st1.n_active
    c = (D[rows] @ D.t()).to(F64)
    theta = (1 - c) * abar[rows, None]
    tol_i = (tol.pair_rel * abar[rows] + floor)[:, None]
    # a pair is testable when j is inactive somewhere (else H_ij, L_ij are empty) and i ≠ j
    valid = (n_inactive[None, :] > 0).expand_as(c).clone()
    valid[torch.arange(rows.numel()), rows] = False
    H = dense_extremes(top, rows, K)
    known = valid & ~torch.isnan(H)
    if has_bias:
        up_viol = known & (theta - H > tol_i)
    else:  # without a bias only the strict hierarchy survives (THEORY C5)
        up_viol = known & (H <= 0) & (theta > tol_i)
    ii, jj = up_viol.nonzero(as_tuple=True)
    found = (rows[ii], jj, torch.ones_like(ii), H[ii, jj])
    up_unknown = valid & torch.isnan(H)
    if has_bias:  # lower side: see the lemma in dictopt.check.pairs
        both = st1.n_active[rows, None] + st1.n_active[None, :] >= N
        lo_unknown = valid & (both | (theta < tau))
    else:
        lo_unknown = torch.zeros_like(valid)
    ii, jj = (up_unknown | lo_unknown).nonzero(as_tuple=True)
    unknown = (rows[ii], jj)
    # label candidates (upper triangle only)
    cand = ((c >= thresholds.absorption_cos) | (c <= -thresholds.antipodal_cos)) & (
        rows[:, None] < torch.arange(K, device=rows.device)[None, :]
    )
    ii, jj = cand.nonzero(as_tuple=True)
    return BlockPairs(found, unknown, (rows[ii], jj, c[ii, jj]))



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
