"""``check``: two streaming passes, every first-order condition, certificates (THEORY §2).

Pass 1 encodes each chunk, forms residuals and accumulates :class:`PassOneStats` (C1–C4,
capacity, top buffers). Between the passes the buffers decide ``H_ij`` exactly
for almost every ordered pair (:mod:`dictopt.check.pairs`). Pass 2 re-encodes and computes
the remaining pair extremes, the step bounds of the C5 certificates and the co-activity of
label candidates. Memory: ``O(K d + K m L0)`` plus ``K × block`` blocks of the Gram matrix,
independent of N. The joint hull (``hull=True``) is a separate, separately timed stage.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch

from dictopt.check.conditions import atom_conditions, atom_floor
from dictopt.check.moves import Toward, best_toward_step
from dictopt.check.pairs import BufferExtremes, buffer_extremes, dense_extremes
from dictopt.check.report import (
    CONDITIONS,
    LABELS,
    CheckReport,
    Label,
    Violation,
    duplicate_groups,
)
from dictopt.check.stats import PassOneStats, PassTwoStats, argsort_stable, sort_unique
from dictopt.check.tolerances import (
    DEFAULT_LABELS,
    DEFAULT_TOLERANCES,
    LabelThresholds,
    Tolerances,
)
from dictopt.problem import Dictionary, check_codes
from dictopt.validation import DictoptInputError, to_tensor

if TYPE_CHECKING:
    from dictopt.data.sources import ActivationSource

log = logging.getLogger(__name__)
F64 = torch.float64

Coder = Callable[[torch.Tensor, int], torch.Tensor]
"""``coder(x_chunk, start) -> codes [n, K]`` for a chunk whose first row is ``start``."""

LAM_HELP = (
    "the L1 check needs λ (THEORY §1 convention). Supply it: check(..., lam=L), "
    "Dictionary.with_lam(L), or `--lam L` on the command line. For an SAE trained with "
    "loss mean_n[‖x−x̂‖²] + α Σ_k ‖W_dec[k]‖ f_k, λ = α/2 in dictopt's ½-convention; a "
    "TopK/BatchTopK/JumpReLU SAE has no λ: use `--lam implied` (in Python "
    "lam=dictopt.io.conventions.implied_lambda(dictionary, x).lam), which computes the median "
    "of d_k·r_n over the active codes, the λ at which half of them would grow and half shrink."
)


def validate_dictionary(dictionary: Dictionary) -> None:
    """Re-check canonical form (atoms may have been edited after construction)."""
    if not isinstance(dictionary, Dictionary):
        raise DictoptInputError(
            f"dictionary: expected a dictopt Dictionary, got {type(dictionary).__name__}; "
            "build one with Dictionary.from_decoder(W_dec, b_dec, lam=...)"
        )
    norms = dictionary.atoms.norm(dim=1)
    if bool((norms == 0).any()):
        k = int((norms == 0).nonzero()[0])
        raise DictoptInputError(f"dictionary: atom {k} is zero; a canonical atom has norm 1")
    bad = ((norms - 1).abs() > 1e-5).nonzero()
    if bad.numel():
        k = int(bad[0])
        raise DictoptInputError(
            f"dictionary: atom {k} has norm {float(norms[k]):.6g}, not 1 (not canonical); "
            "use Dictionary.from_decoder(W_dec, ...) to canonicalise atoms and codes"
        )


def make_coder(dictionary: Dictionary, codes: Any) -> tuple[str, Coder]:
    """``(mode, coder(x_chunk, start) -> canonical codes)`` for ``codes``.

    ``codes`` is ``"own"`` (the dictionary's encoder; optimal codes when it has none),
    ``"optimal"`` (exact nonnegative lasso), a callable ``x -> codes``, or an ``[N, K]`` array of
    given codes aligned with the source rows.
    """
    if isinstance(codes, str):
        if codes == "own":
            mode = "own" if dictionary.encoder is not None else "optimal"
            return mode, lambda x, start: dictionary.encode(x)
        if codes == "optimal":
            return "optimal", lambda x, start: dictionary.optimal_codes(x)
        raise DictoptInputError(f"codes: expected 'own' or 'optimal', got {codes!r}")
    if callable(codes):
        return "given", lambda x, start: codes(x)
    arr = to_tensor(codes, "codes", dtype=dictionary.dtype, device=dictionary.device)
    if arr.ndim != 2 or arr.shape[1] != dictionary.K:
        raise DictoptInputError(
            f"codes: expected shape [N, K={dictionary.K}], got {tuple(arr.shape)}"
        )
    return "given", lambda x, start: arr[start : start + x.shape[0]]


def _codes_for(
    coder: Coder, x: torch.Tensor, start: int, K: int, dtype: torch.dtype
) -> torch.Tensor:
    """Codes of a chunk, validated with one pass (``amin`` propagates NaN; +inf is caught
    when the active entries are read) and clamped only if slightly negative."""
    a = coder(x, start).to(dtype)
    if a.shape != (x.shape[0], K):
        check_codes(a, x.shape[0], K)
    low = float(a.amin()) if a.numel() else 0.0
    if low != low or low < -1e-9 or low == float("inf"):
        check_codes(a, x.shape[0], K, tol=1e-9)
    if bool(torch.isinf(a.amax())):
        check_codes(a, x.shape[0], K, tol=1e-9)
    return a.clamp(min=0) if low < 0 else a


# ---- the bundles the phases of ``check`` hand to each other ----------------------------------


@dataclass
class Setup:
    """What every phase needs: the dictionary (with λ), the stream and how to get codes."""

    dictionary: Dictionary
    """The dictionary being checked, with λ set."""
    lam: float
    src: ActivationSource | None
    """The stream (``None`` in the copy shipped to distributed workers, which open their own
    partitions, see :mod:`dictopt.distributed`)."""
    mode: str
    """``"own"``, ``"optimal"`` or ``"given"`` (see :func:`make_coder`)."""
    coder: Coder
    amortisation: bool
    """Whether pass 1 also computes the optimal codes (the amortisation gap)."""
    amortisation_note: str | None = None
    """Why the amortisation gap was skipped, if it was."""

    def codes(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Validated canonical codes ``[n, K]`` of a chunk whose first row is ``start``."""
        return _codes_for(self.coder, x, start, self.dictionary.K, self.dictionary.dtype)


@dataclass
class AmortisationSums:
    """Sums over points for the amortisation gap (own codes vs the exact lasso codes, C1)."""

    K: int
    device: torch.device
    loss: float = 0.0
    """``Σ_n ½‖r_n‖² + λ Σ_k a_kn`` with the optimal codes."""
    n: int = 0
    code_diff: torch.Tensor = field(init=False)
    """``[K]`` ``Σ_n |a_opt − a|`` per atom."""

    def __post_init__(self) -> None:
        self.code_diff = torch.zeros(self.K, dtype=F64, device=self.device)

    def update(self, dictionary: Dictionary, lam: float, x: torch.Tensor, a: torch.Tensor) -> None:
        """Add one chunk ``x`` whose checked codes are ``a``."""
        a_opt = dictionary.optimal_codes(x)
        r = x - dictionary.decode(a_opt)
        self.loss += float(0.5 * (r.to(F64) ** 2).sum() + lam * a_opt.to(F64).sum())
        self.n += x.shape[0]
        self.code_diff += (a_opt - a).abs().to(F64).sum(0)

    def merge(self, o: AmortisationSums) -> None:
        """Absorb the sums of other chunks."""
        self.loss += o.loss
        self.n += o.n
        self.code_diff = self.code_diff + o.code_diff


class PassOneResult(NamedTuple):
    """Pass 1: the mergeable statistics and the choices fixed on the first chunk."""

    stats: PassOneStats
    tau: float
    """Inactivity threshold τ actually used."""
    amortisation: AmortisationSums | None


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


class PassTwoResult(NamedTuple):
    """Pass 2: exact extremes of the tracked pairs, and the codes if the exact hull runs."""

    stats: PassTwoStats
    kept_codes: list[torch.Tensor]


class PairCandidate(NamedTuple):
    """One C5 violation before its certificate is sized."""

    i: int
    j: int
    side: int
    value: float
    """``H_ij`` or ``L_ij``."""
    certify: bool
    """Whether pass 2 bounded its step (otherwise reported with step 0)."""


# ---- check ----------------------------------------------------------------------------------


def check(
    dictionary: Dictionary,
    source: Any,
    *,
    codes: Any = "own",
    lam: float | None = None,
    tol: Tolerances = DEFAULT_TOLERANCES,
    thresholds: LabelThresholds = DEFAULT_LABELS,
    buffer_size: int = 16,
    hull: bool | str = "auto",
    hull_exact_limit: int = 5_000_000,
    amortisation: bool | None = None,
    max_pair_certificates: int = 20_000,
    sparse: bool | None = None,
    block: int = 512,
    chunk_size: int | None = None,
    progress: bool = False,
    client: Any = None,
) -> CheckReport:
    """Check every first-order condition of THEORY §2 on streamed data.

    Parameters
    ----------
    dictionary:
        A canonical :class:`~dictopt.problem.Dictionary` (unit atoms; its encoder, if any), or
        anything :func:`dictopt.io.as_dictionary` accepts (a SAELens SAE object, a dictopt
        SAE module, a scikit-learn estimator, a state dict, a saved folder).
    source:
        Activations: an array/tensor ``[N, d]``, a ``.npy`` path, a shard folder, a callable
        returning a fresh iterator of batches, a torch ``DataLoader`` or an
        :class:`~dictopt.data.sources.ActivationSource` (see
        :func:`~dictopt.data.sources.as_source`).
    codes:
        ``"own"``, ``"optimal"``, a callable ``x -> codes`` or given codes ``[N, K]``.
    lam:
        λ (overrides the dictionary's). Required when the dictionary has none.
    tol, thresholds:
        Tolerances (:class:`Tolerances`) and label thresholds.
    buffer_size:
        ``m``, the number of extreme points kept per atom (pairs the buffers cannot decide are
        computed exactly in pass 2, so ``m`` affects speed, never the result).
    hull:
        Joint hull condition: ``"auto"`` (exact LP when ``N·K ≤ hull_exact_limit``, else
        skipped with a note), ``True`` (exact; holds the codes in memory), ``False``.
    amortisation:
        Also compute the optimal codes and report the amortisation gap (default: when the
        dictionary has its own encoder and ``codes="own"``).
    max_pair_certificates:
        C5 violations beyond this many (ranked by slope) are counted and listed without
        step bounds (step 0).
    sparse:
        Use sparse code kernels for decode and ``Σ a r`` (default: when codes are < 10 %
        dense on the first chunk).
    client:
        A ``distributed.Client``: run both passes on its Dask cluster, partition by partition
        (see :func:`dictopt.distributed.check_distributed`; ``source`` is then a shard folder,
        ``.npy`` file, Zarr or Dask array that the workers open themselves).

    Returns
    -------
    CheckReport
    """
    from dictopt.io.objects import as_dictionary

    dictionary = as_dictionary(dictionary)
    if client is not None:
        from dictopt.distributed import check_distributed

        return check_distributed(
            dictionary, source, client=client, codes=codes, lam=lam, amortisation=amortisation,
            chunk_size=chunk_size, progress=progress, tol=tol, thresholds=thresholds,
            buffer_size=buffer_size, hull=hull, hull_exact_limit=hull_exact_limit,
            max_pair_certificates=max_pair_certificates, sparse=sparse, block=block,
        )
    setup = _setup(dictionary, source, codes, lam, amortisation, chunk_size)
    return run_check(
        setup, LocalPasses(progress), tol=tol, thresholds=thresholds, buffer_size=buffer_size,
        hull=hull, hull_exact_limit=hull_exact_limit,
        max_pair_certificates=max_pair_certificates, sparse=sparse, block=block,
    )


class Passes(Protocol):
    """How the two streamed passes run: :class:`LocalPasses` in this process, or
    :class:`dictopt.distributed.check.DaskPasses` mapped over partitions on a Dask cluster.
    Both use the per-chunk functions below, so the maths exists once."""

    def pass_one(
        self, setup: Setup, tol: Tolerances, buffer_size: int, sparse: bool | None
    ) -> PassOneResult: ...

    def pass_two(
        self, setup: Setup, plan: PairPlan, tau: float, want_hull: bool
    ) -> PassTwoResult: ...


def run_check(
    setup: Setup,
    passes: Passes,
    *,
    tol: Tolerances = DEFAULT_TOLERANCES,
    thresholds: LabelThresholds = DEFAULT_LABELS,
    buffer_size: int = 16,
    hull: bool | str = "auto",
    hull_exact_limit: int = 5_000_000,
    max_pair_certificates: int = 20_000,
    sparse: bool | None = None,
    block: int = 512,
) -> CheckReport:
    """The phases of :func:`check` after :func:`prepare_setup`, with the passes run by
    ``passes`` (arguments as for :func:`check`)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    D = setup.dictionary.atoms

    p1 = passes.pass_one(setup, tol, buffer_size, sparse)
    timings["pass1"] = time.perf_counter() - t0
    st1, tau = p1.stats, p1.tau
    violations, cols = atom_conditions(st1, D, setup.lam, tau, setup.dictionary.has_bias, tol)

    t1 = time.perf_counter()
    plan = _decide_pairs(setup, st1, tau, tol, thresholds, block, max_pair_certificates)
    timings["pairs"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    want_hull = hull is True or (hull == "auto" and st1.n * setup.dictionary.K <= hull_exact_limit)
    p2 = passes.pass_two(setup, plan, tau, want_hull)
    timings["pass2"] = time.perf_counter() - t2

    pos_of = {int(k): p for p, k in enumerate(plan.key.tolist())}
    violations.extend(_pair_violations(setup, plan, p2.stats, pos_of, st1.mean_a, tau, tol))
    timings["certificates"] = time.perf_counter() - t2 - timings["pass2"]

    labels = _labels(st1, p2.stats, pos_of, plan.labels, thresholds)

    hull_violations, hull_info = _joint_hull(
        setup, p2.kept_codes, st1, tau, tol, hull, want_hull
    )
    violations.extend(hull_violations)
    timings["hull"] = hull_info["seconds"]

    violations.sort(key=lambda v: (-(v.model_decrease or 0.0), -v.slope))
    return _assemble_report(
        setup, p1, cols, violations, labels, hull_info, int(plan.key.numel()), tol, timings, t0
    )


def _setup(
    dictionary: Dictionary,
    source: Any,
    codes: Any,
    lam: float | None,
    amortisation: bool | None,
    chunk_size: int | None,
) -> Setup:
    """Validate the inputs, fix λ, open the stream and choose the coder."""
    from dictopt.data.sources import as_source

    validate_dictionary(dictionary)
    kwargs = {"chunk_size": chunk_size} if chunk_size else {}
    dtype = dictionary.dtype
    src = as_source(source, dtype=dtype, **kwargs)
    setup = prepare_setup(dictionary, src.d, codes, lam, amortisation)
    setup.src = src
    return setup


def prepare_setup(
    dictionary: Dictionary, d: int, codes: Any, lam: float | None, amortisation: bool | None
) -> Setup:
    """Validate the dictionary against data of width ``d``, fix λ and choose the coder; the
    returned :class:`Setup` has no stream yet (``src=None``)."""
    validate_dictionary(dictionary)
    lam = lam if lam is not None else dictionary.lam
    if lam is None:
        raise DictoptInputError(f"lam: missing; {LAM_HELP}")
    dictionary = dictionary.with_lam(lam)
    if d != dictionary.d:
        raise DictoptInputError(
            f"activations: width {d} but the dictionary has d = {dictionary.d}"
        )
    mode, coder = make_coder(dictionary, codes)
    note = None
    if amortisation is None:
        amortisation = mode == "own"
        if amortisation:
            try:
                importlib.import_module("dictopt.solvers.coding")  # is the exact coder there?
            except ImportError:
                amortisation = False
                note = "skipped: the exact coder dictopt.solvers.coding is missing"
    return Setup(dictionary, float(dictionary.lam), None, mode, coder, amortisation, note)


# ---- per-chunk work: shared by the local loop and the distributed map ------------------------


def first_chunk_choices(
    setup: Setup, a: torch.Tensor, tol: Tolerances, sparse: bool | None
) -> tuple[float, bool]:
    """``(τ, sparse)`` fixed on the codes ``a`` of the stream's first chunk: solver codes may
    leave ~1e-16 dust, so τ is relative to the largest code unless given; the sparse kernels
    are used when codes are < 10 % dense and ``K ≥ 256``."""
    tau = tol.tau
    if tau is None:
        tau = 0.0 if setup.mode == "own" else tol.tau_rel * float(a.max())
    if sparse is None:
        sparse = float((a > tau).float().mean()) < 0.1 and setup.dictionary.K >= 256
    return tau, bool(sparse)


def pass_one_start(setup: Setup, buffer_size: int, tau: float) -> PassOneResult:
    """Empty pass-1 accumulators (statistics and, if wanted, the amortisation sums)."""
    dic = setup.dictionary
    st1 = PassOneStats(dic.K, dic.d, setup.lam, buffer_size, dic.device)
    amort = AmortisationSums(dic.K, dic.device) if setup.amortisation else None
    return PassOneResult(st1, tau, amort)


def pass_one_update(
    setup: Setup, p1: PassOneResult, x: torch.Tensor, a: torch.Tensor, start: int, sparse: bool
) -> None:
    """Add one chunk ``x`` (first global row ``start``) with its codes ``a`` to ``p1``."""
    dic = setup.dictionary
    p1.stats.update(x, a, dic.atoms, dic.bias, start, p1.tau, sparse=sparse)
    if p1.amortisation is not None:
        p1.amortisation.update(dic, setup.lam, x, a)


def merge_pass_one(p: PassOneResult, q: PassOneResult) -> PassOneResult:
    """``p`` with the statistics of ``q`` (other chunks) merged in (``p`` is modified)."""
    p.stats.merge(q.stats)
    if p.amortisation is not None and q.amortisation is not None:
        p.amortisation.merge(q.amortisation)
    return p


def pass_two_start(setup: Setup, plan: PairPlan) -> PassTwoResult:
    """Empty pass-2 accumulators for the pairs of ``plan``."""
    K = setup.dictionary.K
    return PassTwoResult(PassTwoStats(plan.key // K, plan.key % K, plan.H0, plan.L0), [])


def pass_two_update(
    p2: PassTwoResult, a: torch.Tensor, tau: float, keep_codes: bool
) -> None:
    """Add the codes ``a`` of one chunk to ``p2`` (and keep them for the exact hull)."""
    p2.stats.update(a, tau)
    if keep_codes:
        p2.kept_codes.append(a)


def merge_pass_two(p: PassTwoResult, q: PassTwoResult) -> PassTwoResult:
    """``p`` with ``q`` merged in; ``q``'s rows come after ``p``'s (``p`` is modified)."""
    p.stats.merge(q.stats)
    p.kept_codes.extend(q.kept_codes)
    return p


class LocalPasses:
    """Both passes streamed in this process (what :func:`check` uses)."""

    def __init__(self, progress: bool = False) -> None:
        self.progress = progress

    def pass_one(
        self, setup: Setup, tol: Tolerances, buffer_size: int, sparse: bool | None
    ) -> PassOneResult:
        return _pass_one(setup, tol, buffer_size, sparse, self.progress)

    def pass_two(
        self, setup: Setup, plan: PairPlan, tau: float, want_hull: bool
    ) -> PassTwoResult:
        return _pass_two(setup, plan, tau, want_hull, self.progress)


def _pass_one(
    setup: Setup, tol: Tolerances, buffer_size: int, sparse: bool | None, progress: bool
) -> PassOneResult:
    """Stream every chunk once: codes, residuals and :class:`PassOneStats` (C1–C4 sums,
    extremes, capacity, top buffers), plus the optimal codes when the amortisation gap is
    wanted. τ and the sparse kernels are chosen on the first chunk."""
    assert setup.src is not None
    p1: PassOneResult | None = None
    use_sparse = False
    for chunk in setup.src.iter_chunks(progress=progress, desc="check pass 1"):
        x = chunk.data.to(device=setup.dictionary.device)
        a = setup.codes(x, chunk.start)
        if p1 is None:
            tau, use_sparse = first_chunk_choices(setup, a, tol, sparse)
            p1 = pass_one_start(setup, buffer_size, tau)
        pass_one_update(setup, p1, x, a, chunk.start, use_sparse)
    assert p1 is not None
    return p1


def _decide_pairs(
    setup: Setup,
    st1: PassOneStats,
    tau: float,
    tol: Tolerances,
    thresholds: LabelThresholds,
    block: int,
    max_pair_certificates: int,
) -> PairPlan:
    """Classify every ordered pair from the top buffers (:mod:`dictopt.check.pairs`), a block
    of ``block`` rows of the Gram matrix at a time, and list the pairs pass 2 must track."""
    dic = setup.dictionary
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
    fslope = setup.lam * fside * ((1 - fc) * abar[fi] - fval)
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


def _pass_two(
    setup: Setup, plan: PairPlan, tau: float, want_hull: bool, progress: bool
) -> PassTwoResult:
    """Stream again (re-encoding) for the exact ``H_ij``/``L_ij`` of the pairs the buffers
    left open, the step bounds of the certified pairs and the co-activity of label pairs;
    keep the codes when the exact joint hull will run."""
    assert setup.src is not None
    p2 = pass_two_start(setup, plan)
    if plan.key.numel() or want_hull:
        for chunk in setup.src.iter_chunks(progress=progress, desc="check pass 2"):
            x = chunk.data.to(device=setup.dictionary.device)
            pass_two_update(p2, setup.codes(x, chunk.start), tau, want_hull)
    return p2


def _pair_violations(
    setup: Setup,
    plan: PairPlan,
    st2: PassTwoStats,
    pos_of: dict[int, int],
    abar: torch.Tensor,
    tau: float,
    tol: Tolerances,
) -> list[Violation]:
    """Every C5 violation with its certificate (THEORY C5): the pair move is the
    :class:`Toward` move ``k = j, q = ±e_i, κ = ±H_ij`` (``∓L_ij``), stepped to the exact
    minimiser of ``ΔL`` within the step bound ``t_max`` that keeps every code nonnegative."""
    dic, lam = setup.dictionary, setup.lam
    K, D = dic.K, dic.atoms
    floor = atom_floor(abar, tol)
    out: list[Violation] = []
    for i, j, side, val, certify in _pair_candidates(st2, plan, D, abar, floor, tol, dic.has_bias):
        c_ij = float(D[i] @ D[j])
        slope = lam * side * ((1 - c_ij) * float(abar[i]) - val)
        p = pos_of.get(i * K + j)
        if certify and p is not None:
            t_max = float(st2.t_up[p] if side > 0 else st2.t_lo[p])
        else:
            t_max = 0.0
        move = Toward(0.0, k=j, J=torch.tensor([i]), q=torch.tensor([float(side)]),
                      kappa=float(side * val) if dic.has_bias else 0.0)
        t = best_toward_step(move, D, abar, lam, t_max) if t_max > 0 else 0.0
        strict = side > 0 and val <= tau
        out.append(Violation(
            "C5", i, j, "hierarchy" if strict else ("upper" if side > 0 else "lower"),
            slope, t, slope * t, -move.model_delta(D, abar, lam) if t > 0 else 0.0,
            detail={"side": "upper" if side > 0 else "lower", "H" if side > 0 else "L": val,
                    "theta": (1 - c_ij) * float(abar[i]), "cos": c_ij, "t_max": t_max},
            move=move,
        ))
    return out


def _pair_candidates(
    st2: PassTwoStats,
    plan: PairPlan,
    D: torch.Tensor,
    abar: torch.Tensor,
    floor: float,
    tol: Tolerances,
    has_bias: bool,
) -> list[PairCandidate]:
    """C5 violations: known from buffers, plus unknown pairs decided by pass 2."""
    K = D.shape[0]
    known = plan.known
    out = [
        PairCandidate(int(known.i[t]), int(known.j[t]), int(known.side[t]),
                      float(known.value[t]), t < known.n_certified)
        for t in range(known.i.numel())
    ]
    if plan.unknown_keys.numel():
        keyset = set(plan.unknown_keys.tolist())
        for p in range(st2.pi.numel()):
            i, j = int(st2.pi[p]), int(st2.pj[p])
            if i * K + j not in keyset:
                continue
            theta = (1 - float(D[i] @ D[j])) * float(abar[i])
            tol_i = tol.pair_rel * float(abar[i]) + floor
            H, L = float(st2.H[p]), float(st2.L[p])
            if has_bias:
                if theta - H > tol_i:
                    out.append(PairCandidate(i, j, 1, H, True))
                if L - theta > tol_i:
                    out.append(PairCandidate(i, j, -1, L, True))
            elif H <= 0 and theta > tol_i:
                out.append(PairCandidate(i, j, 1, H, True))
    # the same pair may be known on one side and unknown on the other: keep distinct sides
    seen: set[tuple[int, int, int]] = set()
    uniq = []
    for cand in out:
        if (cand.i, cand.j, cand.side) not in seen:
            seen.add((cand.i, cand.j, cand.side))
            uniq.append(cand)
    return uniq


def _joint_hull(
    setup: Setup,
    kept_codes: list[torch.Tensor],
    st1: PassOneStats,
    tau: float,
    tol: Tolerances,
    hull: bool | str,
    want_hull: bool,
) -> tuple[list[Violation], dict[str, Any]]:
    """The joint hull condition C5′ (exact LP per atom, :mod:`dictopt.check.hull`) when the
    codes were kept; only meaningful with a bias. Returns violations and the report's info."""
    dic = setup.dictionary
    info: dict[str, Any] = {"mode": "skipped", "atoms_checked": 0, "seconds": 0.0}
    if want_hull and dic.has_bias:
        from dictopt.check.hull import joint_hull

        th = time.perf_counter()
        A = torch.cat(kept_codes).to(F64)
        found = joint_hull(A, dic.atoms, st1.mean_a, setup.lam, tau, tol)
        info = {"mode": "exact", "atoms_checked": dic.K, "seconds": time.perf_counter() - th}
        return found, info
    if hull is not False and dic.has_bias:
        info["mode"] = f"skipped (N·K = {st1.n * dic.K} > hull_exact_limit)"
    return [], info


def _assemble_report(
    setup: Setup,
    p1: PassOneResult,
    cols: dict[str, torch.Tensor],
    violations: list[Violation],
    labels: list[Label],
    hull_info: dict[str, Any],
    n_pass2: int,
    tol: Tolerances,
    timings: dict[str, float],
    t0: float,
) -> CheckReport:
    """The summary (loss, counts, labels, capacity, amortisation, timings) and per-atom rows."""
    st1, lam = p1.stats, setup.lam
    N, K = st1.n, setup.dictionary.K
    rec = st1.half_sq / N
    counts = {c: sum(v.condition == c for v in violations) for c in CONDITIONS}
    label_counts = {name: 0 for name in LABELS}
    for lab in labels:
        label_counts[lab.label] += 1
    label_counts["hierarchy"] = sum(v.label == "hierarchy" for v in violations)
    label_counts["always_on"] = counts["C4"]
    summary: dict[str, Any] = {
        "N": N, "K": K, "d": setup.dictionary.d, "lam": lam, "codes": setup.mode,
        "tau": p1.tau, "has_bias": setup.dictionary.has_bias,
        "loss": rec + lam * st1.l1 / N, "reconstruction": rec, "sparsity": lam * st1.l1 / N,
        "explained_variance": st1.ev.value, "l0": float(st1.n_active.sum()) / N,
        # a certified descent of the dictionary (C1 alone is about the codes, not D)
        "unstable_optimum": any(
            v.condition != "C1" and (v.model_decrease or 0.0) > 0 for v in violations
        ),
        "counts": counts, "labels": label_counts,
        "duplicate_groups": duplicate_groups(
            [(lab.i, lab.j) for lab in labels if lab.label == "duplicate"], K
        ),
        "max_kkt_violation": float(cols["kkt_violation"].max()),
        "bias_residual": float(st1.r_mean.norm()),
        "capacity": {"points_over_lam": st1.n_over, "total_gain": st1.over_sum / N,
                     "max_gain": st1.over_max / N},
        "amortisation": setup.amortisation_note,
        "pairs_in_pass2": n_pass2,
        "hull": hull_info,
        "tolerances": {k: getattr(tol, k) for k in tol.__dataclass_fields__},
    }
    amort = p1.amortisation
    if amort is not None:
        summary["amortisation"] = {
            "optimal_loss": amort.loss / amort.n,
            "loss_gap": summary["loss"] - amort.loss / amort.n,
            "mean_abs_code_diff": (amort.code_diff / N).tolist(),
        }
    atom_rows = _atom_rows(st1, cols, labels, violations)
    timings["total"] = time.perf_counter() - t0
    summary["timings"] = timings
    return CheckReport(summary, atom_rows, violations, labels)


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


def _labels(
    st1: PassOneStats,
    st2: PassTwoStats,
    pos_of: dict[int, int],
    cand: LabelCandidates,
    th: LabelThresholds,
) -> list[Label]:
    """Structural labels: dead atoms, duplicates, the absorption signature (high cosine,
    disjoint supports) and dense antipodal pairs (THEORY C6, predicted, not violations)."""
    K, N = st1.K, st1.n
    labels: list[Label] = []
    frac = st1.n_active / N
    for k in (st1.n_active == 0).nonzero().flatten().tolist():
        labels.append(Label("dead", k))
    for t in range(cand.i.numel()):
        i, j, c = int(cand.i[t]), int(cand.j[t]), float(cand.cos[t])
        if c >= th.duplicate_cos:
            labels.append(Label("duplicate", i, j, {"cos": c}))
        p = pos_of.get(i * K + j)
        coact = float(st2.coact[p]) if p is not None else math.nan
        if (c >= th.absorption_cos and coact == 0 and st1.n_active[i] > 0
                and st1.n_active[j] > 0):
            labels.append(Label("absorption", i, j, {"cos": c, "coactive": 0}))
        if (c <= -th.antipodal_cos and frac[i] >= th.dense_fraction
                and frac[j] >= th.dense_fraction):
            labels.append(Label("antipodal", i, j, {"cos": c, "coactive": coact}))
    return labels


def _atom_rows(
    st1: PassOneStats,
    cols: dict[str, torch.Tensor],
    labels: list[Label],
    violations: list[Violation],
) -> list[dict[str, Any]]:
    """One row per atom: its statistics, condition residuals and labels."""
    K, N = st1.K, st1.n
    tags: list[list[str]] = [[] for _ in range(K)]
    for lab in labels:
        tags[lab.i].append(lab.label)
        if lab.j is not None:
            tags[lab.j].append(lab.label)
    for v in violations:
        if v.condition == "C4":
            tags[v.i].append("always_on")
        if v.label == "hierarchy":
            tags[v.i].append("hierarchy_child")
            tags[v.j].append("hierarchy_parent")
    abar = st1.mean_a
    return [
        {
            "k": k,
            "mean_code": float(abar[k]),
            "active_fraction": float(st1.n_active[k]) / N,
            "min_code": float(st1.min_a[k]),
            "max_code": float(st1.max_a[k]),
            "kkt_violation": float(cols["kkt_violation"][k]),
            "stationarity_tangential": float(cols["stationarity_tangential"][k]),
            "stationarity_radial": float(cols["stationarity_radial"][k]),
            "labels": sorted(set(tags[k])),
        }
        for k in range(K)
    ]
