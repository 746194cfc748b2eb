"""Absorption from structure: streamed co-firing statistics of candidate pairs and the star.

Feature absorption (Chanin et al.) turns a hierarchy — a parent feature ``p`` that fires whenever
a child ``c_k`` fires — into a *star* of latents: a hub ``h ≈ F_p`` that stops firing when a
child fires, and partners ``k ≈ F_{c_k} + α F_p`` that carry the parent's direction. The data
cannot tell this apart from a world of mutually exclusive features (basis non-identifiability),
so the label reads it from structure only:

- **association** of a pair ``(i, j)``: ``i`` and ``j`` co-fire on ``n_ij`` rows where
  independence predicts ``E_ij = n_i n_j / N``; ``lift = n_ij / E_ij`` and the Poisson
  z-score ``z = (E_ij − n_ij) / √E_ij`` (positive: exclusion; negative: nesting). Pairs with
  ``E_ij < z_min²`` can never reach significance and are *rare* (kept out of labels).
- **silenced hub**: the hub fires on at most ``cofire_max`` of the partner's rows, with a
  binomial z-score (:func:`silenced_z`).
- **suppression**: the mean code of ``i`` on the rows where ``j`` fires against the rows where it
  does not, with a Welch z-score from the streamed sums of squares (reported as evidence).
- **star** (:func:`find_stars`): a hub ``h`` with partners that share its direction
  (``cos_min ≤ c_hk < duplicate_cos``), are not rare and silence it, at least two of them
  significantly associated with it, two of whose *remainders* ``d_k − c_hk d_h`` are distinct
  (cosine ≤ ``remainder_cos``); the
  hub is the most *central* member, ``Σ_k c_hk · P(h fires | k fires)`` over its links (its
  direction is shared by the others and it still fires on part of their rows), a partner
  belongs to the hub it shares most, and no other latent may be closer than the hub to every
  partner.

Hierarchies in SAELens-trained SAEs rarely become exact exclusions: partial absorption keeps
the hub firing on part of the partner's rows, so the co-firing of a true (hub, partner) pair is
usually *above* independence; the label therefore asks for a significant departure from
independence either way plus a silenced hub, not for an exclusion
(``benchmarks/bench_absorption.py`` measures it against known truth). Absorption moves a pair
from nested (a kept hierarchy, far above independence) through independence to exclusion, so a
partner half-way absorbed co-fires at independence: once two significantly associated partners
establish the star, further partners join it on the silencing test alone (significant by its own
binomial z), which doubled the absorbed edges found among those the association test missed
without labelling independently firing latents (a star still needs two associated partners).

Statistics are streamed over chunks of codes for a fixed list of candidate pairs
(:func:`candidate_pairs`: pairs whose decoder cosine reaches ``cos_min``, plus pairs that share
such a neighbour), with the start / update / merge / finish shape of the other passes, so they run
in the same pass as the pair extremes and merge across processes. Memory is ``O(K + P)`` for
``P`` candidate pairs; no ``K × K`` co-firing matrix is formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from dictopt.check.blocks import DENSE_ELEMENTS, column_block, pair_dots

F64 = torch.float64


@dataclass(frozen=True)
class AbsorptionThresholds:
    """Thresholds of the structural absorption label."""

    cos_min: float = 0.35
    """A partner shares the hub's direction: decoder cosine at least this (about two standard
    deviations of the cosine of random directions in 32 dimensions)."""
    duplicate_cos: float = 0.75
    """Pairs at or above this cosine are near-duplicates (feature splitting), not absorption:
    absorbed partners measured on SAELens hierarchy worlds share 0.4–0.75 of the hub."""
    z_min: float = 3.0
    """Significance of every test: association (Poisson z against independence), silenced hub
    (binomial z), and the rare threshold ``E < z_min²``."""
    cofire_max: float = 0.7
    """A partner silences the hub: the hub fires on at most this fraction of the partner's
    rows (significantly, binomial z ≥ ``z_min``)."""
    remainder_cos: float = 0.5
    """Partners' remainders ``d_k − c_hk d_h`` are distinct: pairwise cosine at most this."""
    require_association: bool = True
    """A star needs two partners whose co-firing with the hub is significantly far from
    independence (further partners need only be not rare); ``False``: every partner counts."""
    max_neighbours: int = 32
    """Two-hop candidates are formed from at most this many nearest neighbours per atom."""


DEFAULT_ABSORPTION = AbsorptionThresholds()


@dataclass
class AbsorptionStats:
    """Mergeable streamed sums for candidate pairs ``(pi[p], pj[p])`` (``pi < pj``)."""

    pi: torch.Tensor
    pj: torch.Tensor
    n: int = 0
    n_k: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """Rows where each atom fires ``[K]`` (like ``s_k`` and ``q_k``: summed at least at every
    atom of a pair, the only ones read; an atom far from every pair may stay 0)."""
    s_k: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """Sum of each atom's codes ``[K]``."""
    q_k: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """Sum of each atom's squared codes ``[K]``."""
    co: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """Rows where both atoms of the pair fire ``[P]``."""
    s_i_on_j: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """Sum of ``a_i`` over the rows where ``j`` fires ``[P]`` (and ``q_`` the squares)."""
    s_j_on_i: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    q_i_on_j: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    q_j_on_i: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    block_elements: int = 1 << 20
    dense_elements: int = DENSE_ELEMENTS
    """Largest float64 block of a chunk's codes formed at once (the per-atom sums)."""


def candidate_pairs(
    atoms_KD: torch.Tensor, th: AbsorptionThresholds = DEFAULT_ABSORPTION, block: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unordered candidate pairs ``(i < j)``: decoder cosine in ``[cos_min, duplicate_cos)``,
    plus every pair of such neighbours of a common atom (the partners of a possible star).

    The Gram matrix is formed ``block`` rows at a time, in the atoms' own dtype (the check's
    planner passes its own Gram blocks to :func:`candidate_block` instead, so a check forms
    the Gram matrix once); each atom keeps at most ``max_neighbours`` neighbours (its largest
    cosines) for the two-hop pairs.

    Parameters
    ----------
    atoms_KD:
        ``[K, d]`` unit atoms.
    th:
        The thresholds (``cos_min``, ``duplicate_cos``, ``max_neighbours``).
    block:
        Rows of the Gram matrix formed at a time.

    Returns
    -------
    (pi, pj):
        Long tensors ``[P]`` with ``pi < pj``, sorted by ``pi * K + pj``.
    """
    K = atoms_KD.shape[0]
    rows_all = torch.arange(K, device=atoms_KD.device)
    keys = [candidate_block(rows, atoms_KD[rows] @ atoms_KD.t(), th)
            for rows in rows_all.split(block)]
    return merge_candidate_keys(keys, K)


def candidate_block(
    rows: torch.Tensor,
    c_BK: torch.Tensor,
    th: AbsorptionThresholds,
    above: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Candidate pair keys ``i·K + j`` (``i < j``) found in one block of Gram rows.

    Parameters
    ----------
    rows:
        ``[B]`` the block's atoms.
    c_BK:
        ``[B, K]`` their cosines with every atom (not modified).
    th:
        The thresholds.
    above:
        ``(c_BK >= th.cos_min).nonzero(as_tuple=True)`` when the caller has it (the
        planner's own scan of the block); ``None``: found here.

    Returns
    -------
    torch.Tensor
        Long keys, unsorted and possibly repeated (:func:`merge_candidate_keys` merges them):
        the block's direct pairs, and every pair of two neighbours of one of its atoms.
    """
    B, K = c_BK.shape
    dev = c_BK.device
    # the block's neighbours, read off the entries above cos_min (few) rather than a
    # second [B, K] mask
    ii, jj = (c_BK >= th.cos_min).nonzero(as_tuple=True) if above is None else above
    keep = (c_BK[ii, jj] < th.duplicate_cos) & (rows[ii] != jj)  # not its own partner
    ii, jj = ii[keep], jj[keep]
    gi = rows[ii]
    keep = gi < jj
    out = [gi[keep] * K + jj[keep]]
    m = min(th.max_neighbours, K - 1)
    # two-hop pairs: only rows with two neighbours or more can give one
    sel = (torch.bincount(ii, minlength=B) >= 2).nonzero().flatten()
    if m >= 2 and sel.numel():
        c_SK = c_BK[sel]
        ok = (c_SK >= th.cos_min) & (c_SK < th.duplicate_cos)
        ok[torch.arange(sel.numel(), device=dev), rows[sel]] = False
        val, idx = c_SK.masked_fill(~ok, -3.0).topk(m, dim=1)
        valid = val > -3.0
        p, q = torch.triu_indices(m, m, offset=1, device=dev)
        both = valid[:, p] & valid[:, q]
        a, b = idx[:, p][both], idx[:, q][both]
        out.append(torch.minimum(a, b) * K + torch.maximum(a, b))
    return torch.cat(out)


def merge_candidate_keys(keys: list[torch.Tensor], K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted, unique pairs ``(pi, pj)`` of the keys of every block."""
    allk = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.long)
    allk = torch.unique(allk)
    return allk // K, allk % K


def absorption_start(pi: torch.Tensor, pj: torch.Tensor, K: int) -> AbsorptionStats:
    """Empty statistics for the pairs ``(pi, pj)`` of ``K`` atoms.

    Parameters
    ----------
    pi, pj:
        ``[P]`` long tensors, the candidate pairs (:func:`candidate_pairs`).
    K:
        Number of atoms.

    Returns
    -------
    AbsorptionStats
        Zero sums: ``[K]`` per atom and ``[P]`` per pair, in float64 on ``pi``'s device.
    """
    dev = pi.device
    P = pi.numel()

    def z(m: int) -> torch.Tensor:
        return torch.zeros(m, dtype=F64, device=dev)

    return AbsorptionStats(pi, pj, 0, z(K), z(K), z(K), z(P), z(P), z(P), z(P), z(P))


def absorption_update(st: AbsorptionStats, codes_NK: torch.Tensor) -> None:
    """Add a chunk of nonnegative codes to the statistics, in place.

    Parameters
    ----------
    st:
        The statistics (:func:`absorption_start`).
    codes_NK:
        ``[n, K]`` nonnegative codes (an atom fires where its code is > 0).

    Returns
    -------
    None
        Adds the row count, per-atom firings, sums and squares, and per pair the co-firings and
        each atom's sums and squares where the other fires (pairs ``block_elements / n`` at a
        time).
    """
    n, K = codes_NK.shape
    if n == 0:
        return
    st.n += n
    # per-atom sums over column blocks of at most ``dense_elements`` float64 entries: one
    # block (the whole chunk at once) unless the chunk is wide, so no [n, K] float64 copy of
    # the codes is held at large K (issue #21)
    width = column_block(n, K, st.dense_elements)
    # only the blocks that hold an atom of some pair: the per-atom sums are read at those
    # atoms alone (:func:`pair_statistics`, :func:`find_stars`), and each block is summed
    # exactly as before, so the values read are the same bits
    for b in torch.unique(torch.cat([st.pi, st.pj]) // width).tolist():
        lo = b * width
        a = codes_NK[:, lo : lo + width].to(F64)
        st.n_k[lo : lo + width] += (a > 0).to(F64).sum(0)
        st.s_k[lo : lo + width] += a.sum(0)
        st.q_k[lo : lo + width] += (a * a).sum(0)
        del a  # before the next block is formed
    P = st.pi.numel()
    block = max(1, st.block_elements // n)
    for lo in range(0, P, block):
        sl = slice(lo, lo + block)
        ai, aj = codes_NK[:, st.pi[sl]].to(F64), codes_NK[:, st.pj[sl]].to(F64)
        oi, oj = (ai > 0).to(F64), (aj > 0).to(F64)
        st.co[sl] += (oi * oj).sum(0)
        st.s_i_on_j[sl] += (ai * oj).sum(0)
        st.s_j_on_i[sl] += (aj * oi).sum(0)
        st.q_i_on_j[sl] += (ai * ai * oj).sum(0)
        st.q_j_on_i[sl] += (aj * aj * oi).sum(0)


def absorption_merge(p: AbsorptionStats, q: AbsorptionStats) -> AbsorptionStats:
    """Statistics of the union of two disjoint sets of rows (same pairs).

    Parameters
    ----------
    p, q:
        Statistics of the same pairs.

    Returns
    -------
    AbsorptionStats
        A new object holding the sums of both.

    Raises
    ------
    ValueError
        When ``p`` and ``q`` hold different pairs.
    """
    if not (torch.equal(p.pi, q.pi) and torch.equal(p.pj, q.pj)):
        raise ValueError("absorption_merge: the two statistics hold different pairs")
    return AbsorptionStats(
        p.pi, p.pj, p.n + q.n, p.n_k + q.n_k, p.s_k + q.s_k, p.q_k + q.q_k, p.co + q.co,
        p.s_i_on_j + q.s_i_on_j, p.s_j_on_i + q.s_j_on_i, p.q_i_on_j + q.q_i_on_j,
        p.q_j_on_i + q.q_j_on_i, p.block_elements,
    )


@dataclass(frozen=True)
class PairStatistics:
    """Per candidate pair ``[P]``: exclusion and suppression with their significance."""

    pi: torch.Tensor
    pj: torch.Tensor
    cos: torch.Tensor
    coactive: torch.Tensor
    expected: torch.Tensor
    """``n_i n_j / N``: co-firing expected under independence."""
    lift: torch.Tensor
    z_exclusion: torch.Tensor
    """``(E − n_ij) / √E`` (Poisson standard error under independence)."""
    rare: torch.Tensor
    """``E < z_min²``: too few firings for an exclusion to be significant."""
    suppression_i: torch.Tensor
    """``1 − mean(a_i | j fires) / mean(a_i | j silent)``: how much ``j`` silences ``i``."""
    z_suppression_i: torch.Tensor
    suppression_j: torch.Tensor
    z_suppression_j: torch.Tensor


def pair_statistics(
    st: AbsorptionStats, atoms_KD: torch.Tensor, th: AbsorptionThresholds = DEFAULT_ABSORPTION
) -> PairStatistics:
    """Finish the streamed sums into per-pair statistics (see the module docstring).

    Parameters
    ----------
    st:
        The streamed statistics of ``P`` pairs.
    atoms_KD:
        ``[K, d]`` unit atoms (for the pairs' cosines).
    th:
        The thresholds (``z_min`` decides which pairs are too rare to judge).

    Returns
    -------
    PairStatistics
        Per pair ``[P]``: cosine, co-firings, their expected number under independence, lift,
        exclusion z-score, ``rare``, and each atom's suppression where the other fires (with its
        z-score).
    """
    N = max(st.n, 1)
    # blocks of pairs in float64: no float64 copy of all K atoms, no [P, d] gathers (issue #17)
    cos = pair_dots(atoms_KD, st.pi, st.pj, dtype=F64)
    ni, nj = st.n_k[st.pi], st.n_k[st.pj]
    E = ni * nj / N
    lift = torch.where(E > 0, st.co / E.clamp(min=1e-300), torch.ones_like(E))
    z = torch.where(E > 0, (E - st.co) / E.clamp(min=1e-300).sqrt(), torch.zeros_like(E))
    rare = E < th.z_min**2

    def supp(s_on: torch.Tensor, q_on: torch.Tensor, k: torch.Tensor, n_on: torch.Tensor):
        n_off = N - n_on
        s_off, q_off = st.s_k[k] - s_on, st.q_k[k] - q_on
        m_on = s_on / n_on.clamp(min=1)
        m_off = s_off / n_off.clamp(min=1)
        v_on = (q_on / n_on.clamp(min=1) - m_on**2).clamp(min=0)
        v_off = (q_off / n_off.clamp(min=1) - m_off**2).clamp(min=0)
        se = (v_on / n_on.clamp(min=1) + v_off / n_off.clamp(min=1)).sqrt()
        ok = (n_on > 1) & (n_off > 1) & (m_off > 0)
        s = torch.where(ok, 1 - m_on / m_off.clamp(min=1e-300), torch.zeros_like(m_on))
        zz = torch.where(ok & (se > 0), (m_off - m_on) / se.clamp(min=1e-300),
                         torch.zeros_like(m_on))
        return s, zz

    si, zi = supp(st.s_i_on_j, st.q_i_on_j, st.pi, nj)
    sj, zj = supp(st.s_j_on_i, st.q_j_on_i, st.pj, ni)
    return PairStatistics(st.pi, st.pj, cos, st.co.clone(), E, lift, z, rare, si, zi, sj, zj)


@dataclass(frozen=True)
class Star:
    """A hub latent and the partners that share its direction and silence it."""

    hub: int
    partners: tuple[int, ...]
    cos: tuple[float, ...]
    """``c_hk`` per partner."""
    z: tuple[float, ...]
    """Silenced-hub z-score of (hub, partner) per partner."""
    remainder_cos: float
    """Smallest pairwise cosine of the partners' remainders ``d_k − c_hk d_h`` (at most
    ``remainder_cos``: two partners are distinct beyond the hub's direction)."""
    associated: tuple[bool, ...] = ()
    """Per partner: its co-firing with the hub is significantly far from independence (a star
    keeps at least two such partners)."""


@dataclass(frozen=True)
class AbsorptionFinding:
    """One absorption label: ``(i, j)`` with ``i < j``, the hub, and its evidence."""

    i: int
    j: int
    hub: int
    detail: dict[str, Any]


def _associated(ps: PairStatistics, th: AbsorptionThresholds) -> torch.Tensor:
    """Co-firing significantly far from independence, either way (exclusion or nesting)."""
    return (~ps.rare) & (ps.z_exclusion.abs() >= th.z_min)


def silenced_z(co: float, n_partner: float, cofire_max: float) -> float:
    """Binomial z-score that the hub fires on fewer than ``cofire_max`` of the partner's
    ``n_partner`` rows, given it fires on ``co`` of them.

    Parameters
    ----------
    co:
        Rows where hub and partner both fire.
    n_partner:
        Rows where the partner fires.
    cofire_max:
        The co-firing fraction tested against (in ``(0, 1)``).

    Returns
    -------
    float
        ``(cofire_max · n_partner − co) / √(n_partner · cofire_max · (1 − cofire_max))``; 0 when
        the partner never fires.
    """
    if n_partner <= 0:
        return 0.0
    return (cofire_max * n_partner - co) / math.sqrt(n_partner * cofire_max * (1 - cofire_max))


def find_stars(
    ps: PairStatistics,
    atoms_KD: torch.Tensor,
    n_k: torch.Tensor,
    th: AbsorptionThresholds = DEFAULT_ABSORPTION,
) -> list[Star]:
    """Stars (see the module docstring), best hub first.

    Two latents are *linked* when ``cos_min ≤ c_hk < duplicate_cos`` and their pair is not
    rare; a link is *associated* when their co-firing is also significantly far from
    independence (:func:`_associated`). Latents with ≥ 2 associated links are hub candidates,
    taken in decreasing *centrality* ``Σ_k c_hk · P(h fires | k fires)`` over their associated
    links ``k``: the
    hub of a group is the member whose direction the others share and that still fires on
    their rows (a parent is absorbed only partly, so it keeps firing on part of its children's
    rows, while sibling latents share less direction and fire together less); its links are
    then taken (never hubs themselves), so siblings are never paired with each other. Ties (a
    hub silent on every partner row) are broken by the mean cosine to the links. A link ``k``
    of hub ``h`` (associated or not: a partner half-way absorbed co-fires at independence) is a
    partner when ``h`` is significantly silenced where ``k`` fires (:func:`silenced_z`); a star
    needs ≥ 2 associated partners and two partners whose remainders are distinct.

    Parameters
    ----------
    ps:
        The finished pair statistics (:func:`pair_statistics`).
    atoms_KD:
        ``[K, d]`` unit atoms.
    n_k:
        ``[K]`` rows where each atom fires.
    th:
        The thresholds.

    Returns
    -------
    list[Star]
        The stars, each partner in at most one star.
    """
    D = _RowsF64(atoms_KD)  # the rows read, in float64 (no float64 copy of all K atoms)
    assoc = _associated(ps, th).tolist()
    testable = (~ps.rare).tolist()
    # links[h]: (k, silenced-hub z, associated) for every testable pair in the cosine range
    links: dict[int, list[tuple[int, float, bool]]] = {}
    centre: dict[int, float] = {}  # Σ_k c_hk · P(h fires | k fires) over the links k of h
    for p in range(ps.pi.numel()):
        c = float(ps.cos[p])
        if not testable[p] or c < th.cos_min or c >= th.duplicate_cos:
            continue
        a = bool(assoc[p]) or not th.require_association
        i, j, co = int(ps.pi[p]), int(ps.pj[p]), float(ps.coactive[p])
        ni, nj = float(n_k[i]), float(n_k[j])
        links.setdefault(i, []).append((j, silenced_z(co, nj, th.cofire_max), a))
        links.setdefault(j, []).append((i, silenced_z(co, ni, th.cofire_max), a))
        if a:  # the hub's centrality counts its significant links only
            centre[i] = centre.get(i, 0.0) + c * co / max(nj, 1.0)
            centre[j] = centre.get(j, 0.0) + c * co / max(ni, 1.0)
    near: dict[int, set[int]] = {}
    for i, j, c in zip(ps.pi.tolist(), ps.pj.tolist(), ps.cos.tolist(), strict=True):
        if th.cos_min <= c < th.duplicate_cos:
            near.setdefault(i, set()).add(j)
            near.setdefault(j, set()).add(i)
    order = sorted(  # ties (a hub silenced on every partner row) fall back to the geometry
        (h for h, kz in links.items() if sum(a for _, _, a in kz) >= 2),
        key=lambda h: (-centre.get(h, 0.0),
                       -float((D[[k for k, _, _ in links[h]]] @ D[h]).mean()), h),
    )
    taken: set[int] = set()
    out: list[Star] = []
    for h in order:
        if h in taken:
            continue
        taken.update(k for k, _, a in links[h] if a)
        kz = [(k, z, a) for k, z, a in links[h] if z >= th.z_min]
        kz.sort(key=lambda t: -float(D[h] @ D[t[0]]))
        if sum(a for _, _, a in kz) < 2:
            continue
        kept = [k for k, _, _ in kz]
        if not _is_centre(h, kept, D, near):
            continue
        cs = D[kept] @ D[h]
        rem = D[kept] - cs[:, None] * D[h][None, :]
        rem = rem / rem.norm(dim=1, keepdim=True).clamp(min=1e-12)
        rc = rem @ rem.t()
        rc.fill_diagonal_(2.0)
        rmin = float(rc.min())
        if rmin > th.remainder_cos:  # no two partners with distinct remainders
            continue
        out.append(Star(h, tuple(kept), tuple(float(c) for c in cs), tuple(z for _, z, _ in kz),
                        rmin, tuple(a for _, _, a in kz)))
    return _one_hub_per_partner(out)


class _RowsF64:
    """Rows of the atoms in float64 on demand: ``R[idx]`` is ``atoms.to(float64)[idx]`` (the
    same values: the conversion is exact), without a float64 copy of all ``K`` atoms (1.2 GB
    at K = 65,536, d = 2,304; issue #17)."""

    def __init__(self, atoms_KD: torch.Tensor) -> None:
        self.atoms_KD = atoms_KD

    def __getitem__(self, idx: Any) -> torch.Tensor:
        return self.atoms_KD[idx].to(F64)


def _is_centre(h: int, partners: list[int], D: _RowsF64, near: dict[int, set[int]]) -> bool:
    """``h`` is the centre of its partners: no other latent is closer than ``h`` to every
    partner (a sibling posing as a hub is farther from the other siblings than the true hub
    is)."""
    members = [h, *partners]
    ch = D[partners] @ D[h]
    outside = set.intersection(*(near.get(k, set()) for k in partners)) - set(members)
    for g in outside:
        if bool(((D[partners] @ D[g]) > ch).all()):
            return False
    return True


def _one_hub_per_partner(stars: list[Star]) -> list[Star]:
    """A partner carries one parent direction: keep it only in the star whose hub it shares
    most (largest cosine); stars left with fewer than 2 associated partners are dropped."""
    best: dict[int, tuple[float, int]] = {}
    for s_, star in enumerate(stars):
        for k, c in zip(star.partners, star.cos, strict=True):
            if k not in best or c > best[k][0]:
                best[k] = (c, s_)
    out = []
    for s_, star in enumerate(stars):
        idx = [t for t, k in enumerate(star.partners) if best[k][1] == s_]
        if sum(star.associated[t] for t in idx) >= 2:
            out.append(Star(star.hub, tuple(star.partners[t] for t in idx),
                            tuple(star.cos[t] for t in idx), tuple(star.z[t] for t in idx),
                            star.remainder_cos, tuple(star.associated[t] for t in idx)))
    return out


def absorption_findings(
    st: AbsorptionStats, atoms_KD: torch.Tensor, th: AbsorptionThresholds = DEFAULT_ABSORPTION
) -> tuple[list[AbsorptionFinding], PairStatistics]:
    """Finish: one finding per (hub, partner) of every star, with its evidence.

    Parameters
    ----------
    st:
        The streamed statistics.
    atoms_KD:
        ``[K, d]`` unit atoms.
    th:
        The thresholds.

    Returns
    -------
    (findings, pair_statistics)
        The findings sorted by ``(i, j)`` (``i < j``), each with the star's hub, partners,
        cosine, co-firing, association, silencing and suppression evidence; and the
        :class:`PairStatistics` they were read from.
    """
    ps = pair_statistics(st, atoms_KD, th)
    K = atoms_KD.shape[0]
    stat_of = {k: p for p, k in enumerate((ps.pi * K + ps.pj).tolist())}
    out: list[AbsorptionFinding] = []
    for star in find_stars(ps, atoms_KD, st.n_k, th):
        for k, c, z in zip(star.partners, star.cos, star.z, strict=True):
            i, j = min(star.hub, k), max(star.hub, k)
            p = stat_of[i * K + j]
            hub_is_i = star.hub == i
            out.append(AbsorptionFinding(i, j, star.hub, {
                "kind": "star", "hub": star.hub, "partners": list(star.partners),
                "cos": c, "coactive": float(ps.coactive[p]), "expected": float(ps.expected[p]),
                "lift": float(ps.lift[p]), "z_association": float(-ps.z_exclusion[p]),
                "z_silenced": z,
                "suppression": float(ps.suppression_i[p] if hub_is_i else ps.suppression_j[p]),
                "z_suppression": float(
                    ps.z_suppression_i[p] if hub_is_i else ps.z_suppression_j[p]
                ),
                "remainder_cos": star.remainder_cos,
            }))
    out.sort(key=lambda f: (f.i, f.j))
    return out, ps
