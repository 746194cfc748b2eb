"""From statistics to verdicts: C5 violations with certificates, the joint hull, labels.

Everything here runs once on statistics whose size does not depend on N (after the passes).
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import torch

from dictopt.check.conditions import atom_floor
from dictopt.check.inputs import Setup
from dictopt.check.moves import Toward, best_toward_step
from dictopt.check.plan import LabelCandidates, PairPlan
from dictopt.check.report import Label, Violation
from dictopt.check.stats import PassOneStats, PassTwoStats
from dictopt.check.tolerances import LabelThresholds, Tolerances

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


def joint_hull_verdicts(
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



def structural_labels(
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
