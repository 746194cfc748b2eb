"""Held-out validation of every finding (THEORY §5): finite steps, measured on rows they were
not chosen on, with a standard error.

The rows are split by a hash of their global index (:mod:`dictopt.check.split`) into a
*statistics* part ``S`` and a *validation* part ``V``. Two streamed passes follow the check:

1. **fit** (rows of ``S``): the pass-1 statistics again (:class:`PassOneStats`) and the
   co-activity of every pair of atoms. C1–C4 candidates and their certificates come from these
   (:func:`dictopt.check.conditions.atom_conditions` on ``S``); near-hierarchy candidates are
   pairs where atom ``i`` fires without ``j`` on at most a fraction ``near_fraction`` of its
   firings; the check's C5 and joint-hull violations are added with their own moves.
2. **measure** (every row): each candidate's per-row loss change ``δ_n(t)``
   (:func:`dictopt.check.rowdelta.row_deltas`) on a grid of steps, summed over ``S`` (the line
   search) and, with ``δ_n²``, over ``V``; the robust pair statistics
   (:class:`~dictopt.check.quantiles.PairTopM`) of the pair candidates on ``S``; the firings of
   every atom on ``V``.

The step is the grid point with the lowest loss on ``S``; at that step the validation rows give
the mean decrease ``−mean_V δ_n`` and its standard error ``sd(δ_n)/√n_V``. A finding is
*significant* when the decrease exceeds ``z`` standard errors. Everything the passes keep is a
sum, a count or a top-``m`` buffer, so the result does not depend on how the stream is chunked
or partitioned.

**Rare atoms.** A move whose ``δ_n`` is nonzero on only ``n_k`` of ``n_V`` validation rows has
(Cauchy–Schwarz) ``|mean| / se ≤ √(n_k (n_V − 1) / (n_V − n_k))``; when that bound is ``≤ z``
no finding supported on atom ``k``'s firings can be significant, whatever its size. Such atoms
are labelled ``rare`` and kept out of the pair labels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from dictopt.check.conditions import atom_conditions, atom_floor
from dictopt.check.moves import ChunkState, Move, Toward
from dictopt.check.multitest import CORRECTIONS, alpha_of, holm, one_sided_p
from dictopt.check.quantiles import PairTopM
from dictopt.check.report import CheckReport, Label, Violation
from dictopt.check.rowdelta import RecodeToward, row_deltas
from dictopt.check.split import validation_mask
from dictopt.check.stats import PassOneStats
from dictopt.check.tolerances import Tolerances
from dictopt.validation import DictoptInputError

if TYPE_CHECKING:
    from dictopt.check.inputs import Setup

F64 = torch.float64
PAIR_LABELS = ("absorption", "duplicate", "antipodal")
"""Labels about two atoms: a rare atom is kept out of them."""


@dataclass(frozen=True)
class HeldoutOptions:
    """How findings are validated on held-out rows (THEORY §5)."""

    z: float = 3.0
    """A finding is significant when its held-out decrease exceeds ``z`` standard errors."""
    validation_fraction: float = 0.5
    """Expected share of rows in the validation part."""
    seed: int = 0
    """Seed of the row split (the split is a hash of the global row index)."""
    q: float = 0.01
    """Quantile level of the robust pair statistic ``H^q_ij`` reported for near-hierarchies."""
    near_fraction: float = 0.3
    """A pair ``(i, j)`` is a near-hierarchy candidate when ``i`` fires without ``j`` on at most
    this share of its firings (on the statistics part)."""
    max_per_condition: int = 64
    """Candidates per condition kept for measurement (the largest exact decreases on ``S``)."""
    max_pairs: int = 256
    """Near-hierarchy candidates kept (and as many of the check's C5 violations)."""
    buffer: int = 64
    """Length ``m`` of the top-``m`` buffers of the robust pair statistics."""
    grid: tuple[float, ...] = tuple(2.0**e for e in range(-10, 2))
    """Steps tried by the line search: multiples of each certificate's own step (C1–C4), or
    absolute steps of the pair rotations (C5)."""
    correction: str = "holm"
    """Multiple testing (:mod:`dictopt.check.multitest`): ``holm`` keeps the chance of any
    false finding among all candidates tested at ``≤ Φ(−z)``; ``none`` tests each candidate
    at ``z`` alone (the raw decision is reported either way)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.z) and self.z > 0):
            raise DictoptInputError(f"z: must be a positive number, got {self.z!r}")
        if not 0 < self.validation_fraction < 1:
            raise DictoptInputError(
                f"validation_fraction: must lie in (0, 1), got {self.validation_fraction!r}"
            )
        if not 0 <= self.q < 1 or not 0 <= self.near_fraction < 1:
            raise DictoptInputError("q and near_fraction: must lie in [0, 1)")
        if self.buffer < 1 or self.max_per_condition < 0 or self.max_pairs < 0:
            raise DictoptInputError("buffer ≥ 1, max_per_condition ≥ 0, max_pairs ≥ 0 needed")
        if not self.grid or not all(math.isfinite(g) and g > 0 for g in self.grid):
            raise DictoptInputError("grid: needs at least one positive, finite step")
        if self.correction not in CORRECTIONS:
            raise DictoptInputError(
                f"correction: expected one of {', '.join(CORRECTIONS)}, got {self.correction!r}"
            )


@dataclass
class HeldoutResult:
    """A certificate's finite step measured on held-out rows (decreases positive = better)."""

    step: float
    """The step chosen on the statistics part (0: no step lowers the loss there)."""
    fit_decrease: float
    """Mean decrease per row on the statistics part at that step."""
    decrease: float
    """Mean decrease per row on the validation part (an unbiased estimate)."""
    se: float
    """Its standard error ``sd(δ_n) / √n_V``."""
    significant: bool
    """The decision after the multiple-testing correction (``HeldoutOptions.correction``;
    with ``none`` it is ``significant_raw``)."""
    n_val: int
    move: Move | None = None
    """The certificate measured, with the chosen step. Everything in it (step, ``κ``, the
    hull direction) is fitted on the statistics part only, so it differs from the
    violation's own move, which is fitted on every row."""
    p: float = 1.0
    """One-sided normal p-value of the z-score (1 when not tested)."""
    significant_raw: bool = False
    """``decrease > z · se`` (and ``> 0``): the test of this finding alone."""
    note: str | None = None
    """Why the finding was not tested, when it was not (e.g. not a violation on the
    statistics rows)."""

    @property
    def z_score(self) -> float:
        if self.se > 0:
            return self.decrease / self.se
        return math.inf if self.decrease > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step, "fit_decrease": self.fit_decrease, "decrease": self.decrease,
            "se": self.se, "z": _finite(self.z_score), "p": self.p,
            "significant": self.significant, "significant_raw": self.significant_raw,
            "n_val": self.n_val, "note": self.note,
            "move": self.move.to_json() if self.move is not None else None,
        }


class Candidate(NamedTuple):
    """A certificate to measure: its move, the steps tried, and the finding it belongs to."""

    move: Move
    steps: torch.Tensor
    """``[G]`` the steps of the line search."""
    condition: str
    violation: Violation | None
    """The check's violation it validates, or ``None`` (a near-hierarchy candidate)."""
    pair: tuple[int, int] | None
    """``(i, j)`` for pair rotations (robust pair statistics are kept for them)."""


# ---- the streaming passes --------------------------------------------------------------------


class HeldoutPass:
    """A held-out pass as a :class:`~dictopt.check.executor.StreamPass`: ``make() -> state``,
    ``update(state, setup, x, codes, start)``; states merge with their own ``merge``."""

    fixes_first_chunk = False

    def __init__(self, setup: Setup, make: Callable[[], Any], update: Callable[..., None],
                 desc: str) -> None:
        self.setup, self.make, self.fn, self.desc = setup, make, update, desc

    def first_chunk(self, x: torch.Tensor, start: int) -> HeldoutPass:
        return self

    def start(self) -> Any:
        return self.make()

    def update(self, state: Any, x: torch.Tensor, start: int) -> Any:
        x = x.to(self.setup.dictionary.device)
        self.fn(state, self.setup, x, self.setup.codes(x, start), start)
        return state

    @staticmethod
    def merge(a: Any, b: Any) -> Any:
        return a.merge(b)


@dataclass
class FitSums:
    """Pass-1 statistics and pair co-activity on the statistics rows (mergeable), and what
    the check's own C5 and hull findings need to be refitted there."""

    stats: PassOneStats
    tau: float
    options: HeldoutOptions
    keys: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    """Sorted ``i·K + j`` of the co-active pairs seen."""
    count: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """``#{n ∈ S : a_in > τ, a_jn > τ}`` per key."""
    mass: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """``Σ_{n ∈ S, a_jn > τ} a_in`` per key."""
    pair_i: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    """``[P]`` the check's C5 pairs ``(i, j)`` refitted on ``S``."""
    pair_j: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    H: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """``[P]`` ``H^S_ij = max a_i`` over the rows of ``S`` where ``a_j ≤ τ`` (−∞ if none)."""
    L: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """``[P]`` ``L^S_ij = min a_i`` over the same rows (+∞ if none)."""
    n_off: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=F64))
    """``[P]`` how many rows of ``S`` have ``a_j ≤ τ``."""
    keep_codes: bool = False
    """Keep the codes of ``S`` (to refit the joint hull's LP there)."""
    kept: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    """``(first global row, codes)`` of the kept statistics rows, one entry per chunk."""

    def codes_S(self) -> torch.Tensor:
        """The kept codes of ``S`` in row order (the same however the stream was split)."""
        K = self.stats.K
        parts = [c for _, c in sorted(self.kept, key=lambda sc: sc[0])]
        return torch.cat(parts).to(F64) if parts else torch.zeros(0, K, dtype=F64)


def make_fit(
    setup: Setup, tau: float, options: HeldoutOptions,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None, keep_codes: bool = False,
) -> FitSums:
    """The empty accumulator of the held-out *fit* pass (rows of ``S`` only).

    Parameters
    ----------
    setup:
        The check's setup (dictionary, λ).
    tau:
        The inactivity threshold of the check.
    options:
        The held-out options (validation fraction and seed pick the rows of ``S``).
    pairs:
        ``([P], [P])`` the ``(i, j)`` of the check's C5 findings whose ``H^S_ij``, ``L^S_ij`` and
        off-count are tracked; default none.
    keep_codes:
        Also keep the codes of ``S`` (for refitting the joint hull's LP there).

    Returns
    -------
    FitSums
        Zero statistics: pass-1 sums of a ``[K, d]`` dictionary, no co-active pairs,
        ``H = −∞``, ``L = +∞`` and ``n_off = 0`` per tracked pair.
    """
    dic = setup.dictionary
    pi, pj = pairs if pairs is not None else (torch.zeros(0, dtype=torch.long),) * 2
    P = pi.numel()
    return FitSums(
        PassOneStats(dic.K, dic.d, setup.lam, 1, dic.device), tau, options,
        pair_i=pi, pair_j=pj, H=torch.full((P,), -math.inf, dtype=F64),
        L=torch.full((P,), math.inf, dtype=F64), n_off=torch.zeros(P, dtype=F64),
        keep_codes=keep_codes,
    )


def update_fit(acc: FitSums, setup: Setup, x: torch.Tensor, a: torch.Tensor, start: int) -> None:
    """Add the statistics rows (those not in ``V``) of one chunk to ``acc``, in place.

    Parameters
    ----------
    acc:
        The fit accumulator (:func:`make_fit`).
    setup:
        The check's setup (dictionary, λ).
    x:
        ``[n, d]`` the chunk's activations.
    a:
        ``[n, K]`` their codes.
    start:
        The global index of the chunk's first row (decides the split).

    Returns
    -------
    None
        Updates the pass-1 statistics, the co-activity counts and masses, the tracked pairs'
        ``H``/``L``/``n_off`` and (``keep_codes``) the kept codes of ``acc``.
    """
    opt = acc.options
    keep = ~validation_mask(start, x.shape[0], opt.validation_fraction, opt.seed, x.device)
    if not bool(keep.any()):
        return
    xs, as_ = x[keep], a[keep]
    dic = setup.dictionary
    acc.stats.update(xs, as_, dic.atoms, dic.bias, start, acc.tau, sparse=_sparse(as_, acc.tau))
    keys, count, mass = _coactivity(as_, acc.tau)
    _add_pairs(acc, keys, count, mass)
    if acc.pair_i.numel():
        ac = as_.cpu()
        ai = ac[:, acc.pair_i].to(F64)
        off = ac[:, acc.pair_j] <= acc.tau
        inf = torch.full_like(ai, math.inf)
        acc.H = torch.maximum(acc.H, torch.where(off, ai, -inf).amax(0))
        acc.L = torch.minimum(acc.L, torch.where(off, ai, inf).amin(0))
        acc.n_off += off.sum(0).to(F64)
    if acc.keep_codes:
        acc.kept.append((start, as_.cpu()))


def _sparse(a: torch.Tensor, tau: float) -> bool:
    """Sparse kernels when codes are < 10 % dense and K ≥ 256 (as the check chooses)."""
    return a.shape[1] >= 256 and a.numel() > 0 and float((a > tau).float().mean()) < 0.1


def merge_fit(p: FitSums, q: FitSums) -> FitSums:
    """Merge two fit accumulators of disjoint rows (``q`` into ``p``).

    Parameters
    ----------
    p, q:
        Fit accumulators of the same setup and options.

    Returns
    -------
    FitSums
        ``p``, updated in place: sums and counts added, ``H`` maximised, ``L`` minimised, kept
        codes concatenated.
    """
    p.stats.merge(q.stats)
    _add_pairs(p, q.keys, q.count, q.mass)
    p.H = torch.maximum(p.H, q.H)
    p.L = torch.minimum(p.L, q.L)
    p.n_off = p.n_off + q.n_off
    p.kept = p.kept + q.kept
    return p


FitSums.merge = merge_fit  # type: ignore[attr-defined]


def _coactivity(a_NK: torch.Tensor, tau: float) -> tuple[torch.Tensor, ...]:
    """Per co-active ordered pair ``(i, j)`` of the rows: key ``i·K + j``, how many rows and
    ``Σ a_i`` over them (from the active entries only: ``Σ_n L0_n²`` products)."""
    K = a_NK.shape[1]
    rows, cols = (a_NK > tau).nonzero(as_tuple=True)
    vals = a_NK[rows, cols].to(F64)
    counts = torch.bincount(rows, minlength=a_NK.shape[0])
    starts = counts.cumsum(0) - counts
    rep = counts[rows]
    e = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), rep)
    offs = torch.arange(e.numel(), device=rows.device) - torch.repeat_interleave(
        rep.cumsum(0) - rep, rep
    )
    partner = starts[rows[e]] + offs
    keys = cols[e] * K + cols[partner]
    uk, inv = torch.unique(keys, return_inverse=True)
    cnt = torch.zeros(uk.numel(), dtype=F64, device=keys.device).index_add_(
        0, inv, torch.ones_like(vals[e])
    )
    ms = torch.zeros(uk.numel(), dtype=F64, device=keys.device).index_add_(0, inv, vals[e])
    return uk.cpu(), cnt.cpu(), ms.cpu()


def _add_pairs(acc: FitSums, keys: torch.Tensor, count: torch.Tensor, mass: torch.Tensor) -> None:
    allk = torch.cat([acc.keys, keys])
    uk, inv = torch.unique(allk, return_inverse=True)
    acc.count = torch.zeros(uk.numel(), dtype=F64).index_add_(0, inv, torch.cat([acc.count, count]))
    acc.mass = torch.zeros(uk.numel(), dtype=F64).index_add_(0, inv, torch.cat([acc.mass, mass]))
    acc.keys = uk


@dataclass
class MeasureSums:
    """Per candidate and grid step: ``Σ_S δ``, ``Σ_V δ``, ``Σ_V δ²`` (mergeable)."""

    candidates: list[Candidate]
    tau: float
    options: HeldoutOptions
    pairs: PairTopM
    s_sum: torch.Tensor
    v_sum: torch.Tensor
    v_sq: torch.Tensor
    n_active_val: torch.Tensor
    """``[K]`` firings of each atom on the validation rows."""
    n_stat: int = 0
    n_val: int = 0
    loss_val: float = 0.0
    """``Σ_{n ∈ V} ℓ_n`` at the current point."""


def make_measure(
    candidates: list[Candidate], K: int, tau: float, options: HeldoutOptions,
    pair_theta: torch.Tensor,
) -> MeasureSums:
    """The empty accumulator of the held-out *measure* pass.

    Parameters
    ----------
    candidates:
        The ``P`` candidates to measure (:func:`plan_candidates`).
    K:
        Number of atoms.
    tau:
        The inactivity threshold of the check.
    options:
        The held-out options (split, buffer size of the pair statistics).
    pair_theta:
        ``θ^S_ij`` of the pair candidates, in their order (exception thresholds).

    Returns
    -------
    MeasureSums
        Zero sums ``[P, G]`` (``G`` the longest step grid), an empty :class:`PairTopM` of the
        pair candidates and zero firings ``[K]``.
    """
    P = len(candidates)
    G = max((c.steps.numel() for c in candidates), default=0)
    pi = torch.tensor([c.pair[0] for c in candidates if c.pair is not None], dtype=torch.long)
    pj = torch.tensor([c.pair[1] for c in candidates if c.pair is not None], dtype=torch.long)
    z = torch.zeros(P, G, dtype=F64)
    return MeasureSums(candidates, tau, options, PairTopM(pi, pj, pair_theta, options.buffer),
                       z.clone(), z.clone(), z.clone(), torch.zeros(K, dtype=F64))


def update_measure(
    acc: MeasureSums, setup: Setup, x: torch.Tensor, a: torch.Tensor, start: int
) -> None:
    """Add one chunk: per-row loss changes of every candidate at every grid step, in place.

    Parameters
    ----------
    acc:
        The measure accumulator (:func:`make_measure`).
    setup, x, a, start:
        As for :func:`update_fit` (``x`` ``[n, d]``, ``a`` ``[n, K]``).

    Returns
    -------
    None
        Adds ``Σ_S δ``, ``Σ_V δ`` and ``Σ_V δ²`` per candidate and step, the row counts, the
        firings and loss on ``V``, and the pair statistics on ``S`` to ``acc``.
    """
    opt = acc.options
    dic = setup.dictionary
    val = validation_mask(start, x.shape[0], opt.validation_fraction, opt.seed, x.device)
    stat = ~val
    if _sparse(a, acc.tau):
        r = x - (a.to_sparse_csr() @ dic.atoms + dic.bias)
    else:
        r = x - dic.decode(a)
    acc.n_val += int(val.sum())
    acc.n_stat += int(stat.sum())
    acc.n_active_val += (a[val] > acc.tau).sum(0).to(F64).cpu()
    r64 = r[val].to(F64)
    acc.loss_val += float(0.5 * (r64 * r64).sum() + setup.lam * a[val].to(F64).sum())
    acc.pairs.update(a[stat].cpu(), acc.tau)
    # float64 once per chunk (row_deltas works in float64)
    state = ChunkState(x, a, dic.atoms.to(F64), dic.bias.to(F64), r.to(F64), setup.lam)
    for p, cand in enumerate(acc.candidates):
        d = row_deltas(cand.move, state, cand.steps).cpu()
        G = d.shape[1]
        acc.s_sum[p, :G] += d[stat.cpu()].sum(0)
        dv = d[val.cpu()]
        acc.v_sum[p, :G] += dv.sum(0)
        acc.v_sq[p, :G] += (dv * dv).sum(0)


def merge_measure(p: MeasureSums, q: MeasureSums) -> MeasureSums:
    """Merge two measure accumulators of disjoint rows (``q`` into ``p``).

    Parameters
    ----------
    p, q:
        Measure accumulators of the same candidates and options.

    Returns
    -------
    MeasureSums
        ``p``, updated in place (sums, counts and pair buffers merged).
    """
    p.s_sum += q.s_sum
    p.v_sum += q.v_sum
    p.v_sq += q.v_sq
    p.n_active_val += q.n_active_val
    p.n_stat += q.n_stat
    p.n_val += q.n_val
    p.loss_val += q.loss_val
    p.pairs.merge(q.pairs)
    return p


MeasureSums.merge = merge_measure  # type: ignore[attr-defined]


# ---- candidates ------------------------------------------------------------------------------


class RefitTargets(NamedTuple):
    """The check's own C5 and hull findings whose moves are refitted on ``S``."""

    c5: list[Violation]
    hull: list[Violation]

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([P], [P])`` the ``(i, j)`` of the C5 findings (tracked by the fit pass)."""
        return (torch.tensor([int(v.i) for v in self.c5], dtype=torch.long),
                torch.tensor([int(v.j) for v in self.c5], dtype=torch.long))


def refit_targets(report: CheckReport, options: HeldoutOptions) -> RefitTargets:
    """The check's C5 (``max_pairs``) and hull (``max_per_condition``) findings with a move,
    the largest exact decreases first.

    Parameters
    ----------
    report:
        The check's report.
    options:
        The held-out options (``max_pairs``, ``max_per_condition``).

    Returns
    -------
    RefitTargets
        The C5 and hull violations whose moves are refitted on ``S``.
    """

    def top(cond: str, n: int) -> list[Violation]:
        vs = [v for v in report.violations if v.condition == cond and v.move is not None]
        vs.sort(key=lambda v: -(v.model_decrease or 0.0))
        return vs[:n]

    return RefitTargets(top("C5", options.max_pairs), top("hull", options.max_per_condition))


NOT_ON_S = "not a violation on the statistics rows"


def plan_candidates(
    setup: Setup, fit: FitSums, report: CheckReport, tol: Tolerances, options: HeldoutOptions,
    targets: RefitTargets | None = None,
) -> tuple[list[Candidate], torch.Tensor, list[Violation]]:
    """The certificates to measure, every one fitted on the statistics part ``S`` only.

    - C1–C4: :func:`~dictopt.check.conditions.atom_conditions` on ``S`` (the violations the
      check also reports).
    - C5: the check's pairs with ``H^S_ij`` / ``L^S_ij`` and ``θ^S_ij = (1 − c_ij) ā^S_i``
      from ``S``; the move is :class:`RecodeToward` with ``κ = ±H^S`` (``∓L^S``), kept when
      the pair is a violation on ``S`` too (the check's tolerances).
    - hull: the LP of :func:`~dictopt.check.hull.joint_hull` solved on the codes of ``S``.
    - near-hierarchies: :func:`near_candidates` (co-activity on ``S``).

    Parameters
    ----------
    setup:
        The check's setup (dictionary ``[K, d]``, λ).
    fit:
        The finished fit pass (statistics of ``S``).
    report:
        The check's report (its violations are the ones refitted).
    tol:
        The check's tolerances.
    options:
        The held-out options (step grid, caps).
    targets:
        The C5 and hull findings to refit (:func:`refit_targets`); default none.

    Returns
    -------
    candidates, theta, untested
        The candidates; for the pair candidates ``θ^S_ij`` (the threshold of the exception
        counts); the check's findings that are no violation on ``S`` (not tested).
    """
    dic = setup.dictionary
    D = dic.atoms
    grid = torch.tensor(options.grid, dtype=F64)
    st = fit.stats
    targets = targets if targets is not None else RefitTargets([], [])
    out: list[Candidate] = []
    untested: list[Violation] = []
    if st.n:
        fitted, _ = atom_conditions(st, D, setup.lam, fit.tau, dic.has_bias, tol)
        exact = {(v.condition, v.i, v.label): v for v in report.violations}
        groups: dict[tuple[str, str], list[Violation]] = {}
        for v in fitted:
            if (v.condition, v.i, v.label) in exact and v.move is not None and v.step != 0:
                groups.setdefault((v.condition, v.label), []).append(v)
        for (cond, label), vs in groups.items():
            vs.sort(key=lambda v: -(v.model_decrease or 0.0))
            for v in vs[: options.max_per_condition]:
                out.append(Candidate(v.move, grid * v.step, cond,
                                     exact[(cond, v.i, label)], None))
    abar = st.mean_a.cpu() if st.n else torch.zeros(dic.K, dtype=F64)
    floor = atom_floor(abar, tol)
    taken: set[tuple[int, int]] = set()
    for p, v in enumerate(targets.c5):
        move = _refit_pair(v, p, fit, D, abar, floor, tol, dic.has_bias)
        if move is None:
            untested.append(v)
            continue
        out.append(Candidate(move, grid.clone(), "C5", v, (int(v.i), int(v.j))))
        if float(move.q[0]) > 0:
            taken.add((int(v.i), int(v.j)))
    if targets.hull:
        by_k = _refit_hull(setup, fit, tol, [int(v.j) for v in targets.hull])
        for v in targets.hull:
            hv = by_k.get(int(v.j))
            if hv is None or hv.move is None or not hv.step > 0:
                untested.append(v)
                continue
            out.append(Candidate(hv.move, grid * hv.step, "hull", v, None))
    for i, j in near_candidates(fit, D, setup.lam, options, taken):
        move = RecodeToward(0.0, k=j, J=torch.tensor([i]), q=torch.tensor([1.0]), kappa=0.0)
        out.append(Candidate(move, grid.clone(), "C5", None, (i, j)))
    theta = [(1 - float(D[c.pair[0]] @ D[c.pair[1]])) * float(abar[c.pair[0]])
             for c in out if c.pair is not None]
    return out, torch.tensor(theta, dtype=F64), untested


def _refit_pair(
    v: Violation, p: int, fit: FitSums, D: torch.Tensor, abar: torch.Tensor, floor: float,
    tol: Tolerances, has_bias: bool,
) -> RecodeToward | None:
    """The C5 move of the check's finding ``v`` (tracked as pair ``p``) refitted on ``S``,
    or ``None`` when the pair is no violation on ``S`` (THEORY C5, the check's tolerances)."""
    assert isinstance(v.move, Toward)
    i, j = int(v.i), int(v.j)
    side = 1 if float(v.move.q[0]) > 0 else -1
    if not float(fit.n_off[p]) > 0:
        return None
    theta = (1 - float(D[i] @ D[j])) * float(abar[i])
    tol_i = tol.pair_rel * float(abar[i]) + floor
    val = float(fit.H[p]) if side > 0 else float(fit.L[p])
    if has_bias:
        if not side * (theta - val) > tol_i:
            return None
        kappa = side * val
    else:
        if side < 0 or not (val <= fit.tau and theta > tol_i):
            return None
        kappa = 0.0
    return RecodeToward(0.0, k=j, J=torch.tensor([i]), q=torch.tensor([float(side)]),
                        kappa=kappa)


def _refit_hull(
    setup: Setup, fit: FitSums, tol: Tolerances, atoms: list[int]
) -> dict[int, Violation]:
    """The joint hull LP (:func:`~dictopt.check.hull.joint_hull`) of ``atoms`` on the codes
    of ``S``: the violations found there, by atom ``k``."""
    from dictopt.check.hull import joint_hull

    A = fit.codes_S()
    if not A.shape[0] or not setup.dictionary.has_bias:
        return {}
    found = joint_hull(A, setup.dictionary.atoms.cpu(), fit.stats.mean_a.cpu(), setup.lam,
                       fit.tau, tol, atoms=atoms)
    return {int(v.j): v for v in found.violations}


def near_candidates(
    fit: FitSums, D: torch.Tensor, lam: float, options: HeldoutOptions,
    exclude: set[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` where ``i`` fires without ``j`` on at most ``near_fraction`` of its
    firings on ``S``, ranked by a first-order estimate of the hierarchy rotation's gain
    ``(1 − c_ij) Σ_{a_j > τ} a_i − 2 Σ_{a_j ≤ τ} a_i`` (the exception rows' cost bounded
    crudely; the measurement decides).

    Parameters
    ----------
    fit:
        The finished fit pass (co-activity counts and masses on ``S``).
    D:
        ``[K, d]`` unit atoms (for the cosines ``c_ij``).
    lam:
        λ (unused by the estimate; kept for the caller's signature).
    options:
        ``near_fraction`` and ``max_pairs`` (how many pairs at most).
    exclude:
        Pairs already measured (the upper-side refits of the check's C5 findings).

    Returns
    -------
    list[tuple[int, int]]
        At most ``max_pairs`` pairs with a positive estimated gain, the largest first.
    """
    st = fit.stats
    K = D.shape[0]
    if not st.n or options.max_pairs == 0 or not fit.keys.numel():
        return []
    i, j = fit.keys // K, fit.keys % K
    n_i = st.n_active.cpu()[i]
    # the cheap filter first (counts), cosines only for the pairs that pass it
    keep = ((i != j) & (n_i - fit.count <= options.near_fraction * n_i)).nonzero().flatten()
    i, j, mass = i[keep], j[keep], fit.mass[keep]
    sum_i = st.sum_a.cpu()[i]
    c = (D[i].to(F64) * D[j].to(F64)).sum(1).cpu()
    score = (1 - c) * mass - 2 * (sum_i - mass)
    ok = (score > 0) & (c < 1 - 1e-9)
    idx = ok.nonzero().flatten()
    idx = idx[torch.argsort(-score[idx], stable=True)]
    out = []
    for t in idx.tolist():
        pair = (int(i[t]), int(j[t]))
        if pair not in exclude:
            out.append(pair)
        if len(out) >= options.max_pairs:
            break
    return out


# ---- results ---------------------------------------------------------------------------------


def finish(sums: MeasureSums, z: float, correction: str = "holm") -> list[HeldoutResult]:
    """Choose each candidate's step on ``S``, measure it on ``V`` and decide significance.

    The family of tests is every candidate whose step lowers the loss on ``S`` (the others
    are decided on ``S`` alone, which is independent of ``V``, so leaving them out of the
    family keeps the error guarantee). ``correction="holm"``: Holm's procedure at level
    ``α = Φ(−z)`` on the one-sided p-values (:mod:`dictopt.check.multitest`); ``"none"``:
    each test at ``z`` alone.

    Parameters
    ----------
    sums:
        The finished measure pass.
    z:
        The significance threshold in standard errors.
    correction:
        ``"holm"`` or ``"none"``.

    Returns
    -------
    list[HeldoutResult]
        One per candidate, in order: step, decrease on ``S`` and on ``V``, standard error,
        p-value and (corrected and raw) significance.
    """
    out = []
    nS, nV = max(sums.n_stat, 1), sums.n_val
    for p, cand in enumerate(sums.candidates):
        G = cand.steps.numel()
        s = sums.s_sum[p, :G]
        g = int(torch.argmin(s))
        fit = -float(s[g]) / nS
        if not fit > 0 or nV < 2:
            out.append(HeldoutResult(0.0, max(fit, 0.0), 0.0, 0.0, False, nV,
                                     note="no step lowers the loss on the statistics rows"))
            continue
        mean = float(sums.v_sum[p, g]) / nV
        var = max(float(sums.v_sq[p, g]) - nV * mean * mean, 0.0) / (nV - 1)
        se = math.sqrt(var / nV)
        dec = -mean
        step = float(cand.steps[g])
        raw = dec > 0 and dec > z * se
        res = HeldoutResult(step, fit, dec, se, raw, nV,
                            dataclasses.replace(cand.move, step=step), significant_raw=raw)
        res.p = one_sided_p(res.z_score) if dec > 0 or se > 0 else 1.0
        out.append(res)
    if correction == "holm":
        tested = [r for r in out if r.move is not None]
        for r, rej in zip(tested, holm([r.p for r in tested], alpha_of(z)), strict=True):
            r.significant = rej and r.significant_raw
    return out


def rare_atoms(
    n_active_val: torch.Tensor, n_val: int, z: float, fired: torch.Tensor | None = None
) -> list[int]:
    """Atoms that fire on too few validation rows for any finding on their firings to be
    significant: ``n_k (n_V − 1) ≤ z² (n_V − n_k)`` (module docstring), among the atoms that
    fire at all (``fired``: firings anywhere; default ``n_active_val``; dead atoms have their
    own label).

    Parameters
    ----------
    n_active_val:
        ``[K]`` firings of each atom on the validation rows.
    n_val:
        Number of validation rows.
    z:
        The significance threshold in standard errors.
    fired:
        ``[K]`` firings on every row (default ``n_active_val``).

    Returns
    -------
    list[int]
        The rare atoms' indices, ascending.
    """
    n = n_active_val
    fired = n if fired is None else fired
    bound = (n * (n_val - 1) <= z * z * (n_val - n)) & (fired > 0)
    return bound.nonzero().flatten().tolist()


def validate_report(
    setup: Setup, executor: Any, stream: Any, report: CheckReport, tol: Tolerances,
    options: HeldoutOptions, progress: bool = False,
) -> CheckReport:
    """Run the two held-out passes and annotate ``report`` in place (and return it): each
    measured violation gets :attr:`Violation.heldout`; significant near-hierarchies are added
    as C5 findings labelled ``near_hierarchy``; rare atoms are labelled and dropped from pair
    labels; the summary gets a ``heldout`` block (severity, headline); the violations are
    ranked significant first, by held-out decrease.

    Parameters
    ----------
    setup:
        The check's setup (dictionary, λ, coder).
    executor:
        Runs a pass over the stream (local or Dask).
    stream:
        The activations, as the check streamed them.
    report:
        The check's report, annotated in place.
    tol:
        The check's tolerances.
    options:
        The held-out options.
    progress:
        Show progress bars for the two passes.

    Returns
    -------
    CheckReport
        ``report`` itself.
    """
    tau = float(report.summary["tau"])
    targets = refit_targets(report, options)
    make = functools.partial(make_fit, setup, tau, options, targets.pairs(),
                             bool(targets.hull))
    fit = executor.run(HeldoutPass(setup, make, update_fit, "held-out fit"), stream,
                       progress=progress)
    cands, theta, untested = plan_candidates(setup, fit, report, tol, options, targets)
    K = setup.dictionary.K
    sums = executor.run(HeldoutPass(
        setup, functools.partial(make_measure, cands, K, tau, options, theta), update_measure,
        "held-out measure"), stream, progress=progress)
    results = finish(sums, options.z, options.correction)
    for v in untested:
        v.heldout = HeldoutResult(0.0, 0.0, 0.0, 0.0, False, sums.n_val, note=NOT_ON_S)
    # the local candidates: those in ``sums`` may be copies (made on Dask workers)
    annotate(report, setup, fit, cands, sums, results, options)
    return report


def annotate(
    report: CheckReport, setup: Setup, fit: FitSums, cands: list[Candidate],
    sums: MeasureSums, results: list[HeldoutResult], options: HeldoutOptions,
) -> None:
    """Write the held-out results into the report (see :func:`validate_report`), in place.

    Parameters
    ----------
    report:
        The check's report.
    setup:
        The check's setup (dictionary, λ).
    fit:
        The finished fit pass.
    cands:
        The measured candidates (the local objects, whose violations belong to ``report``).
    sums:
        The finished measure pass.
    results:
        :func:`finish`'s results, one per candidate.
    options:
        The held-out options.

    Returns
    -------
    None
        Sets ``Violation.heldout``, adds significant near-hierarchies, labels rare atoms, ranks
        the violations and writes ``summary["heldout"]`` (:func:`severity`).
    """
    D, lam = setup.dictionary.atoms, setup.lam
    rare = rare_atoms(sums.n_active_val, sums.n_val, options.z,
                      sums.n_active_val + fit.stats.n_active.cpu())
    rare_set = set(rare)
    hq = sums.pairs.quantile(options.q)
    exc = sums.pairs.exception_fraction()
    above = sums.pairs.above
    pair_pos = 0
    abar = fit.stats.mean_a
    for cand, res in zip(cands, results, strict=True):
        pair_stats: dict[str, Any] = {}
        if cand.pair is not None:
            i, j = cand.pair
            pair_stats = {
                "H_q": float(hq[pair_pos]), "q": options.q,
                "exception_fraction": float(exc[pair_pos]), "exceptions": int(above[pair_pos]),
                "rare": i in rare_set,
            }
            pair_pos += 1
        if cand.violation is not None:
            cand.violation.heldout = res
            if pair_stats:
                cand.violation.detail.update(pair_stats)
        elif res.significant and cand.pair is not None:
            i, j = cand.pair
            c_ij = float(D[i] @ D[j])
            n_i = float(fit.stats.n_active[i])
            key = i * setup.dictionary.K + j
            pos = int(torch.searchsorted(fit.keys, torch.tensor([key]))[0])
            both = float(fit.count[pos]) if pos < fit.keys.numel() and int(
                fit.keys[pos]) == key else 0.0
            slope = res.fit_decrease / res.step if res.step > 0 else 0.0
            v = Violation(
                "C5", i, j, "near_hierarchy", slope, res.step, res.fit_decrease, None, None,
                detail={"side": "upper", "theta": (1 - c_ij) * float(abar[i]), "cos": c_ij,
                        "fires_without": (n_i - both) / n_i if n_i else math.nan,
                        **pair_stats},
                move=res.move,
            )
            v.heldout = res
            report.violations.append(v)
    report.violations.sort(key=_rank)
    _label_rare(report, rare, sums.n_active_val)
    tests = sum(r.move is not None for r in results)
    report.summary["heldout"] = severity(report, sums, options, lam, tests)


def _label_rare(report: CheckReport, rare: list[int], n_active_val: torch.Tensor) -> None:
    """Label the rare atoms and keep them out of pair labels (labels, summary counts and
    atom rows of ``report``, in place)."""
    rare_set = set(rare)
    kept = [lab for lab in report.labels
            if not (lab.label in PAIR_LABELS and (lab.i in rare_set or lab.j in rare_set))]
    kept += [Label("rare", k, None, {"firings_val": int(n_active_val[k])}) for k in rare]
    report.labels[:] = kept
    labels = report.summary.setdefault("labels", {})
    for name in PAIR_LABELS:
        if name in labels:
            labels[name] = sum(lab.label == name for lab in kept)
    labels["rare"] = len(rare)
    labels["near_hierarchy"] = sum(v.label == "near_hierarchy" for v in report.violations)
    for row in report.atoms:
        if row["k"] in rare_set:
            row["labels"] = sorted({*row["labels"], "rare"} - set(PAIR_LABELS))


def _rank(v: Violation) -> tuple[int, float, float, float]:
    h = v.heldout
    sig = 0 if h is not None and h.significant else 1
    dec = h.decrease if h is not None and h.significant else 0.0
    return (sig, -dec, -(v.model_decrease or 0.0), -v.slope)


def severity(
    report: CheckReport, sums: MeasureSums, options: HeldoutOptions, lam: float,
    tests: int = 0,
) -> dict[str, Any]:
    """The summary's ``heldout`` block: per condition the best significant certificate and the
    sum of the significant ones (each measured alone), as loss and as a fraction of the loss
    on the validation rows; the headline.

    Parameters
    ----------
    report:
        The annotated report (violations with ``heldout`` results).
    sums:
        The finished measure pass (validation loss and row counts).
    options:
        The held-out options.
    lam:
        λ (unused here; kept for the caller's signature).
    tests:
        Size of the family of tests (for the headline).

    Returns
    -------
    dict[str, Any]
        Options, row counts, per-condition counts and decreases, totals (all significant, and
        those moving disjoint parameters) as loss and fraction, and the ``headline`` sentence.
    """
    loss = sums.loss_val / sums.n_val if sums.n_val else math.nan
    by: dict[str, dict[str, Any]] = {}
    for v in report.violations:
        h = v.heldout
        if h is None:
            continue
        b = by.setdefault(v.condition, {"measured": 0, "significant": 0,
                                        "significant_raw": 0, "not_on_statistics_rows": 0,
                                        "best": 0.0, "sum": 0.0})
        if h.note == NOT_ON_S:
            b["not_on_statistics_rows"] += 1
            continue
        b["measured"] += 1
        b["significant_raw"] += int(h.significant_raw)
        if h.significant:
            b["significant"] += 1
            b["best"] = max(b["best"], h.decrease)
            b["sum"] += h.decrease
    for b in by.values():
        b["best_fraction"] = b["best"] / loss if loss else math.nan
        b["sum_fraction"] = b["sum"] / loss if loss else math.nan
    total = sum(b["sum"] for b in by.values())
    best = max((b["best"] for b in by.values()), default=0.0)
    n_sig = sum(b["significant"] for b in by.values())
    n_raw = sum(b["significant_raw"] for b in by.values())
    frac = total / loss if loss else math.nan
    dis_n, dis = disjoint_total([v.heldout for v in report.violations
                                 if v.heldout is not None and v.heldout.significant])
    dis_frac = dis / loss if loss else math.nan
    how = (f"Holm-corrected over {tests} tests at α = Φ(−{options.z:g})"
           if options.correction == "holm" else f"each at z = {options.z:g}, uncorrected")
    headline = (
        f"certified improvement available: {100 * dis_frac:.3g} % of the loss (significant on "
        f"held-out rows, {how}; {dis_n} certificates that move disjoint parameters, each "
        f"measured alone; all {n_sig} significant ones sum to {100 * frac:.3g} %, the best "
        f"single one {100 * (best / loss if loss else math.nan):.3g} %)"
        if n_sig else
        f"no certified improvement significant on held-out rows ({how})"
    )
    return {
        "z": options.z, "validation_fraction": options.validation_fraction,
        "seed": options.seed, "q": options.q, "n_stat": sums.n_stat, "n_val": sums.n_val,
        "loss_val": loss, "candidates": len(sums.candidates), "tests": tests,
        "correction": options.correction, "alpha": alpha_of(options.z),
        "significant": n_sig, "significant_raw": n_raw, "by_condition": by,
        "total_decrease": total, "total_fraction": frac,
        "disjoint_certificates": dis_n, "disjoint_decrease": dis,
        "disjoint_fraction": dis_frac,
        "best_fraction": best / loss if loss else math.nan,
        "rare_min_firings": _rare_threshold(sums.n_val, options.z),
        "headline": headline,
    }


def moved_parameters(move: Move) -> set[Any]:
    """What a move changes: atom indices (their atoms or codes) and ``"bias"``.

    Parameters
    ----------
    move:
        A certificate's move.

    Returns
    -------
    set
        Atom indices (``int``) and possibly ``"bias"``.
    """
    out: set[Any] = set()
    if hasattr(move, "k"):
        out.add(int(move.k))
    if isinstance(move, Toward):
        out |= {int(j) for j in move.J.tolist()}
        if move.kappa != 0:
            out.add("bias")
    if type(move).__name__ in ("BiasShift", "AlwaysOnShift"):
        out.add("bias")
    return out


def disjoint_total(results: list[HeldoutResult]) -> tuple[int, float]:
    """Greedy (largest decrease first) set of certificates whose moves change disjoint
    parameters, and the sum of their held-out decreases: a total that does not count one
    atom's improvement several times (e.g. an atom rotated toward each of 27 partners).

    Parameters
    ----------
    results:
        Significant held-out results (with their moves).

    Returns
    -------
    count, decrease
    """
    used: set[Any] = set()
    n, total = 0, 0.0
    for r in sorted(results, key=lambda r: -r.decrease):
        if r.move is None:
            continue
        moved = moved_parameters(r.move)
        if moved & used:
            continue
        used |= moved
        n += 1
        total += r.decrease
    return n, total


def _rare_threshold(n_val: int, z: float) -> int:
    """Smallest firing count on the validation rows that can give a significant finding."""
    if n_val < 2:
        return 0
    # n (n_V − 1) > z² (n_V − n)  ⇔  n > z² n_V / (n_V − 1 + z²)
    return int(math.floor(z * z * n_val / (n_val - 1 + z * z))) + 1


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def run_heldout(
    setup: Setup, executor: Any, stream: Any, report: CheckReport, tol: Tolerances,
    heldout: Any, progress: bool = False,
) -> CheckReport:
    """:func:`validate_report` for ``check(..., heldout=True | HeldoutOptions)``; adds the time
    to ``summary["timings"]["heldout"]``.

    Parameters
    ----------
    setup, executor, stream, report, tol, progress:
        As for :func:`validate_report`.
    heldout:
        ``check``'s ``heldout`` argument (see :func:`heldout_options`).

    Returns
    -------
    CheckReport
        ``report``, annotated in place (unchanged when there is no held-out stage).
    """
    import time

    options = heldout_options(heldout)
    if options is None:
        return report
    t0 = time.perf_counter()
    validate_report(setup, executor, stream, report, tol, options, progress)
    timings = report.summary.setdefault("timings", {})
    timings["heldout"] = time.perf_counter() - t0
    timings["total"] = timings.get("total", 0.0) + timings["heldout"]
    return report


def heldout_options(heldout: Any) -> HeldoutOptions | None:
    """``check``'s ``heldout`` argument as options (``None``/``False``: no held-out stage);
    raises :class:`DictoptInputError` for anything else, before any work starts.

    Parameters
    ----------
    heldout:
        ``None``, ``False``, ``True`` or a :class:`HeldoutOptions`.

    Returns
    -------
    HeldoutOptions or None
        The options (defaults for ``True``), or ``None`` for no held-out stage.
    """
    if heldout is None or heldout is False:
        return None
    if heldout is True:
        return HeldoutOptions()
    if isinstance(heldout, HeldoutOptions):
        return heldout
    raise DictoptInputError(
        f"heldout: expected True, False, None or a HeldoutOptions, got {type(heldout).__name__}"
        " (e.g. check(..., heldout=HeldoutOptions(z=3)))"
    )
