"""Agreement of dictopt's label-free findings with the probe method's absorption pairs.

The probe method (:mod:`dictopt.evals.probe_absorption`) yields *cases*: a class (first letter),
its main latents ``M`` and a latent ``a`` that fully absorbs the class on some held-out words.
dictopt's check report yields, without labels, pairs of atoms with an absorption label (and,
when the report carries one, a significance flag), C5 pair violations (near-hierarchies) and
joint-hull violations (an atom inside the cone of others: the star structure).

The report is read as JSON, so this works with whatever labels and statistics the checker
writes: a label counts as an absorption finding when its name contains ``"absorption"``; it is
*significant* unless its ``detail`` says otherwise (``significant: false`` or a ``p_value`` /
``q_value`` above ``alpha``). A violation is significant unless its held-out measurement
(``heldout.significant``) or its detail says otherwise.

- **Recall**: the share of probe cases ``(M, a)`` with some ``m ∈ M`` such that ``{m, a}`` is a
  dictopt absorption pair.
- **Precision**: the share of dictopt absorption pairs that are some probe case. dictopt looks at
  every pair of atoms and the probe only at 26 letters, so a second, *letter-scoped* precision
  counts only the dictopt pairs that contain a main latent of some letter.
- **Structure**: for each probe case, whether a C5 violation joins ``a`` and a main latent
  (either order), and whether a hull violation sits on ``a`` or on a main latent.

Both sides are computed on the same rows; the co-activation counts and cosines reported for the
misses are recomputed here from the dictionary and the data, not taken from the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dictopt.evals.probe_absorption import ProbeAbsorption
from dictopt.problem import Dictionary


@dataclass(frozen=True)
class Finding:
    """One dictopt finding about a pair of atoms (or one atom, for the hull)."""

    kind: str
    """``"absorption"`` (a label), ``"C5"`` or ``"hull"``."""
    i: int | None
    j: int | None
    label: str
    significant: bool
    detail: dict[str, Any] = field(default_factory=dict)


def _significant(detail: dict[str, Any], alpha: float) -> bool:
    if "significant" in detail and detail["significant"] is not None:
        return bool(detail["significant"])
    for key in ("q_value", "p_value", "pvalue"):
        v = detail.get(key)
        if isinstance(v, int | float) and not math.isnan(v):
            return v <= alpha
    return True


def read_findings(report: dict[str, Any], *, alpha: float = 0.05) -> list[Finding]:
    """Absorption labels, C5 and hull violations of a check report (its JSON dict)."""
    out = []
    for lab in report.get("labels", []):
        if "absorption" in str(lab.get("label", "")):
            d = lab.get("detail") or {}
            out.append(Finding("absorption", lab.get("i"), lab.get("j"), lab["label"],
                               _significant(d, alpha), d))
    for v in report.get("violations", []):
        if v.get("condition") in ("C5", "hull"):
            d = dict(v.get("detail") or {})
            held = v.get("heldout")
            if isinstance(held, dict) and "significant" in held:  # the held-out measurement
                d["significant"] = held["significant"]
            move = v.get("move") or {}
            if v["condition"] == "hull" and isinstance(move, dict) and "J" in move:
                d["J"] = move["J"]
            out.append(Finding(v["condition"], v.get("i"), v.get("j"), v.get("label", ""),
                               _significant(d, alpha), d))
    return out


@dataclass
class Case:
    """One probe case with the statistics of its best-matching main latent."""

    cls: int
    main: list[int]
    absorber: int
    words: int
    matched: bool
    """Some ``{m, a}`` is a (significant) dictopt absorption pair."""
    c5: list[str]
    """Labels of C5 violations joining ``a`` and a main latent."""
    hull: bool
    """A hull violation sits on ``a`` or on a main latent."""
    cos: float
    """Largest cosine between ``a`` and a main latent."""
    coactive: int
    """Rows where ``a`` and that main latent are both active."""
    active_a: int
    active_m: int
    lift: float
    """``coactive / E`` with ``E = active_a · active_m / N`` (independence); < 1: exclusion."""
    z: float
    """Poisson z-score of the exclusion, ``(E − coactive) / √E`` (≥ 3: significant)."""


@dataclass
class Agreement:
    """The agreement table of one SAE."""

    cases: list[Case]
    n_pairs: int
    """dictopt absorption pairs (significant ones)."""
    n_pairs_all: int
    """...including those flagged not significant."""
    n_pairs_matched: int
    n_pairs_scoped: int
    """dictopt pairs containing a main latent of some letter."""
    n_scoped_matched: int
    scoped_missed: list[dict[str, Any]]
    """Letter-scoped dictopt pairs that are no probe case, with statistics."""
    counts: dict[str, int]

    @property
    def recall(self) -> float:
        return sum(c.matched for c in self.cases) / len(self.cases) if self.cases else math.nan

    @property
    def precision(self) -> float:
        return self.n_pairs_matched / self.n_pairs if self.n_pairs else math.nan

    @property
    def scoped_precision(self) -> float:
        return self.n_scoped_matched / self.n_pairs_scoped if self.n_pairs_scoped else math.nan

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (NaN for undefined ratios)."""
        return {
            "recall": self.recall, "precision": self.precision,
            "scoped_precision": self.scoped_precision,
            "probe_cases": len(self.cases), "dictopt_pairs": self.n_pairs,
            "dictopt_pairs_all": self.n_pairs_all, "dictopt_pairs_matched": self.n_pairs_matched,
            "dictopt_pairs_scoped": self.n_pairs_scoped,
            "dictopt_scoped_matched": self.n_scoped_matched,
            "cases_with_c5": sum(bool(c.c5) for c in self.cases),
            "cases_with_hull": sum(c.hull for c in self.cases),
            "counts": self.counts,
            "cases": [c.__dict__ for c in self.cases],
            "dictopt_scoped_missed": self.scoped_missed,
        }


def exclusion(n_i: int, n_j: int, n_ij: int, N: int) -> tuple[float, float]:
    """Lift ``n_ij / E`` and Poisson z ``(E − n_ij) / √E`` against independence,
    ``E = n_i n_j / N`` (NaN when ``E = 0``)."""
    E = n_i * n_j / N if N else 0.0
    if E <= 0:
        return math.nan, math.nan
    return n_ij / E, (E - n_ij) / math.sqrt(E)


def activity_counts(
    dictionary: Dictionary, source: Any, atoms: list[int], *, chunk: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Active counts ``[S]`` and co-activation counts ``[S, S]`` of ``atoms`` on the data.

    ``source`` is an array ``[N, d]`` or a ``.npy`` path (memory-mapped).
    """
    x = np.load(source, mmap_mode="r") if isinstance(source, str | Path) else source
    idx = torch.tensor(atoms, dtype=torch.long)
    S = len(atoms)
    n = np.zeros(S, dtype=np.int64)
    co = np.zeros((S, S), dtype=np.int64)
    with torch.no_grad():
        for lo in range(0, x.shape[0], chunk):
            xb = torch.as_tensor(np.array(x[lo : lo + chunk]), dtype=dictionary.dtype)
            act = (dictionary.encode(xb)[:, idx] > 0).to(torch.float64).numpy()
            n += act.sum(0).astype(np.int64)
            co += (act.T @ act).astype(np.int64)
    return n, co


def agreement(
    probe: ProbeAbsorption,
    report: dict[str, Any],
    dictionary: Dictionary,
    data: Any,
    *,
    alpha: float = 0.05,
) -> Agreement:
    """Compare the probe cases of ``probe`` with the findings of ``report`` (module text).

    Parameters
    ----------
    probe:
        The probe-based absorption of the dictionary.
    report:
        ``dictopt check``'s JSON report on the same dictionary.
    dictionary:
        The dictionary (for cosines and co-activation counts).
    data:
        The rows the check ran on (array or ``.npy`` path).
    alpha:
        Significance level for findings that carry a p-value.

    Returns
    -------
    Agreement
    """
    findings = read_findings(report, alpha=alpha)
    absorb_all = {frozenset((f.i, f.j)) for f in findings
                  if f.kind == "absorption" and f.i is not None and f.j is not None}
    absorb = {frozenset((f.i, f.j)) for f in findings
              if f.kind == "absorption" and f.significant and f.i is not None
              and f.j is not None}
    c5: dict[frozenset, list[str]] = {}
    for f in findings:
        if f.kind == "C5" and f.i is not None and f.j is not None:
            c5.setdefault(frozenset((f.i, f.j)), []).append(
                f.label if f.significant else f"{f.label} (not significant)")
    hull_atoms = {f.j for f in findings if f.kind == "hull"} | {
        f.i for f in findings if f.kind == "hull" and f.i is not None}
    kept = [c for c in probe.classes if c.in_means]
    raw = [(c.cls, c.main, a, n) for c in kept for a, n in sorted(c.absorbers.items())]
    main_of: dict[int, int] = {m: c.cls for c in kept for m in c.main}
    probe_pairs = {frozenset((m, a)) for _, main, a, _ in raw for m in main if m != a}
    scoped = [p for p in absorb if p & set(main_of)]
    atoms = sorted({a for _, _, a, _ in raw} | {m for _, main, _, _ in raw for m in main}
                   | {k for p in scoped for k in p})
    pos = {k: t for t, k in enumerate(atoms)}
    n_act, co = activity_counts(dictionary, data, atoms) if atoms else (np.zeros(0), None)
    n_rows = int(report.get("summary", {}).get("N") or _rows(data))
    D = dictionary.atoms.detach().cpu().to(torch.float64).numpy()
    cases = []
    for cls, main, a, words in raw:
        best = max(main, key=lambda m: float(D[m] @ D[a]))
        n_ma, n_a, n_m = int(co[pos[best], pos[a]]), int(n_act[pos[a]]), int(n_act[pos[best]])
        cases.append(Case(
            cls, list(main), a, words,
            any(frozenset((m, a)) in absorb for m in main),
            [lab for m in main for lab in c5.get(frozenset((m, a)), [])],
            a in hull_atoms or any(m in hull_atoms for m in main),
            float(D[best] @ D[a]), n_ma, n_a, n_m, *exclusion(n_a, n_m, n_ma, n_rows),
        ))
    missed = []
    for p in sorted(scoped, key=sorted):
        if p in probe_pairs:
            continue
        i, j = sorted(p)
        m = i if i in main_of else j
        other = j if m == i else i
        n_m, n_o, n_mo = int(n_act[pos[m]]), int(n_act[pos[other]]), int(co[pos[i], pos[j]])
        lift, z = exclusion(n_m, n_o, n_mo, n_rows)
        missed.append({"main": m, "letter_class": main_of[m], "other": other,
                       "cos": float(D[i] @ D[j]), "active_main": n_m, "active_other": n_o,
                       "coactive": n_mo, "lift": lift, "z": z})
    counts = {k: sum(f.kind == k for f in findings) for k in ("absorption", "C5", "hull")}
    return Agreement(
        cases, len(absorb), len(absorb_all), sum(p in probe_pairs for p in absorb),
        len(scoped), sum(p in probe_pairs for p in scoped), missed, counts,
    )


def _rows(data: Any) -> int:
    if isinstance(data, str | Path):
        return int(np.load(data, mmap_mode="r").shape[0])
    return int(data.shape[0])


def format_table(probe: ProbeAbsorption, ag: Agreement, names: str | list[str]) -> str:
    """Plain-text summary: per-class absorption, then the agreement figures and the cases."""
    lines = [f"probe absorption: mean full-absorption rate {probe.mean_full_rate:.3f}, "
             f"mean absorption fraction {probe.mean_fraction:.3f}, "
             f"main latents per letter {probe.mean_split:.2f}"]
    lines.append("letter  main latents       TP  silent  full  rate   fraction  absorbers")
    for c in probe.classes:
        if not c.in_means:
            lines.append(f"{names[c.cls]:<6}  (left out: probe F1 too low or no true positive)")
            continue
        top = ", ".join(f"{a}×{n}" for a, n in sorted(c.absorbers.items(), key=lambda t: -t[1])[:4])
        lines.append(f"{names[c.cls]:<6}  {str(c.main)[:17]:<17} {c.n_true_positives:>4} "
                     f"{c.n_main_silent:>7} {c.n_full:>5}  {c.full_rate:.3f}  "
                     f"{c.mean_fraction:.3f}     {top}")
    lines.append(
        f"dictopt: {ag.n_pairs} absorption pairs ({ag.n_pairs_all} before significance), "
        f"{ag.counts['C5']} C5, {ag.counts['hull']} hull violations; "
        f"{ag.n_pairs_scoped} pairs contain a main latent")
    lines.append(
        f"agreement: recall {ag.recall:.3f} ({sum(c.matched for c in ag.cases)}/{len(ag.cases)} "
        f"probe cases), precision {ag.precision:.3f} ({ag.n_pairs_matched}/{ag.n_pairs}), "
        f"letter-scoped precision {ag.scoped_precision:.3f} "
        f"({ag.n_scoped_matched}/{ag.n_pairs_scoped}); probe cases with a C5 pair "
        f"{sum(bool(c.c5) for c in ag.cases)}, with a hull violation "
        f"{sum(c.hull for c in ag.cases)}")
    if ag.cases:
        cos = np.array([c.cos for c in ag.cases])
        coact = np.array([c.coactive for c in ag.cases])
        lift = np.array([c.lift for c in ag.cases])
        z = np.array([c.z for c in ag.cases])
        lines.append(
            f"probe cases: cosine(main, absorber) median {np.median(cos):.3f} "
            f"(range {cos.min():.3f} to {cos.max():.3f}), ≥ 0.5 in {int((cos >= 0.5).sum())}; "
            f"co-active rows median {np.median(coact):.0f}, zero in "
            f"{int((coact == 0).sum())}/{len(coact)}; lift against independence median "
            f"{np.nanmedian(lift):.2f}, significant exclusion (z ≥ 3) in "
            f"{int((z >= 3).sum())}/{len(z)}")
    return "\n".join(lines)
