"""The check's two streamed passes, each described once as a :class:`StreamPass`.

Pass 1 (:class:`PassOne`) encodes each chunk, forms residuals and accumulates
:class:`~dictopt.check.stats.PassOneStats` (C1–C4 sums, extremes, capacity, top buffers) and,
when wanted, the amortisation sums; τ and the sparse kernels are fixed on the stream's first
chunk. Pass 2 (:class:`PassTwo`) re-encodes for the exact extremes of the pairs the plan left
open, the step bounds of the certified pairs and the co-activity of label pairs, and keeps the
codes when the exact joint hull will run. Any :class:`~dictopt.check.executor.Executor` runs
them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dictopt.check.absorption import (
    AbsorptionStats,
    absorption_merge,
    absorption_start,
    absorption_update,
)
from dictopt.check.amortisation import AmortisationSums
from dictopt.check.inputs import Setup
from dictopt.check.plan import PairPlan
from dictopt.check.stats import PassOneStats, PassTwoStats, density
from dictopt.check.tolerances import Tolerances

F64 = torch.float64


class PassOneResult(NamedTuple):
    """Pass 1: the mergeable statistics and the choices fixed on the first chunk."""

    stats: PassOneStats
    tau: float
    """Inactivity threshold τ actually used."""
    amortisation: AmortisationSums | None


class PassTwoResult(NamedTuple):
    """Pass 2: exact extremes of the tracked pairs, and the codes if the exact hull runs."""

    stats: PassTwoStats
    kept_codes: list[torch.Tensor]
    absorption: AbsorptionStats | None = None
    """Co-firing statistics of the absorption candidates (:mod:`dictopt.check.absorption`)."""


def first_chunk_choices(
    setup: Setup, a: torch.Tensor, tol: Tolerances, sparse: bool | None
) -> tuple[float, bool]:
    """The choices fixed on the stream's first chunk.

    Parameters
    ----------
    setup:
        The check's inputs.
    a:
        Codes of the stream's first chunk.
    tol:
        Tolerances (``tau``, ``tau_rel``).
    sparse:
        The user's choice of sparse kernels (``None``: automatic).

    Returns
    -------
    tuple[float, bool]
        ``(τ, sparse)``: solver codes may leave ~1e-16 dust, so τ is relative to the largest
        code unless given; the sparse kernels are used when codes are < 10 % dense and
        ``K ≥ 256``.
    """
    tau = tol.tau
    if tau is None:
        tau = 0.0 if setup.mode == "own" else tol.tau_rel * float(a.max())
    if sparse is None:
        sparse = density(a, tau) < 0.1 and setup.dictionary.K >= 256
    return tau, bool(sparse)


class PassOne:
    """Pass 1 as a :class:`~dictopt.check.executor.StreamPass` (state: :class:`PassOneResult`).

    Parameters
    ----------
    setup:
        The check's inputs.
    tol:
        Tolerances (τ is fixed from them on the first chunk).
    buffer_size:
        ``m``, extreme points kept per atom.
    sparse:
        Sparse kernels (``None``: chosen on the first chunk).
    """

    desc = "check pass 1"
    fixes_first_chunk = True

    def __init__(self, setup: Setup, tol: Tolerances, buffer_size: int,
                 sparse: bool | None) -> None:
        self.setup, self.tol, self.buffer_size = setup, tol, buffer_size
        self.sparse = sparse
        self.tau: float | None = None
        self._first: tuple[int, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # the first chunk's codes are a local shortcut, never shipped to workers
        return {**self.__dict__, "_first": None}

    def first_chunk(self, x: torch.Tensor, start: int) -> PassOne:
        """A copy with τ and the kernels fixed on the codes of the stream's first chunk."""
        x = x.to(self.setup.dictionary.device)
        # held by ``update`` with the nonzeros it finds anyway (not scanned twice here)
        a = self.setup.codes(x, start, hold=False)
        out = PassOne(self.setup, self.tol, self.buffer_size, self.sparse)
        out.tau, out.sparse = first_chunk_choices(self.setup, a, self.tol, self.sparse)
        out._first = (start, a)
        return out

    def start(self) -> PassOneResult:
        """Empty statistics (and amortisation sums when wanted)."""
        assert self.tau is not None, "first_chunk fixes τ before the pass starts"
        dic = self.setup.dictionary
        st1 = PassOneStats(dic.K, dic.d, self.setup.lam, self.buffer_size, dic.device)
        amort = AmortisationSums(dic.K, dic.device) if self.setup.amortisation.active else None
        return PassOneResult(st1, self.tau, amort)

    def _codes(self, x: torch.Tensor, start: int) -> torch.Tensor:
        first, self._first = self._first, None
        if first is not None and first[0] == start and first[1].shape[0] == x.shape[0]:
            return first[1]
        return self.setup.codes(x, start, hold=False)  # held in update, with its nonzeros

    def update(self, state: PassOneResult, x: torch.Tensor, start: int) -> PassOneResult:
        """Add one chunk ``x`` (first global row ``start``)."""
        dic = self.setup.dictionary
        x = x.to(dic.device)
        a = self._codes(x, start)
        active = (a > state.tau).nonzero(as_tuple=True)
        if self.setup.cache is not None:
            # codes are ≥ 0 (chunk_codes), so with τ = 0 the active entries are the nonzeros
            self.setup.cache.put(start, a, active if state.tau == 0 else None)
        state.stats.update(x, a, dic.atoms, dic.bias, start, state.tau, sparse=bool(self.sparse),
                           active=active)
        if state.amortisation is not None:
            state.amortisation.update(self.setup.amortisation, dic, self.setup.lam, x, a, start)
        return state

    @staticmethod
    def merge(p: PassOneResult, q: PassOneResult) -> PassOneResult:
        """``p`` with the statistics of ``q`` (later rows) merged in."""
        p.stats.merge(q.stats)
        if p.amortisation is not None and q.amortisation is not None:
            p.amortisation.merge(q.amortisation)
        return p


class PassTwo:
    """Pass 2 as a :class:`~dictopt.check.executor.StreamPass` (state: :class:`PassTwoResult`).

    Parameters
    ----------
    setup:
        The check's inputs.
    plan:
        The pairs to track (:func:`dictopt.check.plan.decide_pairs`).
    tau:
        τ of pass 1.
    keep_codes:
        Keep every chunk's codes (for the exact joint hull).
    """

    desc = "check pass 2"
    fixes_first_chunk = False

    def __init__(self, setup: Setup, plan: PairPlan, tau: float, keep_codes: bool) -> None:
        self.setup, self.plan, self.tau, self.keep_codes = setup, plan, tau, keep_codes

    def first_chunk(self, x: torch.Tensor, start: int) -> PassTwo:
        """Nothing is fixed on the first chunk."""
        return self

    def start(self) -> PassTwoResult:
        """Extremes initialised from the plan (exact where the buffers knew them)."""
        K, plan = self.setup.dictionary.K, self.plan
        ab = None if plan.absorption is None else absorption_start(*plan.absorption, K)
        return PassTwoResult(PassTwoStats(plan.key // K, plan.key % K, plan.H0, plan.L0), [], ab)

    def update(self, state: PassTwoResult, x: torch.Tensor, start: int) -> PassTwoResult:
        """Add the codes of one chunk (and keep them for the exact hull)."""
        a = self.setup.codes(x.to(self.setup.dictionary.device), start)
        state.stats.update(a, self.tau)
        if state.absorption is not None:
            absorption_update(state.absorption, a)
        if self.keep_codes:
            state.kept_codes.append(a)
        return state

    @staticmethod
    def merge(p: PassTwoResult, q: PassTwoResult) -> PassTwoResult:
        """``p`` with ``q`` merged in; ``q``'s rows come after ``p``'s."""
        p.stats.merge(q.stats)
        p.kept_codes.extend(q.kept_codes)
        if p.absorption is not None and q.absorption is not None:
            p = p._replace(absorption=absorption_merge(p.absorption, q.absorption))
        return p
