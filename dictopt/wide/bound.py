"""The wide-dictionary limit ``L_∞`` of THEORY.md §3: a Huber-ised geometric median.

For any codes, ``Σ_k a_k ≥ ‖Σ_k a_k d_k‖`` (unit atoms, ``a ≥ 0``), so each point costs at
least ``h_λ(‖x_n − b‖)`` with the Huber function ``h_λ(t) = t²/2`` (``t ≤ λ``), ``λt − λ²/2``
(``t > λ``); equality needs one atom along ``x_n − b``. Hence for every width ``K``

    L*(K)  ≥  L_∞ = min_b f(b),     f(b) = (1/N) Σ_n h_λ(‖x_n − b‖).

``f`` is convex with a Lipschitz gradient. With ``t_n = ‖x_n − b‖`` and ``ψ = h_λ' = min(t, λ)``

    ∇f(b) = (1/N) Σ_n ψ(t_n) (b − x_n) / t_n = −(1/N) Σ_n r_n,

where ``r_n`` is the residual of the limit dictionary (``x_n − b`` inside the λ-ball, ``λ u_n``
outside): the optimality residual of the bound *is* bias stationarity (C3) of the limit
dictionary. The Hessian is ``(1/N) Σ_n H_n`` with ``H_n = I`` inside the ball and
``(λ/t_n)(I − u_n u_nᵀ)`` outside (``u_n`` the unit vector along ``x_n − b``).

Two solvers: :func:`wide_limit_bound` with ``method="fast"`` (damped Newton with an Armijo line
search, falling back to the monotone majorise–minimise (Weiszfeld-like) step; torch float64,
streamed over chunks so memory does not depend on N) and ``method="cvxpy"`` (the epigraph form
``min Σ ½ s_n² + λ u_n`` s.t. ``‖x_n − b‖ ≤ s_n + u_n``, ``u_n ≥ 0``, solved with CLARABEL) as
the reference.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import torch

from dictopt.check.executor import Executor, LocalExecutor
from dictopt.validation import DictoptInputError, check_finite, check_lambda, to_tensor

log = logging.getLogger(__name__)

DEFAULT_TOL = 1e-11
"""Default stopping tolerance on the relative residual ``‖∇f(b)‖ / λ``."""
_EPS = float(torch.finfo(torch.float64).eps)


class WideBound(NamedTuple):
    """The wide-limit bound ``L_∞`` and the bias attaining it."""

    bias: torch.Tensor
    """``[d]`` minimiser ``b`` of ``f`` (float64)."""
    value: float
    """``L_∞ = f(b)``, in the units of the canonical loss."""
    residual: float
    """Relative optimality residual ``‖∇f(b)‖ / λ`` (≤ 1 always; 0 at the optimum)."""
    n_outside: int
    """Number of points with ``‖x_n − b‖ > λ`` (they need an atom each, up to shared rays)."""
    n_iter: int
    """Iterations (Newton steps, or the cvxpy solver's iterations)."""
    lam: float
    method: str
    converged: bool


def huber(t: torch.Tensor, lam: float) -> torch.Tensor:
    """The Huber function ``h_λ(t)``: ``t²/2`` for ``t ≤ λ``, ``λ t − λ²/2`` above (t ≥ 0).

    Parameters
    ----------
    t:
        Nonnegative values.
    lam:
        λ.

    Returns
    -------
    torch.Tensor
        ``h_λ(t)``, elementwise.
    """
    return torch.where(t <= lam, 0.5 * t * t, lam * t - 0.5 * lam * lam)


# --------------------------------------------------------------------------------------------
# Input handling: an in-memory array or a streamed source, seen as a function giving chunks.
# --------------------------------------------------------------------------------------------

ChunkFn = Callable[[], Iterator[torch.Tensor]]


def _as_chunks(data: Any, chunk_size: int) -> tuple[ChunkFn, int, int]:
    """``(chunks, N, d)`` for an array/tensor or an :class:`ActivationSource` (float64)."""
    from dictopt.data.sources import ActivationSource, as_source

    if isinstance(data, ActivationSource) or isinstance(data, str):
        src = as_source(data)

        def chunks() -> Iterator[torch.Tensor]:
            for c in src.iter_chunks():
                yield c.data.to(torch.float64)

        n = src.n if src.n is not None else sum(c.shape[0] for c in chunks())
        return chunks, int(n), int(src.d)
    x = to_tensor(data, "x", dtype=torch.float64)
    if x.ndim != 2:
        raise DictoptInputError(f"x: expected a 2-D array [N, d], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise DictoptInputError("x: no data (N = 0); the wide-limit bound needs at least one point")
    if x.shape[1] == 0:
        raise DictoptInputError("x: width d = 0")
    check_finite(x, "x")

    def chunks_mem() -> Iterator[torch.Tensor]:
        for lo in range(0, x.shape[0], chunk_size):
            yield x[lo : lo + chunk_size]

    return chunks_mem, int(x.shape[0]), int(x.shape[1])


class PassSums(NamedTuple):
    """Sums over the points of one chunk (or several, merged) at a bias ``b``."""

    value: float
    """``Σ h_λ(t_n)``."""
    grad: torch.Tensor
    """``Σ w_n (b − x_n)``."""
    hess: torch.Tensor
    """``Σ w_n I − Σ_out (λ/t_n) u_n u_nᵀ`` (empty when not asked for)."""
    wx: torch.Tensor
    """``Σ w_n x_n``."""
    wsum: float
    n_outside: int

    def merge(self, o: PassSums) -> PassSums:
        """The sums over both sets of points."""
        return PassSums(self.value + o.value, self.grad + o.grad, self.hess + o.hess,
                        self.wx + o.wx, self.wsum + o.wsum, self.n_outside + o.n_outside)


def chunk_pass(x: torch.Tensor, b: torch.Tensor, lam: float, hessian: bool) -> PassSums:
    """Value, gradient, Hessian (optional: O(n d²)) and MM sums of one chunk ``x`` at ``b``.

    Parameters
    ----------
    x:
        One chunk ``[n, d]`` (float64).
    b:
        The bias.
    lam:
        λ.
    hessian:
        Also sum the Hessian.

    Returns
    -------
    PassSums
        Mergeable sums.
    """
    d = b.shape[0]
    y = x - b  # y_n = x_n − b
    t = y.norm(dim=1)
    out = t > lam
    # w_n = ψ(t_n)/t_n = min(1, λ/t_n): ∇f = (1/N) Σ w_n (b − x_n).
    w = torch.where(out, lam / t.clamp_min(lam), torch.ones_like(t))
    hess = torch.zeros(d, d, dtype=torch.float64) if hessian else torch.zeros(0, 0)
    if hessian:  # Σ w_n I − Σ_{outside} (λ/t_n) u_n u_nᵀ, u_n = y_n / t_n
        hess += float(w.sum()) * torch.eye(d, dtype=torch.float64)
        yo = y[out]
        if yo.shape[0]:
            scaled = yo * (lam / t[out] ** 3).sqrt()[:, None]  # (λ/t)·u uᵀ = (λ/t³) y yᵀ
            hess -= scaled.T @ scaled
    return PassSums(float(huber(t, lam).sum()), -(w[:, None] * y).sum(dim=0),
                    hess, (w[:, None] * x).sum(dim=0), float(w.sum()), int(out.sum()))


def chunk_value(x: torch.Tensor, b: torch.Tensor, lam: float) -> float:
    """``Σ_n h_λ(‖x_n − b‖)`` over one chunk.

    Parameters
    ----------
    x:
        One chunk ``[n, d]``.
    b:
        The bias.
    lam:
        λ.

    Returns
    -------
    float
        The sum.
    """
    return float(huber((x - b).norm(dim=1), lam).sum())


class Sums(Protocol):
    """The sums over all points that the solver needs (:class:`ExecutorSums`)."""

    n: int
    d: int

    def row_sum(self) -> torch.Tensor: ...

    def value(self, b: torch.Tensor, lam: float) -> float: ...

    def full(self, b: torch.Tensor, lam: float, hessian: bool) -> PassSums: ...


class _Chunk(NamedTuple):
    data: torch.Tensor
    start: int


class MemoryChunks:
    """Validated float64 chunks as a stream an executor reads (no re-validation per pass)."""

    def __init__(self, chunks: ChunkFn, n: int, d: int) -> None:
        self.chunks, self.n, self.d = chunks, n, d

    def iter_chunks(self, *, progress: bool = False, desc: str = "chunks") -> Iterator[_Chunk]:
        """The chunks in order with their first rows."""
        start = 0
        for x in self.chunks():
            yield _Chunk(x, start)
            start += x.shape[0]


class RowSumPass:
    """``Σ_n x_n`` as a :class:`~dictopt.check.StreamPass`."""

    desc = "bound mean"
    fixes_first_chunk = False

    def __init__(self, d: int) -> None:
        self.d = d

    def first_chunk(self, x: torch.Tensor, start: int) -> RowSumPass:
        """Nothing is fixed on the first chunk."""
        return self

    def start(self) -> torch.Tensor:
        """Zeros ``[d]``."""
        return torch.zeros(self.d, dtype=torch.float64)

    def update(self, state: torch.Tensor, x: torch.Tensor, start: int) -> torch.Tensor:
        """Add the chunk's rows."""
        state += x.sum(dim=0)
        return state

    @staticmethod
    def merge(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The sum of both."""
        return a + b


class ValuePass:
    """``Σ_n h_λ(‖x_n − b‖)`` as a :class:`~dictopt.check.StreamPass`."""

    desc = "bound value"
    fixes_first_chunk = False

    def __init__(self, b: torch.Tensor, lam: float) -> None:
        self.b, self.lam = b, lam

    def first_chunk(self, x: torch.Tensor, start: int) -> ValuePass:
        """Nothing is fixed on the first chunk."""
        return self

    def start(self) -> float:
        """No points yet."""
        return 0

    def update(self, state: float, x: torch.Tensor, start: int) -> float:
        """Add the chunk's values."""
        return state + chunk_value(x, self.b, self.lam)

    @staticmethod
    def merge(a: float, b: float) -> float:
        """The sum of both."""
        return a + b


class FullPass:
    """Value, gradient, Hessian and MM sums (:func:`chunk_pass`) as a
    :class:`~dictopt.check.StreamPass` (state ``None`` until the first chunk)."""

    desc = "bound pass"
    fixes_first_chunk = False

    def __init__(self, b: torch.Tensor, lam: float, hessian: bool) -> None:
        self.b, self.lam, self.hessian = b, lam, hessian

    def first_chunk(self, x: torch.Tensor, start: int) -> FullPass:
        """Nothing is fixed on the first chunk."""
        return self

    def start(self) -> PassSums | None:
        """No points yet."""
        return None

    def update(self, state: PassSums | None, x: torch.Tensor, start: int) -> PassSums:
        """Add the chunk's sums."""
        part = chunk_pass(x, self.b, self.lam, self.hessian)
        return part if state is None else state.merge(part)

    @staticmethod
    def merge(a: PassSums | None, b: PassSums | None) -> PassSums | None:
        """The sums over both sets of points."""
        return b if a is None else (a if b is None else a.merge(b))


class ExecutorSums:
    """:class:`Sums` as passes run by an executor over a stream.

    Parameters
    ----------
    executor:
        A :class:`~dictopt.check.Executor` (local chunks, or partitions on Dask).
    stream:
        What the executor reads (``.n``, ``.d`` known).
    """

    def __init__(self, executor: Executor, stream: Any) -> None:
        self.executor, self.stream = executor, stream
        self.n, self.d = int(stream.n), int(stream.d)

    def row_sum(self) -> torch.Tensor:
        """``Σ_n x_n``."""
        return self.executor.run(RowSumPass(self.d), self.stream)

    def value(self, b: torch.Tensor, lam: float) -> float:
        """``Σ_n h_λ(‖x_n − b‖)``."""
        return self.executor.run(ValuePass(b, lam), self.stream)

    def full(self, b: torch.Tensor, lam: float, hessian: bool) -> PassSums:
        """Value, gradient, Hessian (optional) and MM sums at ``b``."""
        out = self.executor.run(FullPass(b, lam, hessian), self.stream)
        assert out is not None, "sources hold at least one row"
        return out


def local_sums(chunks: ChunkFn, n: int, d: int) -> ExecutorSums:
    """:class:`Sums` streamed over in-memory or local chunks in this process.

    Parameters
    ----------
    chunks:
        Function giving the chunks (float64, validated).
    n:
        Number of rows.
    d:
        Width.

    Returns
    -------
    ExecutorSums
        Over a :class:`~dictopt.check.LocalExecutor`.
    """
    return ExecutorSums(LocalExecutor(), MemoryChunks(chunks, n, d))


def _value(sums: Sums, b: torch.Tensor, lam: float) -> float:
    return sums.value(b, lam) / sums.n


class _Pass(NamedTuple):
    value: float
    grad: torch.Tensor
    hess: torch.Tensor
    mm_target: torch.Tensor  # Σ w_n x_n / Σ w_n: the majorise-minimise (Weiszfeld) update
    n_outside: int


def _full_pass(sums: Sums, b: torch.Tensor, lam: float, *, hessian: bool = True) -> _Pass:
    """Value, gradient, Hessian (optional: O(N d²)) and MM target of ``f`` at ``b``, one pass."""
    s = sums.full(b, lam, hessian)
    n = sums.n
    return _Pass(s.value / n, s.grad / n, s.hess / n, s.wx / s.wsum, s.n_outside)


# --------------------------------------------------------------------------------------------
# Solvers.
# --------------------------------------------------------------------------------------------


def wide_limit_bound(
    x: Any,
    lam: float,
    *,
    method: str = "fast",
    tol: float = DEFAULT_TOL,
    max_iter: int = 200,
    chunk_size: int = 65536,
    init: Any | None = None,
    executor: Executor | None = None,
) -> WideBound:
    """The wide-limit bound ``L_∞ = min_b (1/N) Σ_n h_λ(‖x_n − b‖)`` (THEORY.md §3).

    Parameters
    ----------
    x:
        Data ``[N, d]`` (numpy array or torch tensor), or an activation source / ``.npy`` path
        (``method="fast"`` streams it chunk by chunk; ``"cvxpy"`` loads it into memory).
    lam:
        λ > 0 of the canonical objective.
    method:
        ``"fast"`` (Newton + line search, MM fallback; torch float64; each iteration costs
        ``O(N d²)`` for the Hessian), ``"mm"`` (majorise–minimise / Weiszfeld steps only:
        ``O(N d)`` per iteration, linear convergence; for large ``d``) or ``"cvxpy"`` (epigraph
        form with CLARABEL, the reference; practical for N up to ~10⁴).
    tol:
        Stop when the relative residual ``‖∇f(b)‖ / λ`` is below ``tol`` (fast method).
    max_iter:
        Maximum iterations (fast and mm methods; mm may need thousands).
    chunk_size:
        Rows per chunk for in-memory data (fast method).
    init:
        Optional starting bias ``[d]`` (default: the mean of the data).
    executor:
        Takes the sums over points (default: this process). With
        ``dictopt.distributed.DaskExecutor`` every sum is a map over partitions and a tree of
        additions (``x`` is then anything ``partition_source`` accepts; not for ``"cvxpy"``).

    Returns
    -------
    WideBound
        ``bias``, ``value`` (``f`` evaluated exactly at ``bias``), ``residual``, ``n_outside``,
        ``n_iter``, ``converged``.

    Raises
    ------
    DictoptInputError
        For λ ≤ 0, empty or non-finite data, a wrong shape, or an unknown method.
    """
    lam = check_lambda(lam)
    if method not in ("fast", "mm", "cvxpy"):
        raise DictoptInputError(f"method: expected 'fast', 'mm' or 'cvxpy', got {method!r}")
    if not (tol > 0):
        raise DictoptInputError(f"tol: must be > 0, got {tol!r}")
    newton = method == "fast"
    if executor is not None and not isinstance(executor, LocalExecutor):
        if method == "cvxpy":
            raise DictoptInputError("method: the cvxpy reference needs the data in one process; "
                                    "use 'fast' or 'mm' with a distributed executor")
        with executor.session():
            stream = executor.open(x, dtype=torch.float64, chunk_size=chunk_size)
            return solve_fast(ExecutorSums(executor, stream), lam, tol=tol, max_iter=max_iter,
                              init=init, newton=newton)
    chunks, n, d = _as_chunks(x, chunk_size)
    if method == "cvxpy":
        return _solve_cvxpy(chunks, n, d, lam)
    return solve_fast(local_sums(chunks, n, d), lam, tol=tol, max_iter=max_iter, init=init,
                      newton=newton)


def solve_fast(
    sums: Sums,
    lam: float,
    *,
    tol: float,
    max_iter: int,
    init: Any,
    newton: bool,
) -> WideBound:
    """Damped Newton (``newton=True``) or MM iterations on ``f``, every sum over points taken
    by ``sums`` (so the same iterations run locally or on a cluster).

    Parameters
    ----------
    sums, lam:
        The sums over points; λ.
    tol, max_iter:
        Stop at relative residual ``‖∇f‖/λ ≤ tol``, or after ``max_iter`` iterations.
    init:
        Starting bias (default: the data mean).
    newton:
        Damped Newton steps (else MM steps only).

    Returns
    -------
    WideBound
        The bound and its bias.
    """
    n, d = sums.n, sums.d
    if init is None:
        b = sums.row_sum() / n
    else:
        b = to_tensor(init, "init", dtype=torch.float64).reshape(-1).clone()
        if b.shape != (d,):
            raise DictoptInputError(f"init: expected shape ({d},), got {tuple(b.shape)}")
    stats = _full_pass(sums, b, lam, hessian=newton)
    it = 0
    converged = False
    for it in range(1, max_iter + 1):  # noqa: B007 (it is reported)
        gnorm = float(stats.grad.norm())
        if gnorm <= tol * lam:
            converged = True
            it -= 1
            break
        step, accepted, slope = 1.0, False, 0.0
        if newton:
            # Damped Newton direction; the ridge keeps flat directions (collinear far points)
            # solvable.
            ridge = 1e-12 * float(stats.hess.diagonal().sum()) / d + 1e-300
            eye = torch.eye(d, dtype=torch.float64)
            p = torch.linalg.solve(stats.hess + ridge * eye, -stats.grad)
            slope = float(stats.grad @ p)
        trial_stats = None
        if slope < 0:
            # f's own rounding: near the minimum a Newton step lowers f by about ½|slope|,
            # which float64 cannot see once it is below ~1e-16·|f|. Such a step is judged by
            # the gradient norm instead (f is convex, so a smaller gradient is progress);
            # without this the search halves 40 times and falls back to slow MM steps.
            blind = 64 * _EPS * max(1.0, abs(stats.value))
            for _ in range(40):
                trial = b + step * p
                f_trial = _value(sums, trial, lam)
                if f_trial <= stats.value + 1e-4 * step * slope:
                    accepted = True
                    break
                if -slope * step <= blind and abs(f_trial - stats.value) <= blind:
                    trial_stats = _full_pass(sums, trial, lam, hessian=newton)
                    accepted = float(trial_stats.grad.norm()) <= (1 - 1e-4 * step) * gnorm
                    break
                step *= 0.5
        if accepted:
            b = trial
            if trial_stats is not None:
                stats = trial_stats
                continue
        else:
            # Majorise–minimise (Weiszfeld-like) step: never increases f. h_λ(√s) is concave in
            # s, so h_λ(t) ≤ h_λ(t₀) + (ψ(t₀)/2t₀)(t² − t₀²) gives b ← Σ w x / Σ w.
            b_mm = stats.mm_target
            if float((b_mm - b).norm()) <= 1e-15 * (1.0 + float(b.norm())):
                converged = gnorm <= max(tol, 1e-9) * lam
                break
            b = b_mm
        stats = _full_pass(sums, b, lam, hessian=newton)
    else:
        converged = float(stats.grad.norm()) <= tol * lam
    residual = float(stats.grad.norm()) / lam
    if not converged:
        log.warning("wide_limit_bound: stopped after %d iterations, residual %.3g", it, residual)
    method = "fast" if newton else "mm"
    return WideBound(b, stats.value, residual, stats.n_outside, it, lam, method, converged)


def _solve_cvxpy(chunks: ChunkFn, n: int, d: int, lam: float) -> WideBound:
    import cvxpy as cp
    import numpy as np

    X = torch.cat(list(chunks())).numpy()
    # Centre and scale for conditioning; the bound transforms exactly (h is not scale-free, so
    # λ is scaled with the data): f_λ(b; x) = σ² f_{λ/σ}((b − m)/σ; (x − m)/σ).
    m = X.mean(axis=0)
    sigma = float(np.sqrt(((X - m) ** 2).sum(axis=1).mean())) or 1.0
    Z = (X - m) / sigma
    lz = lam / sigma
    b = cp.Variable(d)
    s = cp.Variable(n)
    u = cp.Variable(n, nonneg=True)
    ones = np.ones((n, 1))
    cons = [cp.norm(Z - ones @ cp.reshape(b, (1, d), order="C"), 2, axis=1) <= s + u]
    prob = cp.Problem(cp.Minimize((0.5 * cp.sum_squares(s) + lz * cp.sum(u)) / n), cons)
    with warnings.catch_warnings():
        # CLARABEL's default tolerances (1e-8): tighter ones make it stall on large N. The value
        # reported is f recomputed exactly at the returned bias, whose error is second order in
        # the bias error; an "optimal_inaccurate" end is reported through `converged`.
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(solver=cp.CLARABEL, max_iter=500)
    if b.value is None:
        raise RuntimeError(f"cvxpy/CLARABEL failed on the wide-limit bound: {prob.status}")
    bias = torch.as_tensor(m + sigma * b.value, dtype=torch.float64)
    stats = _full_pass(local_sums(chunks, n, d), bias, lam)
    n_iter = int(prob.solver_stats.num_iters or 0)
    ok = prob.status == cp.OPTIMAL
    if not math.isfinite(stats.value):
        raise RuntimeError("cvxpy returned a non-finite bias")
    residual = float(stats.grad.norm()) / lam
    return WideBound(bias, stats.value, residual, stats.n_outside, n_iter, lam, "cvxpy", ok)


def bound_objective(x: Any, b: Any, lam: float) -> float:
    """``f(b) = (1/N) Σ_n h_λ(‖x_n − b‖)`` for a given bias (float64).

    Parameters
    ----------
    x:
        Data ``[N, d]`` or a source.
    b:
        The bias ``[d]``.
    lam:
        λ.

    Returns
    -------
    float
        ``f(b)``.
    """
    lam = check_lambda(lam)
    chunks, n, d = _as_chunks(x, 65536)
    bias = to_tensor(b, "b", dtype=torch.float64).reshape(-1)
    if bias.shape != (d,):
        raise DictoptInputError(f"b: expected shape ({d},), got {tuple(bias.shape)}")
    return _value(local_sums(chunks, n, d), bias, lam)
