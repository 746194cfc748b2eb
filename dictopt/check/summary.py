"""The report assembled from pass 1's statistics, the verdicts and the timings."""

from __future__ import annotations

import time
from typing import Any

import torch

from dictopt.check.inputs import Setup
from dictopt.check.passes import PassOneResult
from dictopt.check.records import (
    Amortisation,
    AtomRow,
    Capacity,
    CheckSummary,
    Condition,
    DuplicateGroups,
    HullInfo,
    Label,
    LabelName,
    Violation,
    tolerances_json,
)
from dictopt.check.report import LABELS, CheckReport, duplicate_groups
from dictopt.check.stats import PassOneStats
from dictopt.check.tolerances import Tolerances


def assemble_report(
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
    """The report: summary (loss, counts, labels, capacity, amortisation, timings) and rows.

    Parameters
    ----------
    setup:
        The check's inputs.
    p1:
        Pass 1's statistics and τ.
    cols:
        Per-atom condition residuals (``kkt_violation``, ``stationarity_tangential``,
        ``stationarity_radial``).
    violations:
        Every violation, ranked.
    labels:
        The structural labels.
    hull_info:
        ``mode``, ``atoms_checked``, ``seconds`` of the joint hull.
    n_pass2:
        Pairs tracked in pass 2.
    tol:
        The tolerances used.
    timings:
        Seconds per phase so far (``total`` is added here).
    t0:
        ``time.perf_counter()`` at the start of the check.

    Returns
    -------
    CheckReport
    """
    st1, lam = p1.stats, setup.lam
    N, K = st1.n, setup.dictionary.K
    rec = st1.half_sq / N
    counts = {str(c): sum(v.condition == c for v in violations) for c in Condition}
    loss = rec + lam * st1.l1 / N
    summary = CheckSummary(
        N=N, K=K, d=setup.dictionary.d, lam=lam, codes=setup.mode, tau=p1.tau,
        has_bias=setup.dictionary.has_bias, loss=loss, reconstruction=rec,
        sparsity=lam * st1.l1 / N, explained_variance=st1.ev.value,
        l0=float(st1.n_active.sum()) / N,
        unstable_optimum=any(
            v.condition != Condition.C1 and (v.model_decrease or 0.0) > 0 for v in violations
        ),
        counts=counts, labels=_label_counts(labels, violations, counts),
        duplicate_groups=DuplicateGroups(**duplicate_groups(
            [(lab.i, lab.j) for lab in labels if lab.label == LabelName.DUPLICATE], K
        )),
        max_kkt_violation=float(cols["kkt_violation"].max()),
        bias_residual=float(st1.r_mean.norm()),
        capacity=Capacity(st1.n_over, st1.over_sum / N, st1.over_max / N),
        amortisation=_amortisation(p1, setup, loss, N) or setup.amortisation_note,
        pairs_in_pass2=n_pass2, hull=HullInfo(**{k: v for k, v in hull_info.items()
                                                 if k not in HULL_SELECTION}),
        tolerances=tolerances_json(tol), timings=timings,
    )
    selection = {k: hull_info[k] for k in HULL_SELECTION if k in hull_info}
    if selection:  # above K = 64: which atoms the joint hull's LP tested (an extra key)
        summary["hull_selection"] = selection
    atom_rows = _atom_rows(st1, cols, labels, violations)
    timings["total"] = time.perf_counter() - t0
    return CheckReport(summary, atom_rows, violations, labels)


HULL_SELECTION = ("tested", "passed_by_bound", "untested", "ranked_by", "lower_bound",
                  "upper_bound")
"""Keys of the hull's info that say which atoms were tested (above K = 64) and why (the rule
and, per tested atom, its C5 lower bound on the gap or null and its upper bound on the
distance); they go to the summary's extra key ``hull_selection``."""


def _label_counts(
    labels: list[Label], violations: list[Violation], counts: dict[str, int]
) -> dict[str, int]:
    """Structural labels per name (``hierarchy`` from C5, ``always_on`` from C4)."""
    out = {name: 0 for name in LABELS}
    for lab in labels:
        out[str(lab.label)] += 1
    out["hierarchy"] = sum(v.label == "hierarchy" for v in violations)
    out["always_on"] = counts["C4"]
    return out


def _amortisation(p1: PassOneResult, setup: Setup, loss: float, N: int) -> Amortisation | None:
    """The amortisation gap, when pass 1 computed optimal codes (for all rows or a sample,
    :mod:`dictopt.check.amortisation`)."""
    amort = p1.amortisation
    if amort is None:
        return None
    return Amortisation(**amort.summary(setup.amortisation, N, loss))


def _atom_rows(
    st1: PassOneStats,
    cols: dict[str, torch.Tensor],
    labels: list[Label],
    violations: list[Violation],
) -> list[AtomRow]:
    """One row per atom: its statistics, condition residuals and labels."""
    K, N = st1.K, st1.n
    tags: list[list[str]] = [[] for _ in range(K)]
    for lab in labels:
        tags[lab.i].append(str(lab.label))
        if lab.j is not None:
            tags[lab.j].append(str(lab.label))
    for v in violations:
        if v.condition == Condition.C4:
            tags[v.i].append("always_on")
        if v.label == "hierarchy":
            tags[v.i].append("hierarchy_child")
            tags[v.j].append("hierarchy_parent")
    # columns as Python floats once (indexing tensors element by element costs ~K·8 calls)
    mean, active, lo, hi = (t.tolist() for t in (st1.mean_a, st1.n_active, st1.min_a, st1.max_a))
    kkt, tang, rad = (cols[c].tolist() for c in (
        "kkt_violation", "stationarity_tangential", "stationarity_radial"))
    return [
        AtomRow(k=k, mean_code=float(mean[k]), active_fraction=float(active[k]) / N,
                min_code=float(lo[k]), max_code=float(hi[k]), kkt_violation=float(kkt[k]),
                stationarity_tangential=float(tang[k]), stationarity_radial=float(rad[k]),
                labels=sorted(set(tags[k])))
        for k in range(K)
    ]
