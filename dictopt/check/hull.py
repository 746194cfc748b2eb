"""The joint hull condition C5′ (THEORY §2): all atoms rotate toward one atom ``k`` at once.

A local minimum with a bias needs ``v_k = ((1 − c_jk) ā_j)_{j≠k}`` in the convex hull of the
code vectors ``(a_jn)_{j≠k}`` of the points where ``k`` is inactive. The ℓ1 distance LP::

    min Σ (s⁺ + s⁻)   s.t.  P w + s⁺ − s⁻ = v,  1ᵀ w = 1,  w, s± ≥ 0

has the dual ``max q·v − κ  s.t.  q·a_n ≤ κ (n inactive for k), |q| ≤ 1``: the equality
marginals are ``(q, −κ)``. A positive distance gives a separating ``q``, the direction of
the :class:`~dictopt.check.moves.Toward` move with first-order decrease ``λ t (q·v − κ)``;
``κ`` is recomputed exactly as ``max_n q·a_n`` over the inactive points.

*Column generation* (:func:`hull_distance_cg`). Each point is a column ``w_n`` of the primal,
so the LP is solved on a small working set of points (the largest codes of every coordinate
and the sparsest point), and then

- if the distance on the working set is within the tolerance, ``k`` passes: the working set's
  weights are a feasible point of the full LP, so the full distance is no larger (a primal
  certificate of membership);
- otherwise its dual ``(q, κ)`` is checked on **every** inactive point (one product
  ``A q``); the points with ``q·a_n > κ`` are added and the LP solved again. When none is
  left, ``(q, κ)`` is dual feasible for the full LP and its value equals the working set's
  distance, an upper bound: by weak duality both equal the full distance (exact).

So every atom tested is tested on all ``K − 1`` coordinates and all of its inactive points, at
any K. Each round adds at least one point, so the loop ends; after ``max_rounds`` the full LP
is solved directly. Most atoms pass on the first working set. For an atom that fails, an LP's
optimal dual need not be unique: by default (``duals="working_set"``) the report keeps the
column generation's own dual, which is optimal for the LP on every point (it was verified
dual feasible there), so the atoms that fail, their distances and their gaps ``q·v − κ`` are
those of the LP on every point; only the direction ``q`` (and with it the step and the
measured decrease of the move) may be another of the optimal ones. ``duals="reference"``
solves the LP on every distinct inactive point again for its dual vertex, the direction this
module reported before issue 17 (on a K = 64 ReLU SAE with 6 failing atoms that second LP
was most of the hull's time).

*Which atoms are tested.* Up to ``full_k`` atoms every atom is tested. Above that, two bounds
rank them. Every atom has the upper bound ``dist ≤ ‖v_k − p‖₁`` for the sparsest inactive
point ``p`` (any point is a feasible ``w``): atoms whose bound is within the tolerance pass
without an LP (exact). An atom ``k`` with a C5 violation ``(i, k)`` has the lower bound
``gap ≥ |θ_ik − H_ik|`` (``q = ±e_i`` is dual feasible), so its hull certainly fails; these
are tested first (largest lower bound first, the LP gives the joint direction), then the
others by the largest upper bound, ``max_atoms`` in all. The report lists the tested atoms
(``hull.tested``), how many passed by the bound and how many were left untested.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import highspy
import numpy as np
import torch
from scipy.optimize import linprog

from dictopt.check.blocks import DENSE_ELEMENTS
from dictopt.check.hullbatch import TOP_PER_COORDINATE, certify_members
from dictopt.check.moves import Toward, best_toward_step
from dictopt.check.report import Violation
from dictopt.check.tolerances import Tolerances

F64 = torch.float64

try:  # highspy.Highs() prints a banner to stdout when first built (its callback set-up);
    # the core class it extends solves the same LPs and prints nothing
    from highspy._core import _Highs
except ImportError:  # pragma: no cover - another highspy layout
    _Highs = highspy.Highs

#: Points per coordinate in the first working set (the largest codes of each atom).
START_PER_COORDINATE = 8
#: Column-generation rounds before falling back to the LP on every point.
MAX_ROUNDS = 50
#: Up to this many atoms the batched membership weights are tried before any LP (their
#: Newton systems are ``(K + 1) × (K + 1)`` per atom). Measured (CPU, one thread, ReLU SAEs
#: of ``speed._sae``'s construction, N = 30,000): at K = 128 the batch took 0.21 s and passed
#: 49 of 59 atoms (hull 3.3 s instead of 6.6 s, same report); at K = 256 0.97 s, passing 13 of
#: 37 atoms whose column generation costs ~0.35 s each (~4.5 s). Not measured above 256.
BATCH_MAX_K = 256


class HullDistance(NamedTuple):
    """The ℓ1 distance of ``v`` to a hull, the dual direction and how it was found."""

    distance: float
    """The distance (exact; an upper bound within the tolerance when ``passed``)."""
    q: np.ndarray
    """Dual direction ``[J]`` (``|q| ≤ 1``)."""
    kappa: float
    """Dual offset (``max_n q·a_n`` on the working set)."""
    passed: bool
    """Whether the distance is within the tolerance (then ``q`` is not needed)."""
    rounds: int
    """LP solves."""
    rows: torch.Tensor
    """Row indices of the last LP's points."""
    weights: np.ndarray
    """Their convex weights: ``Σ_n w_n a_n`` is within ``distance`` of ``v`` (membership)."""


class HullBasis:
    """The points that carried each passing atom's membership in an earlier check of a nearby
    dictionary (``repair`` checks one dictionary per round, each a small move from the last).

    An atom that passed keeps the points its convex weights used (the support of the LP's
    primal solution, at most ``|J| + 1`` points: a basis). In the next check those points'
    weights are re-fitted to the new ``v`` and codes by least squares, clipped at 0 and
    normalised to sum 1: a feasible point of the atom's LP, so ``‖v − Σ w_n a_n‖₁`` is an
    upper bound on its distance. When that bound is within the threshold the atom passes
    without an LP (the same verdict the LP gives: its optimum is no larger); otherwise the
    column generation runs as without the basis. Atoms that failed keep nothing, so their
    directions (and repair's moves) are the column generation's own.
    """

    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}
        self.K: int | None = None
        self.reused = 0
        """Atoms passed by a held basis (no LP), over every check that used this object."""

    def passes(
        self, k: int, v: np.ndarray, A: torch.Tensor, J: torch.Tensor, allowed: torch.Tensor,
        threshold: float,
    ) -> bool:
        """Whether atom ``k``'s held points still put ``v`` within ``threshold`` of the hull
        of the allowed rows of ``A[:, J]`` (an upper bound on the distance: exact pass)."""
        if self.K != A.shape[1]:
            self.rows, self.K = {}, A.shape[1]
        rows = self.rows.get(k)
        if rows is None or not bool(allowed[rows].all()):
            return False
        P = A[rows][:, J]  # [m, |J|]
        target = torch.from_numpy(v)
        M = torch.cat([P.t(), torch.ones(1, rows.numel(), dtype=F64)])  # [|J| + 1, m]
        rhs = torch.cat([target, torch.ones(1, dtype=F64)]).unsqueeze(1)
        w = torch.linalg.lstsq(M, rhs).solution.squeeze(1).clamp(min=0)
        total = float(w.sum())
        if not total > 0:
            return False
        w = w / total
        if float((target - w @ P).abs().sum()) > threshold:
            return False
        self.reused += 1
        return True

    def keep(self, k: int, res: HullDistance) -> None:
        """Hold the points with positive weight of a passing atom (forget a failing one)."""
        if not res.passed:
            self.rows.pop(k, None)
            return
        self.rows[k] = res.rows[torch.from_numpy(np.asarray(res.weights) > 0)]


class HullResult(NamedTuple):
    """Joint hull violations and what was tested (for the report)."""

    violations: list[Violation]
    tested: list[int]
    """Atoms whose hull was tested by the LP."""
    passed_by_bound: list[int]
    """Atoms that passed by the upper bound alone (no LP; exact)."""
    untested: int
    """Atoms neither tested nor passed by the bound (only above ``full_k``)."""
    lp_solves: int
    certified: list[int] = []
    """Atoms passed by batched convex weights (:mod:`dictopt.check.hullbatch`; no LP; exact)."""
    bounds: dict[int, tuple[float | None, float]] = {}
    """Above ``full_k``, why each tested atom was chosen: its C5 lower bound on the gap
    (``None`` without a C5 violation) and its upper bound ``‖v_k − p‖₁`` on the distance;
    atoms are ranked by the first, then the second. Empty when every atom was tested."""


def hull_distance(v: np.ndarray, P: np.ndarray) -> tuple[float, np.ndarray, float]:
    """ℓ1 distance of ``v [J]`` to ``conv(rows of P [n, J])`` and the dual ``(q, κ)``, by
    scipy's ``linprog`` on every point (the reference the column generation is tested
    against).

    Parameters
    ----------
    v:
        The target ``[J]``.
    P:
        Points as rows ``[n, J]`` (``n ≥ 1``).

    Returns
    -------
    tuple
        ``(distance, q [J], κ)``.
    """
    n, J = P.shape
    c = np.concatenate([np.zeros(n), np.ones(2 * J)])
    A = np.zeros((J + 1, n + 2 * J))
    A[:J, :n] = P.T
    A[:J, n : n + J] = np.eye(J)
    A[:J, n + J :] = -np.eye(J)
    A[J, :n] = 1.0
    b = np.concatenate([v, [1.0]])
    res = linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"hull LP failed: {res.message}")
    y = res.eqlin.marginals
    return float(res.fun), y[:J], float(-y[J])


def _hull_lp(v: np.ndarray, P: np.ndarray) -> tuple[float, np.ndarray, float, np.ndarray]:
    """The LP of :func:`hull_distance` through HiGHS directly (scipy's wrapper costs twice
    the solve on these small LPs), without presolve (it costs more than it saves here).
    Returns ``(distance, q, κ, w)`` with the primal weights ``w [n]``."""
    n, J = P.shape
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n + 2 * J, J + 1
    lp.col_cost_ = np.concatenate([np.zeros(n), np.ones(2 * J)])
    lp.col_lower_ = np.zeros(n + 2 * J)
    lp.col_upper_ = np.full(n + 2 * J, highspy.kHighsInf)
    b = np.concatenate([v, [1.0]])
    lp.row_lower_, lp.row_upper_ = b, b
    # column-wise: each point's nonzero coordinates and the 1 of Σw = 1, then s⁺, s⁻
    cols = np.vstack([P.T, np.ones((1, n))])  # [J + 1, n]
    nz = (cols != 0).T
    row_of = np.nonzero(nz)[1]
    start = np.concatenate([[0], np.cumsum(nz.sum(1))])  # n + 1 entries
    start = np.concatenate([start, start[-1] + 1 + np.arange(2 * J)])  # n + 2J + 1
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = start.astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate([row_of, np.arange(J), np.arange(J)]).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate([cols.T[nz], np.ones(J), -np.ones(J)])
    h = _Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("presolve", "off")
    h.passModel(lp)
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"hull LP failed: {h.modelStatusToString(h.getModelStatus())}")
    sol = h.getSolution()
    y = np.asarray(sol.row_dual)
    return float(h.getInfo().objective_function_value), y[:J], float(-y[J]), np.asarray(
        sol.col_value
    )[:n]


def hull_distance_cg(
    v: np.ndarray,
    A_NK: torch.Tensor,
    J: torch.Tensor,
    allowed_N: torch.Tensor,
    start: torch.Tensor,
    threshold: float,
    *,
    max_rounds: int = MAX_ROUNDS,
) -> HullDistance:
    """The ℓ1 distance of ``v`` to ``conv{A[n, J] : allowed_N[n]}`` by column generation
    (module docstring): exact, touching every row only through one product ``A q`` a round.

    Parameters
    ----------
    v:
        The target ``[|J|]``.
    A_NK:
        Every point's codes ``[N, K]`` (float64).
    J:
        The coordinates (columns of ``A_NK``).
    allowed_N:
        Which rows are points of the hull (bool ``[N]``, at least one).
    start:
        Row indices of the first working set (allowed rows, non-empty).
    threshold:
        Stop as soon as the working set's distance is within this (``passed=True``).
    max_rounds:
        LP solves before the LP on every allowed row is solved instead.

    Returns
    -------
    HullDistance
    """
    work = torch.unique(start)
    slack = 1e-9 * (1.0 + float(np.abs(v).sum()))
    q_K = torch.zeros(A_NK.shape[1], dtype=F64)
    blocked = ~allowed_N
    for rounds in range(1, max_rounds + 1):
        dist, q, kappa, w = _hull_lp(v, A_NK[work][:, J].numpy())
        if dist <= threshold:
            return HullDistance(dist, q, kappa, True, rounds, work, w)
        q_K[J] = torch.from_numpy(q)
        excess = A_NK @ q_K - kappa
        excess[blocked] = -np.inf
        excess[work] = -np.inf
        # no allowed row above κ (to rounding): (q, κ) is dual feasible, so the working
        # set's distance (an upper bound) equals the dual value (a lower bound)
        if float(excess.max()) <= slack:
            return HullDistance(dist, q, kappa, False, rounds, work, w)
        cand = torch.topk(excess, min(max(J.numel(), 16), excess.numel())).indices
        work = torch.cat([work, cand[excess[cand] > slack]])
    rows = allowed_N.nonzero().flatten()
    dist, q, kappa, w = _hull_lp(v, A_NK[rows][:, J].numpy())
    return HullDistance(dist, q, kappa, dist <= threshold, max_rounds + 1, rows, w)


def _start_rows(
    top_idx: torch.Tensor, inactive: torch.Tensor, J: torch.Tensor, sparsest: torch.Tensor,
    per_coordinate: int,
) -> torch.Tensor:
    """Global row indices of the first working set of atom ``k``: for each coordinate of
    ``J`` its largest codes among ``k``'s inactive points, plus ``k``'s sparsest inactive
    point."""
    cand = top_idx[:, J]
    ok = inactive[cand]
    first = ok & (ok.cumsum(0) <= per_coordinate)
    return torch.cat([cand[first], sparsest])


def joint_hull(
    codes_NK: torch.Tensor,
    atoms_KD: torch.Tensor,
    mean_a: torch.Tensor,
    lam: float,
    tau: float,
    tol: Tolerances,
    *,
    full_k: int = 64,
    max_atoms: int = 64,
    atoms: list[int] | None = None,
    lower: dict[int, float] | None = None,
    duals: Literal["reference", "working_set"] = "working_set",
    basis: HullBasis | None = None,
    batch: bool = True,
    top: torch.Tensor | None = None,
) -> HullResult:
    """Joint hull violations (with certificates) for the atoms ``atoms`` (default: every
    atom up to ``full_k`` atoms, else chosen by the bound of the module docstring).

    Parameters
    ----------
    codes_NK:
        Every point's codes ``[N, K]``.
    atoms_KD:
        Unit atoms ``[K, d]``.
    mean_a:
        ``ā`` ``[K]``.
    lam, tau, tol:
        λ, the inactivity threshold and the tolerances.
    full_k:
        Up to this many atoms every atom is tested.
    max_atoms:
        Above ``full_k``, how many atoms the LP tests (those with the largest bound).
    atoms:
        Test exactly these atoms.
    lower:
        Lower bounds on the gap of some atoms (from their C5 violations), ranked first.
    duals:
        Where a violated atom's direction ``q`` comes from: ``"working_set"`` (default: the
        column generation's own dual, optimal for the LP on every point) or ``"reference"``
        (the dual vertex of a second LP on every distinct inactive point, the direction
        reported before issue 17; an LP's optimal dual need not be unique).
    basis:
        Points that carried each passing atom's membership in an earlier check of a nearby
        dictionary (:class:`HullBasis`, updated in place): an atom they still carry passes
        without an LP (exact; the verdicts are the same as without it).
    batch:
        First look for every atom's membership weights at once
        (:func:`~dictopt.check.hullbatch.certify_members`, up to :data:`BATCH_MAX_K` atoms): an
        atom they put within its threshold passes without an LP; the others go to the column
        generation as without it (same verdicts, distances, gaps and directions).
    top:
        Row indices ``[m, K]`` of each coordinate's largest codes, largest first (the check's
        pass-1 buffer), for the batch's rows; used only where ``codes_NK`` holds those codes
        there. Default (or ``m`` < :data:`~dictopt.check.hullbatch.TOP_PER_COORDINATE`):
        ``topk`` of the codes. The column generation's first working sets always come from
        ``topk`` (formed only when an atom reaches it), so its results do not depend on
        ``top``.

    Returns
    -------
    HullResult
    """
    A = codes_NK.to(F64)
    D = atoms_KD.to(F64)
    N, K = A.shape
    active = A > tau
    # the K × K Gram matrix only when it is small; else each tested atom's column on demand
    gram = D @ D.t() if K * K <= DENSE_ELEMENTS else None
    data = _HullData(A, gram, D, mean_a, active)
    sparsest, v_of = data.sparsest, data.v_of
    floor = tol.floor_rel * float(mean_a.max())
    out: list[Violation] = []
    per = min(START_PER_COORDINATE, N)
    top_idx: torch.Tensor | None = None  # [m, K] largest codes per atom, when first needed

    def largest() -> torch.Tensor:
        nonlocal top_idx
        if top_idx is None:  # 10 ms at N = 30,000, K = 64: only when an atom needs it
            top_idx = torch.topk(A, min(N, 4 * per), dim=0).indices
        return top_idx
    chosen, passed_by_bound, untested, bounds = _choose_atoms(
        A, active, mean_a, floor, tol, sparsest, v_of,
        atoms=atoms, full_k=full_k, max_atoms=max_atoms, lower=lower,
    )
    always_on = active.all(0).tolist()  # every row active: C4, not a hull question
    tested = [k for k in chosen if not always_on[k] and K > 1]
    V = threshold = None
    if tested:
        if gram is not None:  # V[i, j] = (1 − c_jk) ā_j for k = tested[i], as v_of forms it
            V = ((1 - gram[:, torch.as_tensor(tested)].t()) * mean_a).numpy()
        else:
            V = torch.stack([(1 - D @ D[k]) * mean_a for k in tested]).numpy()
        keep = np.ones(K, dtype=bool)
        threshold = np.empty(len(tested))
        for i, k in enumerate(tested):
            keep[k] = False
            threshold[i] = _threshold(V[i][keep], mean_a, floor, tol)
            keep[k] = True
    held = []
    if basis is not None:
        for i, k in enumerate(tested):
            J = _others(k, K)
            if basis.passes(k, V[i][J.numpy()], A, J, ~active[:, k], threshold[i]):
                held.append(k)
    certified: list[int] = []
    # the atoms whose C5 lower bound exceeds the threshold certainly fail: straight to the LP
    low = lower or {}
    rest = [i for i, k in enumerate(tested)
            if k not in held and not low.get(k, 0.0) > threshold[i]]
    if batch and rest and K <= BATCH_MAX_K:
        members = certify_members(A, active, [tested[i] for i in rest], V[rest], threshold[rest],
                                  _batch_top(A, top, largest)).passed
        certified = [k for k in tested if k in members]
    lp_solves = 0
    for i, k in enumerate(tested):
        if k in held:
            continue
        if k in certified:
            if basis is not None:
                basis.rows.pop(k, None)
            continue
        inactive = ~active[:, k]
        J = _others(k, K)
        v = V[i][J.numpy()]
        start = _start_rows(largest(), inactive, J, sparsest(k), per)
        res = hull_distance_cg(v, A, J, inactive, start, threshold[i])
        lp_solves += res.rounds
        if basis is not None:
            basis.keep(k, res)
        if res.passed:
            continue
        violation = _certificate(k, J, v, res, A, D, inactive, mean_a, lam, tol, floor, duals)
        if violation is not None:
            out.append(violation)
    return HullResult(out, tested, passed_by_bound, untested, lp_solves, certified,
                      {k: bounds[k] for k in tested if k in bounds})


def _batch_top(A: torch.Tensor, top: torch.Tensor | None,
               largest: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The batch's largest codes per coordinate: ``top`` when it has enough rows, all of
    them rows of ``A`` whose codes come in descending order (pass 1's buffer of the same
    codes), else ``topk`` of ``A``. Either gives valid rows: the batch passes an atom only
    with explicit weights, so which rows it starts from changes its speed, never a verdict."""
    if top is not None and top.shape[0] >= TOP_PER_COORDINATE and top.shape[1] == A.shape[1]:
        top = top[:TOP_PER_COORDINATE]
        if bool((top >= 0).all()) and bool((top < A.shape[0]).all()):
            vals = A.gather(0, top)
            if bool((vals[:-1] >= vals[1:]).all()):
                return top
    return largest()


class _HullData:
    """What every atom's hull test reads: codes ``[N, K]`` (float64), the Gram matrix
    ``[K, K]`` when ``K² ≤`` :data:`~dictopt.check.blocks.DENSE_ELEMENTS` (else ``None``: the
    cosines of atom ``k`` are formed when ``k`` is tested, so no ``K × K`` array is held at
    large ``K``), the atoms ``[K, d]`` (float64), ``ā`` ``[K]`` and the activity mask
    ``[N, K]``; per row ``[N]`` the number of active atoms and the sum of codes are formed
    when an atom first needs its sparsest point."""

    def __init__(self, A: torch.Tensor, gram: torch.Tensor | None, D: torch.Tensor,
                 mean_a: torch.Tensor, active: torch.Tensor) -> None:
        self.A, self.gram, self.D, self.mean_a, self.active = A, gram, D, mean_a, active
        self._score: torch.Tensor | None = None

    def sparsest(self, k: int) -> torch.Tensor:
        """``[1]`` the row with the fewest active atoms, then the smallest codes, among
        ``k``'s inactive rows."""
        if self._score is None:
            load, rowsum = self.active.sum(1), self.A.sum(1)
            self._score = load.to(F64) * (1 + rowsum.max()) + rowsum
        score = torch.where(self.active[:, k], torch.inf, self._score)
        return score.argmin().reshape(1)

    def v_of(self, k: int, J: torch.Tensor) -> np.ndarray:
        """``v_k = (1 − c_jk) ā_j`` over the atoms ``J``."""
        c_k = self.gram[J, k] if self.gram is not None else (self.D @ self.D[k])[J]
        return ((1 - c_k) * self.mean_a[J]).numpy()


def _choose_atoms(
    A: torch.Tensor, active: torch.Tensor, mean_a: torch.Tensor, floor: float, tol: Tolerances,
    sparsest: Callable[[int], torch.Tensor], v_of: Callable[[int, torch.Tensor], np.ndarray],
    *, atoms: list[int] | None, full_k: int, max_atoms: int, lower: dict[int, float] | None,
) -> tuple[list[int], list[int], int, dict[int, tuple[float | None, float]]]:
    """The atoms the LP tests, those passed by the bound, how many were left untested, and
    (above ``full_k``) each candidate's bounds ``(C5 lower bound or None, upper bound)``."""
    K = A.shape[1]
    passed_by_bound: list[int] = []
    untested = 0
    ranked: dict[int, tuple[float | None, float]] = {}
    if atoms is not None:
        chosen = list(atoms)
    elif K <= full_k:
        chosen = list(range(K))
    else:  # upper bound ‖v_k − p_k‖₁ with p_k the sparsest inactive point of k
        bounds = []
        for k in range(K):
            if not bool((~active[:, k]).any()):
                continue
            J = _others(k, K)
            p = A[sparsest(k)][0, J]
            ub = float((torch.from_numpy(v_of(k, J)) - p).abs().sum())
            thr = _threshold(v_of(k, J), mean_a, floor, tol)
            if ub <= thr:
                passed_by_bound.append(k)
            else:
                bounds.append((ub, k))
        low = lower or {}
        bounds.sort(key=lambda t: (-low.get(t[1], 0.0), -t[0], t[1]))
        chosen = sorted(k for _, k in bounds[:max_atoms])
        untested = max(len(bounds) - max_atoms, 0)
        ranked = {k: (low.get(k), ub) for ub, k in bounds}
    return chosen, passed_by_bound, untested, ranked


def _certificate(
    k: int, J: torch.Tensor, v: np.ndarray, res: HullDistance, A: torch.Tensor, D: torch.Tensor,
    inactive: torch.Tensor, mean_a: torch.Tensor, lam: float, tol: Tolerances, floor: float,
    duals: str,
) -> Violation | None:
    """The violation (with its move) of an atom the column generation did not pass, or None
    where the reference LP or the gap says it passes after all."""
    dist, q = res.distance, res.q
    if duals == "reference":  # the dual vertex of the LP on every distinct point
        dist, q, _ = hull_distance(v, np.unique(A[inactive][:, J].numpy(), axis=0))
        if dist <= tol.hull_rel * (1 + np.abs(v).sum()):
            return None
    qt = torch.from_numpy(q)
    kappa = float((A[inactive][:, J] @ qt).max())
    gap = float(qt @ torch.from_numpy(v)) - kappa
    if gap <= tol.pair_rel * float(mean_a.max()) + floor:
        return None
    # largest step keeping a_k ≥ 0 where k is active: a_k − t (q·a − κ) ≥ 0
    on = ~inactive
    s = A[on][:, J] @ qt - kappa
    pos_s = s > 0
    t_max = float((A[on][pos_s, k] / s[pos_s]).min()) if bool(pos_s.any()) else 1e3
    move = Toward(0.0, k=k, J=J, q=qt, kappa=kappa)
    t = best_toward_step(move, D, mean_a, lam, t_max)
    return Violation(
        "hull", None, k, "joint", lam * gap, t, lam * gap * t,
        -move.model_delta(D, mean_a, lam) if t > 0 else 0.0,
        detail={"distance": dist, "gap": gap, "atoms": int(J.numel()),
                "restricted": False, "t_max": t_max},
        move=move,
    )


def _others(k: int, K: int) -> torch.Tensor:
    """Every atom but ``k``."""
    return torch.cat([torch.arange(k), torch.arange(k + 1, K)])


def _threshold(v: np.ndarray, mean_a: torch.Tensor, floor: float, tol: Tolerances) -> float:
    """An atom passes when its distance is within the hull tolerance, or when it is too small
    for a gap above the pair tolerance (the gap never exceeds the distance)."""
    return max(
        tol.hull_rel * (1 + float(np.abs(v).sum())), tol.pair_rel * float(mean_a.max()) + floor
    )
