"""The amortisation gap: how much lower the loss is with the exact lasso codes (THEORY C1).

For a dictionary with its own encoder the check also reports, per row,
``gap_n = ℓ_n(own codes) − ℓ_n(optimal codes)`` with ``ℓ_n(a) = ½‖x_n − b − aD‖² + λ Σ_k a_k``
(``gap_n ≥ 0``: the optimal codes minimise ``ℓ_n``). The exact codes cost far more than the
encoder (an active-set solve over all K atoms per row), so by default the gap is estimated on a
**sample of rows** and reported with its standard error; every row only when asked.

* :func:`plan_amortisation` turns the user's choice (``"all"``, ``("sample", n)`` or ``n``,
  ``"off"``/``False``, ``None`` for the default) into an :class:`AmortisationPlan`.
* Rows are chosen by a hash of their **global row index** (:func:`sample_mask`): row ``g`` is in
  the sample when ``u(g) < n / N`` with ``u`` the splitmix64 hash of ``g`` (and the seed) mapped
  to ``[0, 1)``. The choice depends on nothing but ``g``, ``n``, ``N`` and the seed, so it is the
  same in one process and on a Dask cluster whatever the chunks and partitions; a hash, not a
  stride, so periodic data (token positions in fixed-length contexts) cannot alias with it.
  The sample size is Binomial(N, n/N): ``n ± √n`` rows, reported exactly.
* :class:`AmortisationSums` accumulates the sampled rows' gaps (count, mean and sum of squared
  deviations, merged with Chan's formula) and ``Σ |a_opt − a|`` per atom. The estimate is the
  sample mean; its standard error ``s / √m · √(1 − m/N)`` (finite-population correction: 0 when
  every row is used). The exact codes are solved in slices of the coder's batch size
  (:func:`dictopt.lasso.plan_coder`), so the memory they take is bounded by the coder's
  budget whatever the chunk size and K.
* :func:`exact_code_cost` estimates what the exact codes will cost; :func:`announce` logs it
  before pass 1 (a warning when it is large: over a minute and more work than an
  encode+decode pass over the data).

Default sample: :data:`DEFAULT_SAMPLE_ROWS` rows. Each ``gap_n`` is nonnegative, and such
variables rarely have a coefficient of variation above 1, so 512 rows give a relative standard
error of about ``1/√512 ≈ 4.4 %`` or less, enough to tell the size of the gap; it costs a
fixed number of exact solves whatever N (measured in benchmarks/bench_amortisation.py: about
0.3 s a row at K = 32,768, d = 768, L0 ≈ 40 on one core of the shared box).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from dictopt.lasso import plan_coder
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)
F64 = torch.float64

DEFAULT_SAMPLE_ROWS = 512
"""Rows in the default sample (see the module docstring for why)."""

Mode = Literal["off", "sample", "all"]

AMORTISATION_HELP = (
    "expected 'all', 'off', ('sample', N) or a sample size N ≥ 1 (on the command line: "
    "--amortisation all | off | sample N)"
)

STEPS_PER_ROW = 20
"""Active-set steps assumed per row by :func:`exact_code_cost` (rows with L0 ≈ 40 took 17 at
K = 32,768, d = 768; more for denser codes)."""

ASSUMED_FLOPS = 5e9
"""Floating-point operations per second assumed by :func:`exact_code_cost` (one core; what
the active-set steps reached on the shared 2-core box)."""

LARGE_SECONDS = 60.0
"""An estimate is *large* (logged as a warning) above this many seconds when it is also more
work than one encode+decode pass over the data (``4 N K d`` flops), i.e. when the gap would
more than double the check."""


# ---- the user's choice --------------------------------------------------------------------


def parse_amortisation(value: Any) -> tuple[Mode | None, int | None]:
    """``(mode, n)`` for an ``amortisation`` argument; ``(None, None)`` for the default.

    Accepts ``None`` (default), ``"all"`` or ``True``, ``"off"`` or ``False``, an int ``n ≥ 1``,
    ``("sample", n)``, and the command-line forms ``"sample N"`` / ``["sample", "N"]``.

    Parameters
    ----------
    value:
        The ``amortisation`` argument of ``check`` or the command line.

    Returns
    -------
    (mode, n)
        ``mode`` is ``"all"``, ``"off"``, ``"sample"`` or ``None`` (default); ``n`` the sample
        size for ``"sample"``, else ``None``.

    Raises
    ------
    DictoptInputError
        For anything else, with one line naming the accepted values.
    """
    if value is None:
        return None, None
    if value is True or value == "all" or value == ["all"]:
        return "all", None
    if value is False or value == "off" or value == ["off"]:
        return "off", None
    if isinstance(value, str):
        value = value.split()
    if isinstance(value, list | tuple) and len(value) == 2 and value[0] == "sample":
        value = value[1]
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1:
        return "sample", int(value)
    raise DictoptInputError(f"amortisation: {AMORTISATION_HELP}; got {value!r}")


@dataclass(frozen=True)
class AmortisationPlan:
    """Which rows get exact codes for the amortisation gap."""

    mode: Mode
    """``"off"``, ``"sample"`` (rows chosen by :func:`sample_mask`) or ``"all"``."""
    sample_rows: int = 0
    """Requested sample size (``"sample"``)."""
    population: int | None = None
    """Rows in the data (``N``), when known before pass 1."""
    seed: int = 0
    """Seed of the row hash."""
    note: str | None = None
    """Why the gap is off, when it is off by default (shown in the report)."""

    @property
    def active(self) -> bool:
        return self.mode != "off"

    @property
    def rate(self) -> float:
        """Probability that a row is in the sample (1 for ``"all"``)."""
        if self.mode == "all":
            return 1.0
        if self.mode == "off":
            return 0.0
        if self.population is None:
            return 1.0
        return min(1.0, self.sample_rows / max(self.population, 1))

    @property
    def expected_rows(self) -> int | None:
        """Rows expected to get exact codes (``None`` when N is unknown)."""
        if self.population is None:
            return None
        return round(self.rate * self.population)

    def rows(self, start: int, count: int) -> torch.Tensor:
        """Positions, within a chunk of ``count`` rows whose first global row is ``start``, of
        the rows in the sample."""
        if self.rate >= 1.0:
            return torch.arange(count)
        mask = sample_mask(start, count, self.rate, self.seed)
        return torch.from_numpy(np.flatnonzero(mask))

    def cost(self, K: int, d: int) -> CostEstimate:
        """:func:`exact_code_cost` of this plan."""
        return exact_code_cost(self.expected_rows, K, d, population=self.population)

    def describe(self, K: int, d: int) -> str:
        """One line: what the amortisation gap will compute."""
        if self.mode == "off":
            return "amortisation gap: off" + (f" ({self.note})" if self.note else "")
        cost = self.cost(K, d)
        N = self.population
        if self.mode == "all" or self.rate >= 1.0:
            what = f"exact codes for all {_rows(N)} rows"
        else:
            what = (f"exact codes for a sample of about {self.expected_rows:,} of {N:,} rows "
                    f"(by row-index hash, seed {self.seed})")
        return f"amortisation gap: {what} at K = {K:,}, d = {d}; {cost.describe()}"


def plan_amortisation(
    value: Any, *, codes_mode: str, population: int | None, seed: int = 0
) -> AmortisationPlan:
    """The :class:`AmortisationPlan` for an ``amortisation`` argument.

    Parameters
    ----------
    value:
        See :func:`parse_amortisation`; ``None`` means a sample of :data:`DEFAULT_SAMPLE_ROWS`
        rows when the codes are the dictionary's own (``codes_mode == "own"``), else off.
    codes_mode:
        ``"own"``, ``"optimal"`` or ``"given"`` (the gap compares the checked codes with the
        optimal ones, so it is off by default unless they are the encoder's).
    population:
        Rows in the data, if known (``None``: every row is used, since a rate needs N).
    seed:
        Seed of the row hash.

    Returns
    -------
    AmortisationPlan
    """
    mode, n = parse_amortisation(value)
    if mode is None:
        if codes_mode != "own":
            return AmortisationPlan("off")
        mode, n = "sample", DEFAULT_SAMPLE_ROWS
    if mode == "off":
        return AmortisationPlan("off")
    return AmortisationPlan(mode, n or 0, population, seed)


def _rows(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


# ---- rows by index ------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def row_hash(rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """``u(g) ∈ [0, 1)`` for global row indices ``g``: splitmix64 of ``g + (seed + 1)·φ``,
    its top 53 bits scaled to ``[0, 1)`` (a pure function of ``g`` and the seed).

    Parameters
    ----------
    rows:
        Global row indices (any shape; cast to ``uint64``).
    seed:
        Selects another hash.

    Returns
    -------
    np.ndarray
        float64 values in ``[0, 1)``, the shape of ``rows``.
    """
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed + 1) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def sample_mask(start: int, count: int, rate: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of the rows ``start … start + count − 1`` (global indices) in the sample:
    ``row_hash(g, seed) < rate``.

    Parameters
    ----------
    start:
        Global index of the first row.
    count:
        Number of rows.
    rate:
        Expected fraction of rows in the sample.
    seed:
        As for :func:`row_hash`.

    Returns
    -------
    np.ndarray
        ``[count]`` bool.
    """
    return row_hash(np.arange(start, start + count, dtype=np.uint64), seed) < rate


# ---- the sums -----------------------------------------------------------------------------


@dataclass
class AmortisationSums:
    """Mergeable sums over the sampled rows: the per-row gap ``own − optimal`` (count, mean
    and sum of squared deviations) and ``Σ |a_opt − a|`` per atom."""

    K: int
    device: torch.device
    m: int = 0
    """Rows with exact codes."""
    mean_gap: float = 0.0
    m2_gap: float = 0.0
    """``Σ (gap_n − mean)²`` over those rows."""
    code_diff: torch.Tensor = field(init=False)
    """``[K]`` ``Σ_n |a_opt − a|`` per atom over those rows."""

    def __post_init__(self) -> None:
        self.code_diff = torch.zeros(self.K, dtype=F64, device=self.device)

    def update(
        self, plan: AmortisationPlan, dictionary: Any, lam: float, x: torch.Tensor,
        a: torch.Tensor, start: int,
    ) -> None:
        """Add the sampled rows of chunk ``x`` (first global row ``start``, codes ``a``): their
        exact codes are solved in slices of the coder's batch size."""
        pos = plan.rows(start, x.shape[0]).to(x.device)
        if pos.numel() == 0:
            return
        step = plan_coder(dictionary.K, dictionary.d).batch_size
        for sl in pos.split(step):
            xs, own = x[sl], a[sl].to(F64)
            opt = dictionary.optimal_codes(xs).to(F64)
            gap = _row_loss(dictionary, lam, xs, own) - _row_loss(dictionary, lam, xs, opt)
            self._add(gap)
            self.code_diff += (opt - own).abs().sum(0)

    def _add(self, gap: torch.Tensor) -> None:
        n = gap.numel()
        mean = float(gap.mean())
        m2 = float(((gap - mean) ** 2).sum())
        self._combine(n, mean, m2)

    def _combine(self, n: int, mean: float, m2: float) -> None:
        """Chan et al.'s pairwise update of (count, mean, M2)."""
        if n == 0:
            return
        tot = self.m + n
        delta = mean - self.mean_gap
        self.mean_gap += delta * n / tot
        self.m2_gap += m2 + delta * delta * self.m * n / tot
        self.m = tot

    def merge(self, o: AmortisationSums) -> None:
        """Absorb the sums of other chunks."""
        self._combine(o.m, o.mean_gap, o.m2_gap)
        self.code_diff = self.code_diff + o.code_diff

    def standard_error(self, population: int) -> float:
        """Standard error of the mean gap: ``s/√m · √(1 − m/N)`` (NaN for fewer than 2 rows
        of a larger population; 0 when every row was used)."""
        if self.m >= population:
            return 0.0
        if self.m < 2:
            return math.nan
        var = self.m2_gap / (self.m - 1)
        return math.sqrt(var / self.m * (1 - self.m / population))

    def summary(self, plan: AmortisationPlan, N: int, loss: float) -> dict[str, Any]:
        """The report's ``amortisation`` entry (see :mod:`dictopt.check.report`)."""
        m = max(self.m, 1)
        return {
            "rows": "all" if self.m >= N else "sample",
            "sample_size": self.m,
            "population": N,
            "seed": plan.seed,
            "loss_gap": self.mean_gap,
            "loss_gap_se": self.standard_error(N),
            "optimal_loss": loss - self.mean_gap,
            "mean_abs_code_diff": (self.code_diff / m).tolist(),
        }


def _row_loss(dictionary: Any, lam: float, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``½‖x_n − b − a_n D‖² + λ Σ_k a_kn`` per row (float64)."""
    r = (x - dictionary.decode(a)).to(F64)
    return 0.5 * (r**2).sum(1) + lam * a.sum(1)


# ---- cost --------------------------------------------------------------------------------


class CostEstimate(NamedTuple):
    """What the exact codes for the amortisation gap will cost (rough, see the constants)."""

    rows: int | None
    flops: float
    seconds: float
    """At :data:`ASSUMED_FLOPS`."""
    working_set: int
    """Bytes of the coder's working set (bounded by its budget)."""
    gram: bool
    encode_flops: float
    """One encode+decode pass over the data, ``4 N K d`` (0 when N is unknown)."""

    @property
    def large(self) -> bool:
        return self.seconds > LARGE_SECONDS and self.flops > self.encode_flops

    def describe(self) -> str:
        return (f"about {self.flops:.2g} flops (~{_duration(self.seconds)} at "
                f"{ASSUMED_FLOPS / 1e9:.0f} GFLOP/s) and a working set of "
                f"{self.working_set / 1e9:.2g} GB")


def exact_code_cost(
    rows: int | None, K: int, d: int, budget: Any = None, *, population: int | None = None
) -> CostEstimate:
    """Estimated cost of exact codes for ``rows`` rows: :data:`STEPS_PER_ROW` active-set steps
    a row, each about ``4 K d`` flops (the gradient through the atoms), and the coder's working
    set under its memory budget (:func:`dictopt.lasso.plan_coder`); compared with one
    encode+decode pass over ``population`` rows (default ``rows``).

    Parameters
    ----------
    rows:
        Rows solved exactly (``None``: unknown, counted as 0).
    K, d:
        Number of atoms and the activation width.
    budget:
        The coder's memory budget (as :func:`dictopt.lasso.plan_coder` takes it).
    population:
        Rows of the whole data set (for the encode+decode comparison).

    Returns
    -------
    CostEstimate
        Flops, seconds at :data:`ASSUMED_FLOPS`, working-set bytes, whether the Gram matrix is
        formed, and the flops of one encode+decode pass.
    """
    n = rows if rows is not None else 0
    plan = plan_coder(K, d, budget)
    plan = plan._replace(batch_size=max(1, min(plan.batch_size, n)))
    flops = float(n) * STEPS_PER_ROW * 4.0 * K * d
    N = population if population is not None else n
    return CostEstimate(rows, flops, flops / ASSUMED_FLOPS, plan.working_set(K, d), plan.gram,
                        4.0 * N * K * d)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def announce(plan: AmortisationPlan, K: int, d: int) -> str:
    """Log what the amortisation gap will compute (a warning, with the way out, when the
    estimate is large); returns the line.

    Parameters
    ----------
    plan:
        The amortisation plan of the check.
    K, d:
        Number of atoms and the activation width.

    Returns
    -------
    str
        The logged line (:meth:`AmortisationPlan.describe`).
    """
    line = plan.describe(K, d)
    if plan.active and plan.cost(K, d).large:
        alt = ("--amortisation sample N (or off)" if plan.mode == "all" or plan.rate >= 1.0
               else "a smaller --amortisation sample N (or off)")
        log.warning("%s; use %s", line, alt)
    else:
        log.info("%s", line)
    return line


__all__ = [
    "DEFAULT_SAMPLE_ROWS",
    "AmortisationPlan",
    "AmortisationSums",
    "CostEstimate",
    "announce",
    "exact_code_cost",
    "parse_amortisation",
    "plan_amortisation",
    "row_hash",
    "sample_mask",
]
