"""From statistics to verdicts: C5 violations with certificates, the joint hull, labels.

Everything here runs once on statistics whose size does not depend on N (after the passes).
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch

from dictopt.check.absorption import AbsorptionStats, absorption_findings
from dictopt.check.conditions import atom_floor
from dictopt.check.inputs import Setup
from dictopt.check.moves import Toward, best_pair_steps
from dictopt.check.plan import LabelCandidates, PairPlan
from dictopt.check.report import Label, Violation
from dictopt.check.stats import PassOneStats, PassTwoStats
from dictopt.check.tolerances import LabelThresholds, Tolerances

HULL_RANKING = ("atoms with a C5 violation (i, k) first, by their lower bound |θ_ik − H_ik| "
                "on the gap (the hull certainly fails); then by the upper bound ‖v_k − p‖₁ "
                "on the distance, p the sparsest inactive point (within the threshold: passed "
                "by the bound)")
"""Why the joint hull tested the atoms it tested above K = 64 (the report's
``hull_selection.ranked_by``)."""

F64 = torch.float64


class PairCandidate(NamedTuple):
    """One C5 violation before its certificate is sized."""

    i: int
    j: int
    side: int
    value: float
    """``H_ij`` or ``L_ij``."""
    certify: bool
    """Whether pass 2 bounded its step (otherwise reported with step 0)."""



def pair_violations(
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
    minimiser of ``ΔL`` within the step bound ``t_max`` that keeps every code nonnegative.

    Parameters
    ----------
    setup:
        The check's inputs.
    plan:
        The pair plan.
    st2:
        Pass 2's statistics.
    pos_of:
        Position of each tracked pair key ``i·K + j`` in ``st2``.
    abar:
        ``[K]`` mean codes.
    tau:
        Inactivity threshold.
    tol:
        Tolerances.

    Returns
    -------
    list[Violation]
        C5 violations, each with its move and exact decrease.
    """
    dic, lam = setup.dictionary, setup.lam
    K, D = dic.K, dic.atoms
    floor = atom_floor(abar, tol)
    cands = _pair_candidates(st2, plan, D, abar, floor, tol, dic.has_bias)
    # the steps of every certified move at once: the same numbers as best_toward_step's
    # one-by-one minimisations (one Python-level ΔL evaluation per Brent step before)
    t_max = []
    for i, j, side, _, certify in cands:
        p = pos_of.get(i * K + j)
        t_max.append(float(st2.t_up[p] if side > 0 else st2.t_lo[p])
                     if certify and p is not None else 0.0)
    kappas = [float(c.side * c.value) if dic.has_bias else 0.0 for c in cands]
    ci = torch.tensor([c.i for c in cands], dtype=torch.long)
    cj = torch.tensor([c.j for c in cands], dtype=torch.long)
    cq = torch.tensor([float(c.side) for c in cands], dtype=F64)
    steps, deltas = best_pair_steps(D, abar, lam, ci, cj, cq, kappas, t_max)
    out: list[Violation] = []
    abar_K = abar.tolist()  # the same floats as float(abar[i])
    for n, (i, j, side, val, _) in enumerate(cands):
        c_ij = float(D[i] @ D[j])
        a_i = abar_K[i]
        slope = lam * side * ((1 - c_ij) * a_i - val)
        t = steps[n] if t_max[n] > 0 else 0.0
        move = Toward(t, k=j, J=torch.tensor([i]), q=torch.tensor([float(side)]),
                      kappa=kappas[n])
        strict = side > 0 and val <= tau
        out.append(Violation(
            "C5", i, j, "hierarchy" if strict else ("upper" if side > 0 else "lower"),
            slope, t, slope * t, -deltas[n] if t > 0 else 0.0,
            detail={"side": "upper" if side > 0 else "lower", "H" if side > 0 else "L": val,
                    "theta": (1 - c_ij) * a_i, "cos": c_ij, "t_max": t_max[n]},
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
        PairCandidate(i, j, side, value, t < known.n_certified)
        for t, (i, j, side, value) in enumerate(zip(
            known.i.tolist(), known.j.tolist(), known.side.tolist(), known.value.tolist(),
            strict=True))
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


def joint_hull_verdicts(
    setup: Setup,
    kept_codes: list[torch.Tensor],
    st1: PassOneStats,
    tau: float,
    tol: Tolerances,
    hull: bool | str,
    want_hull: bool,
    found: list[Violation] = (),  # type: ignore[assignment]
    duals: str = "working_set",
    basis: Any = None,
) -> tuple[list[Violation], dict[str, Any]]:
    """The joint hull condition C5′ (exact column-generation LP per atom,
    :mod:`dictopt.check.hull`) when the codes were kept; only meaningful with a bias. The C5
    violations among ``found`` are lower bounds that rank the atoms above ``full_k``.
    Returns violations and the report's info (with the atoms tested when not all were).

    Parameters
    ----------
    setup:
        The check's inputs.
    kept_codes:
        Pass 2's chunks of codes (empty when the hull was not wanted).
    st1:
        Pass 1's statistics.
    tau:
        Inactivity threshold.
    tol:
        Tolerances.
    hull:
        The ``hull`` option.
    want_hull:
        Whether the codes were kept for the exact hull.
    found:
        The C5 violations already found.
    duals:
        Where a violated atom's direction comes from (:func:`~dictopt.check.hull.joint_hull`).
    basis:
        A :class:`dictopt.check.hull.HullBasis` held across checks, or None.

    Returns
    -------
    tuple[list[Violation], dict[str, Any]]
        Hull violations and the report's hull info (``mode``, ``atoms_checked``, ``seconds``).
    """
    dic = setup.dictionary
    info: dict[str, Any] = {"mode": "skipped", "atoms_checked": 0, "seconds": 0.0}
    if want_hull and dic.has_bias:
        from dictopt.check.hull import joint_hull

        th = time.perf_counter()
        A = (torch.cat(kept_codes) if len(kept_codes) > 1 else kept_codes[0]).to(F64)
        lower: dict[int, float] = {}
        for v in found:
            if v.condition == "C5" and v.j is not None:
                lower[v.j] = max(lower.get(v.j, 0.0), abs(v.slope) / setup.lam)
        res = joint_hull(A, dic.atoms, st1.mean_a, setup.lam, tau, tol, lower=lower,
                         duals=duals, basis=basis, top=st1.top.ids)  # type: ignore[arg-type]
        # every atom is decided unless the LP budget left some untested
        info = {"mode": "exact", "atoms_checked": dic.K - res.untested,
                "seconds": time.perf_counter() - th}
        if res.untested or res.passed_by_bound or res.bounds:
            # above K = 64: which atoms the LP tested and why (the bounds that ranked them)
            info.update(tested=res.tested, passed_by_bound=len(res.passed_by_bound),
                        untested=res.untested, ranked_by=HULL_RANKING,
                        lower_bound=[res.bounds[k][0] if k in res.bounds else None
                                     for k in res.tested],
                        upper_bound=[res.bounds[k][1] if k in res.bounds else None
                                     for k in res.tested])
        return res.violations, info
    if hull is not False and dic.has_bias:
        info["mode"] = f"skipped (N·K = {st1.n * dic.K} > hull_exact_limit)"
    return [], info



def absorption_labels(
    stats: AbsorptionStats | None, D: torch.Tensor, th: LabelThresholds
) -> list[Label]:
    """The ``absorption`` label from structure (:mod:`dictopt.check.absorption`): every
    (hub, partner) pair of a significant star, with its evidence.

    Parameters
    ----------
    stats:
        The streamed absorption statistics (``None``: absorption was not computed).
    D:
        ``[K, d]`` unit atoms.
    th:
        The label thresholds (``th.absorption`` is used).

    Returns
    -------
    list[Label]
        One ``absorption`` label per (hub, partner) pair, ``i < j``; empty without statistics.
    """
    if stats is None:
        return []
    found, _ = absorption_findings(stats, D, th.absorption)
    return [Label("absorption", f.i, f.j, f.detail) for f in found]


def structural_labels(
    st1: PassOneStats,
    st2: PassTwoStats,
    pos_of: dict[int, int],
    cand: LabelCandidates,
    th: LabelThresholds,
) -> list[Label]:
    """Structural labels: dead atoms, duplicates and dense antipodal pairs (THEORY C6,
    predicted, not violations); absorption comes from :func:`absorption_labels`.

    Parameters
    ----------
    st1:
        Pass 1's statistics.
    st2:
        Pass 2's statistics (co-activity).
    pos_of:
        Position of each tracked pair key in ``st2``.
    cand:
        Label candidates of the plan.
    th:
        Label thresholds.

    Returns
    -------
    list[Label]
        Dead, duplicate and antipodal labels.
    """
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
        if (c <= -th.antipodal_cos and frac[i] >= th.dense_fraction
                and frac[j] >= th.dense_fraction):
            labels.append(Label("antipodal", i, j, {"cos": c, "coactive": coact}))
    return labels
