"""Exact codes for a fixed dictionary: the batched nonnegative lasso (THEORY §2, C1).

For every point ``x_n`` (rows of ``x_ND``), atoms as rows of ``atoms_KD``, ``y_n = x_n - b``::

    a_n = argmin_{a ≥ 0}  ½ ‖y_n − Σ_k a_k d_k‖² + λ Σ_k a_k

Algorithm (all points at once, in torch, on the atoms' device):

1. **Active set** (Lawson–Hanson, adapted to the lasso's linear term). Per point keep a support
   ``P``; solve the unconstrained problem on ``P`` (``G_PP z = c_P − λ`` with ``G = D Dᵀ`` and
   ``c = D y``); if ``z`` has non-positive entries, move from the current point towards ``z``
   until the first coordinate hits zero and drop it; once ``z > 0`` on ``P``, add the atoms with
   the largest KKT violations ``g_k − λ`` (``g_k = d_k · r``): up to ``|P|`` of them, at most
   :data:`MAX_ADD`; if one of several added atoms would get a non-positive code, or the face
   becomes nearly singular, only the worst violator is added, as Lawson–Hanson does. Codes are
   held per point as a padded list of its support, so only the gradient and the choice of
   atoms touch all K atoms, and every step is one batched Cholesky solve. In exact arithmetic
   this terminates at the exact solution; the solution it returns is exact up to rounding.
   From :data:`GROW_MIN_ATOMS` atoms (with the Gram matrix formed) the steps start in
   :func:`dictopt.faceinverse.grow_codes` (a warm start seeds its first supports), the same
   method holding each point's ``G_PP⁻¹`` across steps (block updates for adds and drops)
   instead of gathering and factoring ``G_PP`` at every step; its points are certified below
   like any other, and those it hands back or leaves above the tolerance continue here from
   its codes.
2. **FISTA** (projected, step ``1/‖G‖``, gradient-based restart) for points where the active
   set stalls (linearly dependent supports, e.g. duplicate atoms). Then back to 1.

The stopping rule is the KKT residual of C1, never an iteration count: a point is done when
``max_k violation_kn / λ ≤ tol`` with ``violation = |g − λ|`` where ``a > 0`` and
``max(g − λ, 0)`` where ``a = 0`` (computed from the residual ``r_n`` itself). ``max_iter``
only bounds the work; hitting it logs a warning and reports ``converged=False``.

Computation is in float64 by default (``dtype``); tolerances around 1e-9 need it.

**Memory.** The working set is bounded by a budget (:func:`coder_memory_budget`: an argument,
else the environment variable ``DICTOPT_CODER_MEMORY``, else
:data:`DEFAULT_MEMORY_FRACTION` of the available memory). :func:`plan_coder` turns it into a
:class:`CoderPlan`: the Gram matrix ``G = D Dᵀ`` (``K² × 8`` bytes) is formed only when it
takes at most a quarter of the budget (otherwise ``G_PP`` is formed per point from the atoms
of its support and ``a G`` as ``(a D) Dᵀ``), the face solves of one step run in groups of at
most :data:`FACE_SHARE` of the budget whatever the support sizes, and the batch of points
takes what is left: ``batch × K`` dense tensors (:data:`DENSE_TENSORS` of them at the peak).
Results do not depend on the plan beyond rounding (each point is solved independently).
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

import torch

from dictopt.faceinverse import grow_codes, seed_from_codes
from dictopt.validation import (
    DictoptInputError,
    check_finite,
    check_lambda,
    check_matrix,
    check_positive_int,
    to_tensor,
)

log = logging.getLogger(__name__)

DEFAULT_TOL = 1e-9
"""The default stopping rule of :func:`solve_codes`: ``max violation / λ ≤ DEFAULT_TOL``."""

DEFAULT_BATCH_SIZE = 8192
"""Most points solved together (fewer when the memory budget says so, see :func:`plan_coder`)."""

DEFAULT_MEMORY_FRACTION = 0.0625
"""Default coder budget: this fraction of the available memory (``MemAvailable``). A sixteenth
(about 1 GB on a 24 GB machine) leaves room for the caller's own arrays: a check holds a
chunk's dense codes besides, and must stay within 1.5× of one encode+decode pass (issue #21);
the measured working set is about two thirds of the budget (:data:`DENSE_TENSORS`)."""

MEMORY_ENV = "DICTOPT_CODER_MEMORY"
"""Environment variable with the coder's budget: bytes, or a number with K, M, G (×1024ⁿ)."""

DENSE_TENSORS = 12
"""``batch × K`` float64 tensors alive at the coder's peak (codes, ``q``, their working
copies, the gradient, the KKT residual's temporaries), rounded up; measured by
tests/test_coding.py::test_coder_working_set_stays_within_its_budget."""

FACE_SHARE = 0.25
"""Share of the budget for one group of padded face solves (``G_PP``, its Cholesky factor and
index tensors: about :data:`FACE_TENSORS` ``× S²`` values per point of support size ``S``)."""

FACE_TENSORS = 5
"""``S × S`` tensors per point in one face solve (index, mask, ``G_PP``, padded copy, factor)."""


GROW_MIN_ATOMS = 1024
"""From this many atoms, when the Gram matrix is formed, the
active set starts with :func:`dictopt.faceinverse.grow_codes` (face inverses held across
steps); every point is still certified here, and finished by the from-scratch steps below
if needed."""


class CodeResult(NamedTuple):
    """Codes for a batch and how well they satisfy C1."""

    codes: torch.Tensor
    """``[N, K]`` nonnegative codes."""
    kkt_residual: float
    """``max_{n,k} violation_kn / λ`` (THEORY C1, relative to λ)."""
    n_iter: int
    """Iterations used (active-set steps plus FISTA steps, for the slowest batch)."""
    converged: bool
    """Whether every point reached ``kkt_residual ≤ tol``."""


class CoderPlan(NamedTuple):
    """How :func:`solve_codes` uses its memory budget (see :func:`plan_coder`)."""

    batch_size: int
    """Points solved together."""
    gram: bool
    """Whether the dense Gram matrix ``G = D Dᵀ`` (``K² × 8`` bytes) is formed."""
    face_bytes: int
    """Most bytes one group of padded face solves may use (groups are cut to fit)."""
    budget: int
    """The budget in bytes."""

    def working_set(self, K: int, d: int) -> int:
        """Bytes of the coder's working set under this plan (the model the plan is made from):
        the Gram matrix if formed, :data:`DENSE_TENSORS` ``batch × K`` and three ``batch × d``
        float64 tensors, and one group of face solves."""
        gram = gram_bytes(K, d) if self.gram else 0
        return gram + 8 * self.batch_size * (DENSE_TENSORS * K + 3 * d) + self.face_bytes


def _parse_bytes(text: str, name: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in "KMGT" else ""
    try:
        value = float(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        value = float("nan")
    if not value >= 1:
        raise DictoptInputError(
            f"{name}: expected a memory size such as 2G, 512M or 1000000 (bytes), got {text!r}"
        )
    return int(value)


def available_memory() -> int:
    """Bytes of available memory (``MemAvailable`` of /proc/meminfo; else physical memory;
    else 4 GiB)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def coder_memory_budget(budget: int | str | None = None) -> int:
    """The exact coder's memory budget in bytes.

    Parameters
    ----------
    budget : int, str or None
        Bytes, or a size such as ``"2G"``; ``None``: the environment variable
        :data:`MEMORY_ENV` if set, else :data:`DEFAULT_MEMORY_FRACTION` of
        :func:`available_memory`.

    Returns
    -------
    int
        Bytes (at least 1).
    """
    if budget is None:
        env = os.environ.get(MEMORY_ENV)
        if env:
            return _parse_bytes(env, MEMORY_ENV)
        return max(1, int(DEFAULT_MEMORY_FRACTION * available_memory()))
    if isinstance(budget, str):
        return _parse_bytes(budget, "memory_budget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise DictoptInputError(
            f"memory_budget: expected a positive number of bytes, got {budget!r}"
        )
    return int(budget)


def gram_bytes(K: int, d: int) -> int:
    """Bytes the coder holds when it forms the Gram matrix: ``K × K`` float64, and from
    :data:`GROW_MIN_ATOMS` atoms on the face-inverse path's float32 copies of it and of ``D``
    (:mod:`dictopt.faceinverse` reads them in its first, float32 pass)."""
    extra = 4 * K * K + 4 * K * d if K >= GROW_MIN_ATOMS else 0
    return 8 * K * K + extra


def plan_coder(
    K: int, d: int, budget: int | str | None = None, *, max_batch: int = DEFAULT_BATCH_SIZE
) -> CoderPlan:
    """Choose the batch size and the Gram strategy so the working set fits ``budget``.

    The Gram matrix is formed when it (:func:`gram_bytes`) takes at most a quarter of the
    budget; one group of face solves gets :data:`FACE_SHARE` of it (the groups are cut by
    support size, so this holds whatever the supports); the batch takes the rest,
    ``DENSE_TENSORS × K + 3 d`` float64 values per point, between 1 and ``max_batch`` points.
    Only a single point whose dense vectors alone exceed the budget (``K`` in the tens of
    millions) overruns it.

    Parameters
    ----------
    K, d : int
        Atoms and data width.
    budget : int, str or None
        See :func:`coder_memory_budget`.
    max_batch : int
        Most points per batch.

    Returns
    -------
    CoderPlan
    """
    budget = coder_memory_budget(budget)
    gram = gram_bytes(K, d) <= budget // 4
    face = int(FACE_SHARE * budget)
    left = budget - face - (gram_bytes(K, d) if gram else 0)
    per_point = 8 * (DENSE_TENSORS * K + 3 * d)
    batch = max(1, min(max_batch, left // per_point))
    return CoderPlan(int(batch), gram, face, budget)


class _Gram:
    """``G = D Dᵀ`` as the coder uses it: dense when the plan forms it, else through ``D``."""

    def __init__(self, D: torch.Tensor, plan: CoderPlan) -> None:
        self.D, self.K = D, D.shape[0]
        self.gram = plan.gram
        self._G: torch.Tensor | None = None
        self._G32: torch.Tensor | None = None
        self.face_bytes = plan.face_bytes

    @property
    def G(self) -> torch.Tensor | None:
        """The dense ``D Dᵀ`` when the plan forms it (on first use), else None."""
        if self.gram and self._G is None:
            self._G = self.D @ self.D.T
        return self._G

    def G32(self) -> torch.Tensor:
        """``D Dᵀ`` in float32 (the face-inverse path's first pass reads only this one: its
        float32 product costs about half of the float64 one, ~0.7 s of CPU at K = 4,096,
        d = 768, which that pass then never needs unless points are handed back)."""
        if self._G32 is None:
            if self._G is not None:
                self._G32 = self._G.to(torch.float32)
            else:
                D32 = self.D.to(torch.float32)
                self._G32 = D32 @ D32.T
        return self._G32

    @property
    def device(self) -> torch.device:
        return self.D.device

    @property
    def dtype(self) -> torch.dtype:
        return self.D.dtype

    def times(self, c_NK: torch.Tensor) -> torch.Tensor:
        """``c G``."""
        if self.G is None:
            return (c_NK @ self.D) @ self.D.T
        return c_NK @ self.G

    def largest_eigenvalue(self) -> float:
        """``‖G‖₂``, from the smaller of ``G`` (``K × K``) and ``Dᵀ D`` (``d × d``): both have
        the same nonzero eigenvalues, and at K = 4,096, d = 768 the ``K × K`` one cost ~5 s
        of CPU per call."""
        d = self.D.shape[1]
        small = self.D.T @ self.D if not self.gram or d < self.K else self.G
        return float(torch.linalg.eigvalsh(small)[-1])

    def padded(self, idx: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``G_PP`` per point, identity on padding slots."""
        S = idx.shape[1]
        eye = torch.eye(S, dtype=self.D.dtype, device=self.D.device)
        pair = valid[:, :, None] & valid[:, None, :]
        if self.G is None:
            Dp = self.D[idx]
            return torch.where(pair, Dp @ Dp.transpose(1, 2), eye)
        return torch.where(pair, self.G.reshape(-1)[idx[:, :, None] * self.K + idx[:, None, :]],
                           eye)

    def grow_rows(self) -> int:
        """Points per group of :func:`dictopt.faceinverse.grow_codes`: their ``S × S``
        inverses (and about three temporaries of that size) in the face share of the budget,
        for supports of up to half of ``min(K, d)`` atoms (the group widens past that), and
        at most 64 (at K = 4,096, d = 768: 32 ms per point with groups of 32–64, 41 with
        128, 37 with 16)."""
        S = max(32, min(self.K, self.D.shape[1]) // 2)
        return int(min(64, max(16, self.face_bytes // (4 * 8 * S * S))))

    def face_rows(self, S: int) -> int:
        """Most points whose padded face solves (support size ``S``) fit one group."""
        per_point = 8 * S * (FACE_TENSORS * S + (0 if self.gram else self.D.shape[1]))
        return max(1, self.face_bytes // max(per_point, 1))


# --------------------------------------------------------------------------------------------
# Validation and the KKT residual.
# --------------------------------------------------------------------------------------------


def _check_atoms(atoms_KD: Any, dtype: torch.dtype) -> torch.Tensor:
    D = check_matrix(to_tensor(atoms_KD, "atoms", dtype=dtype), "atoms", width_name="d")
    check_finite(D, "atoms")
    zero = (D.norm(dim=1) == 0).nonzero()
    if zero.numel():
        raise DictoptInputError(f"atoms: atom {int(zero[0])} is zero; atoms must be nonzero")
    return D


def _prepare(
    atoms_KD: Any, x_ND: Any, lam: Any, bias: Any | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Validated ``(atoms, y = x − b, λ)`` on the atoms' device."""
    D = _check_atoms(atoms_KD, dtype)
    x = to_tensor(x_ND, "activations", dtype=dtype, device=D.device)
    check_matrix(x, "activations", width=D.shape[1])
    check_finite(x, "activations")
    lam = check_lambda(lam)
    if bias is not None:
        b = to_tensor(bias, "bias", dtype=dtype, device=D.device)
        if b.shape != (D.shape[1],):
            raise DictoptInputError(
                f"bias: expected shape ({D.shape[1]},), got {tuple(b.shape)}"
            )
        check_finite(b.reshape(1, -1), "bias")
        x = x - b
    return D, x, lam


def _check_init(init: Any, D: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Starting codes ``[N, K]``, finite, clipped at 0 (on the atoms' device and dtype)."""
    a = to_tensor(init, "init", dtype=D.dtype, device=D.device)
    if a.shape != (y.shape[0], D.shape[0]):
        raise DictoptInputError(
            f"init: expected shape ({y.shape[0]}, {D.shape[0]}), got {tuple(a.shape)}"
        )
    check_finite(a, "init")
    return a.clamp(min=0)


def _violations(g_NK: torch.Tensor, a_NK: torch.Tensor, lam: float) -> torch.Tensor:
    """C1 violations from correlations ``g = d_k · r_n`` (absolute)."""
    return torch.where(a_NK > 0, (g_NK - lam).abs(), (g_NK - lam).clamp(min=0))


def kkt_violations(
    atoms_KD: Any, x_ND: Any, codes_NK: Any, lam: float, bias: Any | None = None
) -> torch.Tensor:
    """Per-entry violation of the nonnegative-lasso KKT conditions (THEORY C1), absolute.

    With ``r_n = x_n − b − Σ_k a_kn d_k`` and ``g_kn = d_k · r_n``: ``|g_kn − λ|`` where
    ``a_kn > 0`` and ``max(g_kn − λ, 0)`` where ``a_kn = 0``.

    Parameters
    ----------
    atoms_KD : array ``[K, d]`` (rows are atoms; any nonzero norms)
    x_ND : array ``[N, d]``
    codes_NK : array ``[N, K]``, nonnegative
    lam : λ > 0
    bias : array ``[d]`` or None

    Returns
    -------
    torch.Tensor ``[N, K]`` (float64).
    """
    D, y, lam = _prepare(atoms_KD, x_ND, lam, bias, torch.float64)
    a = to_tensor(codes_NK, "codes", dtype=torch.float64, device=D.device)
    if a.shape != (y.shape[0], D.shape[0]):
        raise DictoptInputError(
            f"codes: expected shape ({y.shape[0]}, {D.shape[0]}), got {tuple(a.shape)}"
        )
    check_finite(a, "codes")
    if a.numel() and float(a.min()) < 0:
        raise DictoptInputError(f"codes: must be nonnegative, found {float(a.min()):.3g}")
    return _violations((y - a @ D) @ D.T, a, lam)


# --------------------------------------------------------------------------------------------
# The two inner algorithms (all tensors are for the working set of points).
# --------------------------------------------------------------------------------------------


def _point_kkt(D: torch.Tensor, y: torch.Tensor, a: torch.Tensor, lam: float) -> torch.Tensor:
    """Relative KKT residual per point (from the residual, as reported)."""
    return _violations((y - a @ D) @ D.T, a, lam).amax(dim=1) / lam


# --------------------------------------------------------------------------------------------
# The active-set method keeps codes in padded-support form: only the gradient and the choice
# of the atoms to add touch all K atoms; everything else works on the supports.
# --------------------------------------------------------------------------------------------

MAX_ADD = 3
"""Most atoms one active-set step adds to a point (up to its current support size; a failed
multiple add falls back to the single worst violator). Of 1–32, 3 was fastest on 20k points,
K = 256, d = 64 (supports of 16–33 atoms): 2.8× faster than adding one atom per step; larger
adds fail and are redone too often."""


ADD_SCALE_SUPPORT = 32
"""Above this support size a step may add more atoms: :data:`MAX_ADD` per this many atoms of
the support (:func:`_add_limit`). On K = 4,096, d = 768 with optimal supports of ~330 atoms,
3 atoms a step took ~110 steps, each refactoring the face from scratch."""


def _add_limit(count: torch.Tensor) -> torch.Tensor:
    """Most atoms a point with support size ``count`` adds in one step."""
    return MAX_ADD * (count // ADD_SCALE_SUPPORT).clamp(min=1)


class _Supports(NamedTuple):
    """Codes in padded-support form: point ``n`` has atoms ``idx[n, j]`` with values
    ``val[n, j]`` where ``valid[n, j]``; valid slots come first in every row, padding slots
    have index 0 and value 0."""

    idx: torch.Tensor
    val: torch.Tensor
    valid: torch.Tensor

    def take(self, rows: torch.Tensor) -> _Supports:
        return _Supports(self.idx[rows], self.val[rows], self.valid[rows])

    def dense(self, K: int) -> torch.Tensor:
        a = torch.zeros(self.idx.shape[0], K, dtype=self.val.dtype, device=self.val.device)
        return a.scatter_add_(1, self.idx, torch.where(self.valid, self.val, 0.0))

    def compact(self) -> _Supports:
        """Valid slots first again (after some were dropped)."""
        order = torch.argsort((~self.valid).to(torch.int8), dim=1, stable=True)
        return _Supports(*(torch.gather(t, 1, order) for t in self))

    def widen(self, S: int) -> _Supports:
        extra = S - self.idx.shape[1]
        if extra <= 0:
            return self
        return _Supports(*(torch.nn.functional.pad(t, (0, extra)) for t in self))


def _supports_from_dense(a: torch.Tensor) -> _Supports:
    P = a > 0
    S = max(int(P.sum(dim=1).max()) if P.numel() else 0, 1)
    order = torch.argsort((~P).to(torch.int8), dim=1, stable=True)[:, :S]
    valid = torch.gather(P, 1, order)
    return _Supports(
        torch.where(valid, order, 0), torch.where(valid, torch.gather(a, 1, order), 0.0), valid
    )


def _support_objective(
    G: _Gram, q_S: torch.Tensor, sup: _Supports, val: torch.Tensor
) -> torch.Tensor:
    """``½ vᵀ G_PP v − q_Pᵀ v`` per point for values ``val`` on the supports of ``sup``."""
    v = torch.where(sup.valid, val, 0.0)
    M = G.padded(sup.idx, sup.valid)
    return 0.5 * (v[:, None, :] @ M @ v[:, :, None]).reshape(-1) - (q_S * v).sum(dim=1)


WELL_CONDITIONED = 1e-6
"""Smallest Cholesky pivot, relative to the largest, of a face that several atoms may join at
once (below it the face is nearly singular, e.g. two copies of one atom)."""


def _padded_face_solve(
    G: _Gram, q_S: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve ``G_PP z = q_P`` per point, supports padded to a common size.

    Returns ``(z [n, S] zero on padding, ok [n], well [n])``; ``ok`` is False where ``G_PP`` was
    singular and a tiny ridge was added (the step must then be checked against the
    objective); ``well`` is ``ok`` and no pivot below :data:`WELL_CONDITIONED` of the largest.
    """
    M = G.padded(idx, valid)
    L, info = torch.linalg.cholesky_ex(M)
    ok = info == 0
    if not bool(ok.all()):
        # Singular G_PP (more atoms than dimensions, duplicates): a tiny ridge gives a huge
        # step along the null direction, which is a descent ray when the added atom violates
        # C1; the ratio test then stops it where the first code reaches zero.
        bad = torch.where(~ok)[0]
        Mb = M[bad]
        eye = torch.eye(M.shape[1], dtype=M.dtype, device=M.device)
        scale = Mb.diagonal(dim1=1, dim2=2).amax(dim=1)[:, None, None]
        for ridge in (1e-12, 1e-9, 1e-6):
            Lb, info_b = torch.linalg.cholesky_ex(Mb + ridge * scale * eye)
            if not bool(info_b.any()):
                break
        L[bad] = Lb
    pivots = L.diagonal(dim1=1, dim2=2)
    inf = torch.tensor(float("inf"), dtype=L.dtype, device=L.device)
    smallest = torch.where(valid, pivots, inf).amin(dim=1)
    well = ok & (smallest >= WELL_CONDITIONED * torch.where(valid, pivots, 0.0).amax(dim=1))
    rhs = torch.where(valid, q_S, 0.0).unsqueeze(-1)
    return torch.where(valid, torch.cholesky_solve(rhs, L).squeeze(-1), 0.0), ok, well


def _face_solve(
    G: _Gram, q_S: torch.Tensor, sup: _Supports
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_padded_face_solve` on groups of points with similar support sizes (a few
    large supports would otherwise set the padded size for every point), each group cut to
    its own largest support and to at most ``G.face_rows`` points (the memory budget)."""
    count = sup.valid.sum(dim=1)
    z, ok = torch.zeros_like(q_S), torch.ones_like(count, dtype=torch.bool)
    well = ok.clone()
    parts = torch.argsort(count).chunk(4) if q_S.shape[0] >= 512 else [None]
    for part in parts:
        rows = slice(None) if part is None else part
        w = int(count[rows].max())
        if w == 0:
            continue
        step = G.face_rows(w)
        if count[rows].numel() > step:  # the budget cuts the group further
            order = torch.arange(q_S.shape[0], device=q_S.device) if part is None else part
            groups: list[Any] = list(order.split(step))
        else:
            groups = [rows]
        for g in groups:
            z[g, :w], ok[g], well[g] = _padded_face_solve(
                G, q_S[g, :w], sup.idx[g, :w], sup.valid[g, :w]
            )
    return z, ok, well


def _active_set(
    G: _Gram,
    D: torch.Tensor,
    q: torch.Tensor,
    a: torch.Tensor,
    lam: float,
    tol: float,
    max_steps: int,
) -> tuple[torch.Tensor, int]:
    """Lawson–Hanson active-set steps from a feasible ``a``; returns ``(a, steps)``.

    Per point: if the codes are optimal on their face (support ``P``), add the worst violators
    of C1 (up to ``|P|``, at most :data:`MAX_ADD`) or stop; then solve on ``P`` and step
    towards the solution as far as nonnegativity allows (a blocked step drops the blocking
    atom and leaves the point off its face optimum). If several atoms were added and one of
    them would get a non-positive code, or the face is nearly singular, only the worst
    violator is added instead (on an optimal face its code is positive). Each accepted step
    lowers the objective; a point whose step would not (singular support, e.g. duplicate
    atoms) keeps its codes and stops, and FISTA takes over for it.
    """
    n, K = q.shape
    # The violations g − λ = q − aG; through D when that is cheaper (d < K/2).
    grad = (lambda c: (c @ D) @ D.T) if 2 * D.shape[1] < K else G.times
    sup = _supports_from_dense(a)
    opt = ~sup.valid.any(dim=1)  # zero codes are optimal on the empty face
    moving = torch.ones(n, dtype=torch.bool, device=a.device)
    steps = 0
    while steps < max_steps and bool(moving.any()):
        steps += 1
        w = torch.where(moving)[0]
        cw = sup.take(w)
        count = cw.valid.sum(dim=1)
        ow = opt[w]
        cw, grow, n_added = _add_violators(cw, ow, count, q[w], grad, K, lam, tol)
        done = ow & ~grow
        new_val, hit, accept = _face_step(G, cw, q[w], done, grow, count, n_added)
        valid = new_val > 0  # drops blocked atoms and the adds of rejected steps
        cw = _Supports(torch.where(valid, cw.idx, 0), torch.where(valid, new_val, 0.0), valid)
        S = max(sup.idx.shape[1], cw.idx.shape[1])
        sup, cw = sup.widen(S), cw.widen(S).compact()
        sup.idx[w], sup.val[w], sup.valid[w] = cw
        empty = ~valid.any(dim=1)
        opt[w] = (accept & ~hit) | empty
        moving[w] = accept | (empty & ~done)
    return sup.dense(K), steps


def _add_violators(
    cw: _Supports, ow: torch.Tensor, count: torch.Tensor, qw: torch.Tensor, grad: Any, K: int,
    lam: float, tol: float,
) -> tuple[_Supports, torch.Tensor, torch.Tensor]:
    """Points optimal on their face (``ow``) add their worst C1 violators (up to ``|P|``, at
    most :data:`MAX_ADD`); returns the widened supports, which points grew and by how many."""
    grow = torch.zeros_like(ow)
    n_added = torch.zeros_like(count)
    o = torch.where(ow)[0]
    if o.numel():
        m = torch.minimum(count[o].clamp(min=1), _add_limit(count[o]))
        cw = cw.widen(int((count[o] + m).max()))
        g = qw[o] - grad(cw.take(o).dense(K))
        inf = torch.tensor(float("inf"), dtype=g.dtype, device=g.device)
        mask = torch.where(cw.valid[o], -inf, inf)
        g = g.scatter_reduce(1, cw.idx[o], mask, reduce="amin")  # support: −inf
        top_v, top_j = g.topk(min(int(m.max()), K), dim=1)
        rank = torch.arange(top_v.shape[1], device=qw.device)
        take = (top_v > tol * lam) & (rank < m[:, None])
        grow[o] = take[:, 0]
        n_added[o] = take.sum(dim=1)
        r, j = take.nonzero(as_tuple=True)
        slot = count[o][r] + j
        cw.idx[o[r], slot] = top_j[r, j]
        cw.valid[o[r], slot] = True
    return cw, grow, n_added


def _face_step(
    G: _Gram, cw: _Supports, qw: torch.Tensor, done: torch.Tensor, grow: torch.Tensor,
    count: torch.Tensor, n_added: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Solve on each moving point's face and step towards the solution as far as
    nonnegativity allows; returns the new values, whether a step was blocked and whether it
    was accepted."""
    new_val = cw.val.clone()
    hit = torch.zeros_like(done)
    accept = torch.zeros_like(done)
    s = torch.where(~done & cw.valid.any(dim=1))[0]
    if s.numel():
        cs = cw.take(s)
        q_S = torch.gather(qw[s], 1, cs.idx)
        z, ok, well = _face_solve(G, q_S, cs)
        slots = torch.arange(cs.idx.shape[1], device=G.device)
        added = cs.valid & (slots >= count[s, None])
        # Several atoms added and one would get a non-positive code, or the face became
        # (nearly) singular, e.g. two copies of one atom: add the worst violator alone, as
        # Lawson–Hanson does.
        failed = (added & (z <= 0)).any(dim=1) | ~well
        # A large add (more than MAX_ADD atoms, supports above 2 × ADD_SCALE_SUPPORT) first
        # keeps the added atoms whose code came out positive (and the worst violator) and
        # solves again; what still fails adds the worst violator alone.
        part = torch.where(failed & well & (n_added[s] > MAX_ADD))[0]
        if part.numel():
            first = slots == count[s[part], None]
            cs.valid[part] &= ~added[part] | (z[part] > 0) | first
            cw.valid[s[part]] = cs.valid[part]
            z[part], ok[part], well[part] = _face_solve(G, q_S[part], cs.take(part))
            added = cs.valid & (slots >= count[s, None])
            failed[part] = (added[part] & (z[part] <= 0)).any(dim=1) | ~well[part]
            n_added[s[part]] = added[part].sum(dim=1)
        redo = torch.where(failed & (n_added[s] > 1))[0]
        if redo.numel():  # keep only the first (worst-violating) added atom
            cs.valid[redo] &= ~added[redo] | (slots == count[s[redo], None])
            cw.valid[s[redo]] = cs.valid[redo]
            z[redo], ok[redo], _ = _face_solve(G, q_S[redo], cs.take(redo))
        val = cs.val
        # Ratio test: the largest t ≤ 1 keeping a + t (z − a) ≥ 0 on P.
        ratio = torch.where(
            cs.valid & (z <= 0), val / (val - z).clamp(min=torch.finfo(G.dtype).tiny), 2.0
        )
        t_s, first = ratio.min(dim=1)
        t_s = t_s.clamp(max=1.0)
        n_s = torch.where(cs.valid, val + t_s[:, None] * (z - val), 0.0).clamp(min=0)
        h_s = t_s < 1
        n_s[h_s, first[h_s]] = 0.0  # the blocking atom leaves the support exactly
        # An exact face solve (ok) lowers the objective by convexity; check the others.
        acc = ~(grow[s] & (t_s == 0))  # blocked at once by an atom just added: stalled
        if not bool(ok.all()):
            b = torch.where(~ok)[0]
            cb = cs.take(b)
            f_old = _support_objective(G, q_S[b], cb, val[b])
            f_new = _support_objective(G, q_S[b], cb, n_s[b])
            acc[b] &= (f_new <= f_old + 1e-13 * (1 + f_old.abs())) & h_s[b]
        new_val[s] = torch.where(acc[:, None], n_s, val)
        hit[s], accept[s] = h_s, acc
    return new_val, hit, accept


def _fista(
    G: _Gram, q: torch.Tensor, a: torch.Tensor, L: float, iters: int
) -> torch.Tensor:
    """Projected FISTA with gradient-based restart (O'Donoghue & Candès), per point."""
    x = a.clone()
    z = a.clone()
    t = torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)
    for _ in range(iters):
        x_new = (z - (G.times(z) - q) / L).clamp(min=0)
        restart = ((z - x_new) * (x_new - x)).sum(dim=1, keepdim=True) > 0
        t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        beta = torch.where(restart, 0.0, (t - 1) / t_new)
        t = torch.where(restart, 1.0, t_new)
        z = x_new + beta * (x_new - x)
        x = x_new
    return x


# --------------------------------------------------------------------------------------------
# Public solver.
# --------------------------------------------------------------------------------------------


def _solve_batch(
    D: torch.Tensor,
    G: _Gram,
    L: list[float],
    y: torch.Tensor,
    lam: float,
    tol: float,
    max_iter: int,
    init: torch.Tensor | None,
) -> CodeResult:
    a = torch.zeros(y.shape[0], D.shape[0], dtype=D.dtype, device=D.device)
    if init is not None:
        a = init.clone()
    q = y @ D.T - lam
    n_iter = 0
    if G.gram and D.shape[0] >= GROW_MIN_ATOMS:
        # a warm start seeds the first supports (its values are not needed: the first step
        # solves on each seed's face)
        seed = None if init is None else seed_from_codes(init, q, lam, tol)
        G32 = G.G32() if D.dtype == torch.float64 else None
        grown = grow_codes(lambda: G.G, D, q, lam, tol, max_iter, G.grow_rows(), seed, G32)
        a, n_iter = grown.codes, grown.steps
    kkt = _point_kkt(D, y, a, lam)
    work = torch.where(kkt > tol)[0]
    fista_iters = 20
    while work.numel() and n_iter < max_iter:
        aw, qw = a[work], q[work]
        aw, steps = _active_set(G, D, qw, aw, lam, tol, max_steps=max_iter - n_iter)
        n_iter += steps
        kw = _point_kkt(D, y[work], aw, lam)
        left = kw > tol
        if bool(left.any()) and n_iter < max_iter:
            iters = min(fista_iters, max_iter - n_iter)
            if not L:  # ‖G‖₂ only when FISTA is needed (points where the active set stalls)
                L.append(G.largest_eigenvalue())
            aw[left] = _fista(G, qw[left], aw[left], L[0], iters)
            n_iter += iters
            fista_iters = min(2 * fista_iters, 1000)
            kw[left] = _point_kkt(D, y[work[left]], aw[left], lam)
        a[work] = aw
        kkt[work] = kw
        work = work[kw > tol]
    res = float(kkt.max())
    return CodeResult(a, res, n_iter, res <= tol)


def solve_codes(
    atoms_KD: Any,
    x_ND: Any,
    lam: float,
    *,
    bias: Any | None = None,
    tol: float = DEFAULT_TOL,
    max_iter: int = 10_000,
    init: Any | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dtype: torch.dtype = torch.float64,
    memory_budget: int | str | None = None,
) -> CodeResult:
    """Optimal nonnegative codes for a fixed dictionary, certified by C1's KKT residual.

    Solves ``min_{a ≥ 0} ½‖x_n − b − Σ_k a_k d_k‖² + λ Σ_k a_k`` for every row ``x_n``.

    Parameters
    ----------
    atoms_KD : array ``[K, d]``
        Atoms as rows (nonzero; unit norm is not required).
    x_ND : array ``[N, d]``
        Data; NaN/inf is an error naming the first bad row.
    lam : float
        λ > 0.
    bias : array ``[d]``, optional
        Subtracted from the data first.
    tol : float
        Stop when ``max violation / λ ≤ tol`` for every point (THEORY C1).
    max_iter : int
        Bound on active-set plus FISTA steps per batch (not the stopping rule).
    init : array ``[N, K]``, optional
        Nonnegative warm start (e.g. the previous codes in alternating minimisation, or an
        SAE's own codes). From :data:`GROW_MIN_ATOMS` atoms with the Gram matrix formed only
        its supports are used (they seed :func:`dictopt.faceinverse.grow_codes`); below, the
        active set starts from its values. The result is the same to rounding either way.
    batch_size : int
        Most points solved together (fewer when ``memory_budget`` requires it).
    dtype : torch.dtype
        Computation and output dtype (float64 by default).
    memory_budget : int, str or None
        Bound on the working set, beyond the inputs and the returned codes (bytes or e.g.
        ``"2G"``; default: :func:`coder_memory_budget`). Sets the batch size and whether the
        ``K × K`` Gram matrix is formed (:func:`plan_coder`).

    Returns
    -------
    CodeResult
        ``codes [N, K]`` on the atoms' device, ``kkt_residual`` (relative to λ), ``n_iter``,
        ``converged``. Not converging logs a warning.
    """
    D, y, lam = _prepare(atoms_KD, x_ND, lam, bias, dtype)
    if not tol > 0:
        raise DictoptInputError(f"tol: must be > 0, got {tol}")
    max_iter = check_positive_int(max_iter, "max_iter")
    batch_size = check_positive_int(batch_size, "batch_size")
    a0 = None if init is None else _check_init(init, D, y)
    plan = plan_coder(D.shape[0], D.shape[1], memory_budget, max_batch=batch_size)
    batch_size = plan.batch_size
    G = _Gram(D, plan)
    L: list[float] = []  # ‖G‖₂, computed on first use
    codes = torch.empty(y.shape[0], D.shape[0], dtype=D.dtype, device=D.device)
    res, n_iter = 0.0, 0
    for lo in range(0, y.shape[0], batch_size):
        hi = lo + batch_size
        r = _solve_batch(
            D, G, L, y[lo:hi], lam, tol, max_iter, None if a0 is None else a0[lo:hi]
        )
        codes[lo:hi] = r.codes
        res, n_iter = max(res, r.kkt_residual), max(n_iter, r.n_iter)
    converged = res <= tol
    if not converged:
        log.warning(
            "solve_codes: not converged after %d iterations (KKT residual %.3g > tol %.3g)",
            n_iter, res, tol,
        )
    return CodeResult(codes, res, n_iter, converged)


def improve_codes(
    atoms_KD: Any,
    x_ND: Any,
    lam: float,
    *,
    init: Any | None = None,
    steps: int = 4,
    bias: Any | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    memory_budget: int | str | None = None,
) -> torch.Tensor:
    """A few active-set steps from ``init`` (zero codes if None): inexact, cheap codes.

    Every accepted step lowers each point's lasso objective, so codes returned are never worse
    than ``init`` (THEORY §2's objective, per point); unlike :func:`solve_codes` nothing is
    certified, and no KKT residual is computed. For the inexact warm phase of alternating
    minimisation (:func:`dictopt.solvers.classical.fit_classical`). ``batch_size`` and
    ``memory_budget`` as for :func:`solve_codes`.

    Returns
    -------
    torch.Tensor ``[N, K]`` nonnegative codes (float64, on the atoms' device).
    """
    D, y, lam = _prepare(atoms_KD, x_ND, lam, bias, torch.float64)
    steps = check_positive_int(steps, "steps")
    a = torch.zeros(y.shape[0], D.shape[0], dtype=D.dtype, device=D.device)
    if init is not None:
        a = _check_init(init, D, y)
    plan = plan_coder(D.shape[0], D.shape[1], memory_budget, max_batch=batch_size)
    batch_size = plan.batch_size
    G = _Gram(D, plan)
    for lo in range(0, y.shape[0], batch_size):
        q = y[lo : lo + batch_size] @ D.T - lam
        a[lo : lo + batch_size] = _active_set(G, D, q, a[lo : lo + batch_size], lam, 1e-10,
                                              steps)[0]
    return a

