"""Between the passes: classify every ordered pair from pass 1's top buffers.

:func:`decide_pairs` decides ``H_ij`` exactly for almost every ordered pair from the buffers
(:mod:`dictopt.check.pairs`), lists the C5 violations they already prove (ranked by slope) and
the pairs pass 2 must track: pairs left open, certified pairs (step bounds) and label
candidates (co-activity). Memory: ``K × block`` blocks of the Gram matrix at a time.

The cosines cost ``K² d`` multiply-adds when every block forms its own; the half-product sweep
(:mod:`dictopt.check.gramsweep`) forms each unordered pair once and decides, from its values
read as intervals, every block where no rule sits within rounding of a threshold and no label
cosine (a reported value) is present; the plan is the same bit for bit
(``tests/test_plan_bound.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dictopt.check.absorption import (
    AbsorptionThresholds,
    candidate_block,
    merge_candidate_keys,
)
from dictopt.check.blocks import pair_dots
from dictopt.check.conditions import atom_floor
from dictopt.check.gramsweep import rounding_margin, sweep_blocks
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
    neighbours: tuple[torch.Tensor, torch.Tensor] | None = None
    """``(row in block, j)``, row-major, of the cosines ``≥ cos_min`` of the absorption
    thresholds (as :func:`~dictopt.check.absorption.candidate_block` compares), when the
    classification found them on its way; ``None``: the candidates scan the block."""



def decide_pairs(
    dic: Dictionary,
    lam: float,
    st1: PassOneStats,
    tau: float,
    tol: Tolerances,
    thresholds: LabelThresholds,
    block: int,
    max_pair_certificates: int,
    sweep: bool = True,
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
    sweep:
        Form each unordered pair's cosine once (:mod:`dictopt.check.gramsweep`) and decide the
        blocks whose every rule the sweep's intervals decide without their own products (on
        the CPU, float32 or float64 atoms, float32 matmul precision ``"highest"``, more than
        one block, and only when the first block's products say the sweep decides it); the
        other blocks form their row block's products as before (all the remaining blocks
        once more than half of those seen, and more than two, needed their own: the sweep no
        longer pays). ``False``: every block forms its own (the reference the sweep must
        equal bit for bit).

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
    parts = list(torch.arange(K, device=dev).split(block))
    # the margin assumes products summed in the atoms' own precision (no reduced-precision
    # matmul setting) on the CPU
    sweep = (sweep and len(parts) > 1 and D.device.type == "cpu"
             and D.dtype in (torch.float32, F64)
             and torch.get_float32_matmul_precision() == "highest")
    window = (_Window.of(D, st1, top, abar, floor, tau, tol, thresholds, dic.has_bias, block)
              if sweep else None)
    entries = None
    own = 0
    for b, rows in enumerate(parts):
        if entries is not None:
            done = _sweep_block(rows, *next(entries), window, st1, top, thresholds, K)
            if done is not None:  # decided from the sweep's intervals, no product formed
                blocks.append(done[0])
                cand_keys.append(done[1])
                continue
            own += 1
            # the sweep costs K²d/2 and each block it leaves 1/n_blocks of K²d: once half
            # the blocks are left, the row-block products are cheaper for the rest
            if own > 2 and 2 * own > b + 1:
                entries.close()
                entries = None
        # the row block's own products, as they always were: every decision on these bits
        c = D[rows] @ D.t()  # in the atoms' dtype; float64 only where a pair needs it
        if c.dtype not in (torch.float32, F64):
            c = c.to(F64)
        blocks.append(_classify_block(rows, c, st1, top, abar, floor, tau, tol,
                                      thresholds, dic.has_bias))
        cand_keys.append(candidate_block(rows, c, thresholds.absorption,
                                         above=blocks[-1].neighbours))
        if b == 0 and window is not None and _sweep_would_decide(rows, c, window, st1, top,
                                                                  thresholds, K):
            # every block's rows meet all K columns, so the first block is a fair sample of
            # how many blocks the sweep decides: sweep the rest, from this block's products
            entries = sweep_blocks(D, block, window.low, window.high, first=c, ordered=False)
            next(entries)  # the first block is decided above, on its own products
        del c
    fi, fj, fside, fval = (torch.cat([b.found[c] for b in blocks]) for c in range(4))
    ui, uj = (torch.cat([b.unknown[c] for b in blocks]) for c in range(2))
    li, lj, lc = (torch.cat([b.labels[c] for b in blocks]) for c in range(3))
    # rank known violations by slope λ·side·(θ_ij − value); only the first
    # max_pair_certificates get step bounds
    # (a block of pairs at a time: 196,504 known pairs at d = 2,304 made three 1.8 GB
    # [n, d] temporaries; a row's sum does not depend on the other rows)
    fc = pair_dots(D, fi, fj).to(F64)
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

    ``c`` is the block of cosines in the atoms' dtype; every decision is the one the float64
    copy ``c.to(float64)`` gives (the copy is exact), but the ``[B, K]`` passes compare ``c``
    itself against thresholds that decide the same (:func:`exact_at_least`) or that only
    preselect (:func:`_theta_floor`), and only the preselected pairs are formed in float64.
    The upper side is decided only on the rows that can violate it (:func:`upper_rows`, a
    bound from ā, the buffers and the row's smallest cosine); the pairs left open are read
    from the buffers' sparse list (``H_ij`` unknown) and from the counts and the cosines
    (lower side). Every output is the one the dense classification of the whole block gives,
    in the same (row-major) order."""
    K = c.shape[1]
    N = st1.n
    dev = rows.device
    n_inactive = N - st1.n_active
    tol_row = tol.pair_rel * abar[rows] + floor
    # a pair is testable when j is inactive somewhere (else H_ij, L_ij are empty) and i ≠ j
    col_ok = n_inactive > 0
    # known upper violations, on the rows whose bound allows one
    sub = upper_rows(rows, c, top, abar, tol_row, has_bias).nonzero().flatten()
    if sub.numel():
        H = dense_extremes(top, rows[sub], K)
        theta_sub = (1 - c[sub].to(F64)) * abar[rows[sub], None]
        known = col_ok[None, :] & ~torch.isnan(H)
        known[torch.arange(sub.numel(), device=dev), rows[sub]] = False
        tol_i = tol_row[sub, None]
        if has_bias:
            up_viol = known & (theta_sub - H > tol_i)
        else:  # without a bias only the strict hierarchy survives (THEORY C5)
            up_viol = known & (H <= 0) & (theta_sub > tol_i)
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
    # one scan of the block for every large cosine any rule reads: label candidates
    # (duplicate, antipodal), the lower side's θ_ij < τ (c above the row's floor) and the
    # absorption neighbours (c ≥ cos_min); each rule then filters this list, row-major
    t_dup = _round_threshold(thresholds.duplicate_cos, c.dtype, up=True)
    t_anti = _round_threshold(-thresholds.antipodal_cos, c.dtype, up=False)
    t_cm = torch.tensor(thresholds.absorption.cos_min, dtype=c.dtype)  # candidate_block's
    low = torch.minimum(t_dup, t_cm).expand(rows.numel())
    t_row = _theta_floor(abar[rows], tau, c.dtype) if has_bias else None
    if t_row is not None:
        low = torch.minimum(low, t_row)
    r, j = ((c >= low[:, None]) | (c <= t_anti)).nonzero(as_tuple=True)
    v = c[r, j]
    if has_bias:  # ... and the lower side: see the lemma in dictopt.check.pairs
        ii, jj = _lower_open(rows, c, st1.n_active, N, abar, tau, pre=(r, j, v, t_row))
        ok = col_ok[jj] & (rows[ii] != jj)
        keys.append(rows[ii[ok]] * K + jj[ok])
    key = sort_unique(torch.cat(keys))
    unknown = (key // K, key % K)
    # label candidates (upper triangle only)
    cand = ((v >= t_dup) | (v <= t_anti)) & (rows[r] < j)
    near = v >= t_cm
    return BlockPairs(found, unknown, (rows[r[cand]], j[cand], v[cand].to(F64)),
                      (r[near], j[near]))


class _Window(NamedTuple):
    """Per row ``i``, what the sweep must list and how its intervals are decided."""

    low: torch.Tensor
    """``[K]`` (atoms' dtype): list ``c_ij ≥ low_i`` (labels, absorption neighbours,
    ``θ_ij < τ``), widened by the rounding margin."""
    high: torch.Tensor
    """``[K]``: list ``c_ij ≤ high_i`` (antipodal labels, upper C5 violations)."""
    delta: torch.Tensor
    """``[K]`` float64 rounding margin (:func:`~dictopt.check.gramsweep.rounding_margin`)."""
    t_dup: float
    t_anti: float
    t_cm: float
    t_keep: float
    """The label and absorption thresholds as the block's comparisons round them."""
    tol: torch.Tensor
    abar: torch.Tensor
    tau: float
    has_bias: bool
    col_ok: torch.Tensor
    keys: torch.Tensor
    """The buffers' listed pairs ``i·K + j``, sorted (for ``H_ij``)."""
    vals: torch.Tensor
    open_keys: torch.Tensor
    """Sorted ``i·K + j`` of the listed pairs left open (``H_ij`` unknown, ``j`` testable,
    ``i ≠ j``)."""
    mark: torch.Tensor
    """``[block · K]`` bool, all False between uses: marks a block's listed pairs so that
    :func:`_block_lookup` searches only the entries that are listed."""

    @staticmethod
    def of(D: torch.Tensor, st1: PassOneStats, top: BufferExtremes, abar: torch.Tensor,
           floor: float, tau: float, tol: Tolerances, thresholds: LabelThresholds,
           has_bias: bool, block: int = 0) -> _Window:
        """The window of every row (see :func:`_sweep_block` for why it suffices)."""
        dt, K = D.dtype, D.shape[0]
        ab: AbsorptionThresholds = thresholds.absorption
        t_dup = _round_threshold(thresholds.duplicate_cos, dt, up=True)
        t_anti = _round_threshold(-thresholds.antipodal_cos, dt, up=False)
        t_cm = torch.tensor(ab.cos_min, dtype=dt)  # candidate_block's comparisons
        t_keep = torch.tensor(ab.duplicate_cos, dtype=dt)
        delta = rounding_margin(D)
        tol_K = tol.pair_rel * abar + floor
        low = torch.minimum(t_dup, t_cm).to(F64).expand(K)
        if has_bias:  # θ_ij < τ needs c_ij > t_i (_theta_floor)
            low = torch.minimum(low, _theta_floor(abar, tau, dt).to(F64))
        # upper side: c ≥ s_i gives no violation (θ_ij − H_ij ≤ θ(s_i) − min_j H_ij ≤ tol_i,
        # each rounded operation monotone); +inf where none is found (list the whole row)
        known = ~torch.isnan(top.val)
        h_min = top.first.clone().scatter_reduce(0, top.pi[known], top.val[known],
                                                 reduce="amin", include_self=True)
        bound = h_min + tol_K if has_bias else tol_K
        est = 1 - bound / abar.clamp(min=1e-300)
        s = est + 1e-6 * (1 + est.abs())
        theta_s = (1 - s) * abar
        ok = ((theta_s - h_min <= tol_K) if has_bias else (theta_s <= tol_K))
        ok &= torch.isfinite(s) & (abar > 0)
        s = torch.where(ok, s, torch.full_like(s, torch.inf))
        # ā_i = 0: θ_ij = ±0 for every finite c
        zero_ok = (0.0 - h_min <= tol_K) if has_bias else (tol_K >= 0)
        inf = torch.full_like(s, torch.inf)
        s = torch.where(abar == 0, torch.where(zero_ok, -inf, inf), s)
        if not has_bias:  # a violation needs H_ij ≤ 0, so min_j H_ij ≤ 0
            s = torch.where(h_min > 0, torch.full_like(s, -torch.inf), s)
        high = torch.maximum(t_anti.to(F64).expand(K), s)
        keys = top.pi * K + top.pj
        order = argsort_stable(keys)
        col_ok = st1.n_active < st1.n
        keys, vals = keys[order], top.val[order]
        si, sj = keys // K, keys % K
        open_keys = keys[torch.isnan(vals) & col_ok[sj] & (si != sj)]
        return _Window(_round_down(low - delta, dt), _round_up(high + delta, dt), delta,
                       float(t_dup), float(t_anti), float(t_cm), float(t_keep), tol_K, abar,
                       tau, has_bias, col_ok, keys, vals, open_keys,
                       torch.zeros(block * K, dtype=torch.bool, device=D.device))


def _sweep_would_decide(rows: torch.Tensor, c: torch.Tensor, w: _Window, st1: PassOneStats,
                        top: BufferExtremes, thresholds: LabelThresholds, K: int) -> bool:
    """Whether :func:`_sweep_block` decides the block ``rows`` from its products ``c`` read as
    intervals (the planner's guess of whether the sweep pays)."""
    r, j = ((c >= w.low[rows, None]) | (c <= w.high[rows, None])).nonzero(as_tuple=True)
    return _sweep_block(rows, rows[r], j, c[r, j], w, st1, top, thresholds, K) is not None


def _round_down(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Elementwise the largest value of ``dtype`` that is ``≤ x`` (``x`` float64)."""
    t = x.to(dtype)
    return torch.where(t.to(F64) > x, torch.nextafter(t, torch.full_like(t, -torch.inf)), t)


def _round_up(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Elementwise the smallest value of ``dtype`` that is ``≥ x`` (``x`` float64)."""
    t = x.to(dtype)
    return torch.where(t.to(F64) < x, torch.nextafter(t, torch.full_like(t, torch.inf)), t)


def _sweep_block(
    rows: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    v: torch.Tensor,
    w: _Window,
    st1: PassOneStats,
    top: BufferExtremes,
    thresholds: LabelThresholds,
    K: int,
) -> tuple[BlockPairs, torch.Tensor] | None:
    """The block's :class:`BlockPairs` and absorption candidate keys from the sweep's entries
    of its rows (in any order), exactly those :func:`_classify_block` and
    :func:`~dictopt.check.absorption.candidate_block` give on the block's own products; or
    ``None`` when the entries cannot decide it (then the block forms its products).

    The block's own cosine ``c_ij`` lies in ``[v − δ_i, v + δ_i]`` (``v`` the sweep's). Every
    rule is monotone in ``c`` (or, for an absorption neighbour, an interval of ``c``), so it is
    decided when it decides the same at both ends; entries the sweep did not list decide no
    rule (the window). The block needs its own bits when a rule is undecided, when a label
    candidate ``i < j`` may exist (its cosine is reported), or when a row with more than
    ``max_neighbours`` neighbours has no clear gap after its largest ``max_neighbours``.
    """
    dev = rows.device
    N = st1.n
    v64 = v.to(F64)
    d = w.delta[i]
    lo, hi = v64 - d, v64 + d
    off = i != j
    if bool((off & (i < j) & ((hi >= w.t_dup) | (lo <= w.t_anti))).any()):
        return None
    # absorption neighbours: cos_min ≤ c < duplicate_cos
    near, keep = lo >= w.t_cm, lo < w.t_keep
    if bool((off & ((near != (hi >= w.t_cm)) | (keep != (hi < w.t_keep)))).any()):
        return None
    nb = off & near & keep
    cand = [i[nb & (i < j)] * K + j[nb & (i < j)]]
    m = min(thresholds.absorption.max_neighbours, K - 1)
    if m >= 2 and bool(nb.any()):
        ni, nj = i[nb], j[nb]
        order = torch.argsort(ni * K + nj)  # row-major (the entries come in any order)
        ni, nj, nv, nlo, nhi = ni[order], nj[order], v64[nb][order], lo[nb][order], hi[nb][order]
        counts = torch.bincount(ni - int(rows[0]), minlength=rows.numel())
        ends = counts.cumsum(0)
        for r in (counts >= 2).nonzero().flatten().tolist():
            seg = slice(int(ends[r] - counts[r]), int(ends[r]))
            js = nj[seg]
            if js.numel() > m:  # the largest m: a clear gap decides topk's choice
                order = torch.argsort(-nv[seg])
                if float(nlo[seg][order[:m]].min()) <= float(nhi[seg][order[m:]].max()):
                    return None
                js = js[order[:m]]
            p, q = torch.triu_indices(js.numel(), js.numel(), offset=1, device=dev)
            a, b = js[p], js[q]
            cand.append(torch.minimum(a, b) * K + torch.maximum(a, b))
    ok = off & w.col_ok[j]
    # known upper violations θ_ij − H_ij > tol_i (θ smallest at the upper end); every entry
    # is computed and the rules read only the testable ones (``ok``: no masked copies)
    lo_row, hi_row = int(rows[0]), int(rows[-1])
    H = _block_lookup(top, w, i, j, K, lo_row, hi_row)
    known = ok & ~torch.isnan(H)
    ab = w.abar[i]
    th_small, th_large = (1 - hi) * ab, (1 - lo) * ab
    tol_u = w.tol[i]
    if w.has_bias:
        viol, viol_hi = known & (th_small - H > tol_u), known & (th_large - H > tol_u)
    else:
        viol = known & (H <= 0) & (th_small > tol_u)
        viol_hi = known & (H <= 0) & (th_large > tol_u)
    if bool((viol != viol_hi).any()):
        return None
    vi, vj = i[viol], j[viol]
    order = torch.argsort(vi * K + vj)  # row-major, as the block's own classification
    found = (vi[order], vj[order], torch.ones_like(vi), H[viol][order])
    # pairs left open: H_ij unknown (the window's sorted list of them, sliced to the block's
    # rows: a mask over every listed pair for each block was quadratic in the blocks) ...
    a, b = torch.searchsorted(w.open_keys, torch.tensor([lo_row * K, (hi_row + 1) * K],
                                                        device=dev)).tolist()
    keys = [w.open_keys[a:b]]
    if w.has_bias:  # ... and the lower side
        below, below_lo = ok & (th_small < w.tau), ok & (th_large < w.tau)
        if bool((below != below_lo).any()):
            return None
        keys.append(i[below] * K + j[below])
        n_active = st1.n_active
        both_rows = ((n_active[rows] + n_active.max()) >= N).nonzero().flatten()
        if both_rows.numel():
            hit = n_active[rows[both_rows], None] + n_active[None, :] >= N
            r, jj = hit.nonzero(as_tuple=True)
            gi = rows[both_rows[r]]
            sel = w.col_ok[jj] & (gi != jj)
            keys.append(gi[sel] * K + jj[sel])
    key = sort_unique(torch.cat(keys))
    empty = torch.zeros(0, dtype=torch.long, device=dev)
    labels = (empty, empty, torch.zeros(0, dtype=F64, device=dev))
    return BlockPairs(found, (key // K, key % K), labels), torch.cat(cand)


def _block_lookup(top: BufferExtremes, w: _Window, P_i: torch.Tensor, P_j: torch.Tensor,
                  K: int, lo_row: int, hi_row: int) -> torch.Tensor:
    """:func:`_lookup` with the window's sorted keys, for pairs whose rows lie in
    ``lo_row … hi_row``: searched in the slice of the keys of those rows only."""
    out = top.first[P_i]
    base = lo_row * K
    a, b = torch.searchsorted(w.keys, torch.tensor([base, (hi_row + 1) * K],
                                                  device=P_i.device)).tolist()
    if b > a and P_i.numel():
        keys, vals = w.keys[a:b], w.vals[a:b]
        q = P_i * K + P_j
        if w.mark.numel() >= (hi_row - lo_row + 1) * K:
            # mark the block's listed pairs, search only the entries that hit one
            local = keys - base
            w.mark[local] = True
            sel = w.mark[q - base].nonzero().flatten()
            w.mark[local] = False
            q = q[sel]
            pos = torch.searchsorted(keys, q).clamp(max=b - a - 1)
            out[sel] = torch.where(keys[pos] == q, vals[pos], out[sel])
        else:
            pos = torch.searchsorted(keys, q).clamp(max=b - a - 1)
            out = torch.where(keys[pos] == q, vals[pos], out)
    return out


def exact_at_least(c: torch.Tensor, x: float) -> torch.Tensor:
    """``c.to(float64) >= x`` without forming the float64 copy.

    Parameters
    ----------
    c:
        Floating tensor (float32, float64, ...).
    x:
        A float64 threshold.

    Returns
    -------
    torch.Tensor
        Boolean, ``c``'s shape: ``c`` is compared with the smallest value of its dtype that is
        ``≥ x`` (a comparison with the Python float would round ``x`` to ``c``'s dtype first).
    """
    return c >= _round_threshold(x, c.dtype, up=True)


def exact_at_most(c: torch.Tensor, x: float) -> torch.Tensor:
    """``c.to(float64) <= x`` without forming the float64 copy (see :func:`exact_at_least`).

    Parameters
    ----------
    c:
        Floating tensor.
    x:
        A float64 threshold.

    Returns
    -------
    torch.Tensor
        Boolean, ``c``'s shape.
    """
    return c <= _round_threshold(x, c.dtype, up=False)


def _round_threshold(x: float, dtype: torch.dtype, *, up: bool) -> torch.Tensor:
    """The value of ``dtype`` nearest ``x`` on the side ``up`` (``x`` itself if representable),
    as a 0-d tensor of ``dtype`` (so that comparisons stay in ``dtype``)."""
    x64 = torch.tensor(x, dtype=F64)
    return _round_up(x64, dtype) if up else _round_down(x64, dtype)


def _lower_open(
    rows: torch.Tensor,
    c: torch.Tensor,
    n_active: torch.Tensor,
    N: int,
    abar: torch.Tensor,
    tau: float,
    pre: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ii, jj)``, row-major, where ``n_i + n_j ≥ N`` or ``θ_ij = (1 − c_ij) ā_i < τ``
    (computed in float64, as the dense rule), without a float64 ``[B, K]`` pass.

    ``pre = (r, j, c[r, j], t)``: a row-major list of entries holding every ``c_ij > t_i``
    (``t`` from :func:`_theta_floor`), found by the caller's scan; ``None``: scanned here.

    Counts are exact integers in float64, so ``n_i + n_j ≥ N`` is possible only on rows with
    ``n_i + max_j n_j ≥ N``. ``θ`` is nonincreasing in ``c`` (each rounded operation is
    monotone and ``ā ≥ 0``), so a row's pairs with ``θ_ij < τ`` have ``c_ij`` above any value
    ``t_i`` with ``θ(t_i) ≥ τ``, checked in float64 (:func:`_theta_floor`); only the entries
    above it are formed in float64 and decided exactly.
    """
    B, K = c.shape
    dev = c.device
    # n_i + n_j ≥ N: only on rows that reach N with the largest count
    both_rows = ((n_active[rows] + n_active.max()) >= N).nonzero().flatten()
    pi, pj = [], []
    if both_rows.numel():
        hit = n_active[rows[both_rows], None] + n_active[None, :] >= N
        r, j = hit.nonzero(as_tuple=True)
        pi.append(both_rows[r])
        pj.append(j)
    # θ_ij < τ: preselect c > t_i in c's dtype, decide in float64
    if pre is None:
        t = _theta_floor(abar[rows], tau, c.dtype)
        r, j = (c > t[:, None]).nonzero(as_tuple=True)
        v = c[r, j]
    else:
        r, j, v, t = pre
        above = v > t[r]
        r, j, v = r[above], j[above], v[above]
    if r.numel():
        theta = (1 - v.to(F64)) * abar[rows[r]]
        keep = theta < tau
        pi.append(r[keep])
        pj.append(j[keep])
    if not pi:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return empty, empty
    key = sort_unique(torch.cat(pi) * K + torch.cat(pj))  # row-major, each pair once
    return key // K, key % K


def _theta_floor(abar_B: torch.Tensor, tau: float, dtype: torch.dtype) -> torch.Tensor:
    """Per row, a value ``t_i`` of ``dtype`` with ``fl((1 − t_i) ā_i) ≥ τ`` in float64 (so every
    ``c ≤ t_i`` has ``θ ≥ τ``), near the largest such value; ``-inf`` where none is found
    (the whole row is then decided in float64)."""
    est = 1 - tau / abar_B.clamp(min=1e-300)  # θ(c) = τ in exact arithmetic
    est = est - 1e-6 * (1 + est.abs())  # margin for rounding
    t = _round_down(est, dtype)
    ok = ((1 - t.to(F64)) * abar_B >= tau) & torch.isfinite(t) & (abar_B > 0)
    t = torch.where(ok, t, torch.full_like(t, -torch.inf))
    # ā_i = 0: θ_ij = ±0 for every (finite) c, below τ only when τ > 0
    return torch.where((abar_B == 0) & (tau <= 0), torch.full_like(t, torch.inf), t)


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
        Their cosines with every atom ``[B, K]`` (any float dtype; read in float64).
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
    # the row minimum, then float64: the same as the minimum of the float64 copy
    return (1 - c.amin(dim=1).to(F64)) * abar[rows] - h_min > tol_row


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
