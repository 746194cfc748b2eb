"""The report assembled from pass 1's statistics, the verdicts and the timings."""

from __future__ import annotations

import time
from typing import Any

import torch

from dictopt.check.inputs import Setup
from dictopt.check.passes import PassOneResult
from dictopt.check.report import CONDITIONS, LABELS, CheckReport, Label, Violation, duplicate_groups
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
