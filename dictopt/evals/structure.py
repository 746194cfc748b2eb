"""The structure THEORY predicts for absorption, read on the probe method's absorbing latents.

THEORY §2 and §5: at an L1 optimum a hierarchy (a parent that fires whenever a child fires)
becomes a set of mutually exclusive atoms. What is left of a hierarchy in a trained SAE shows up
as a **near-hierarchy** (a C5 pair violation between the two latents) or, after absorption, as a
**star** (one hub with several partners that share its direction; the ``absorption`` label) and,
jointly, as a failure of the **hull condition** C5′ at an atom (every other atom can rotate
toward it at once).

For each probe case (letter, main latents ``M``, absorbing latent ``a``;
:mod:`dictopt.evals.probe_absorption`) this module asks which of these the check sees:

- ``c5_pair``: a C5 violation of the report joins ``a`` and some ``m ∈ M``;
- ``c5_any``: some C5 violation of the report involves ``a``;
- ``star_pair``: ``{m, a}`` is an ``absorption`` label of the report (a hub and its partner);
- ``star_any``: ``a`` is a hub or partner of any ``absorption`` label;
- ``hull``: the joint hull LP (:func:`dictopt.check.hull.joint_hull`), run here on exactly the
  atoms of the probe cases over every row of the check, fails at ``a`` or at some ``m``.

The check itself runs the hull LP only when ``N·K`` is small (``hull_exact_limit``), so on a
real SAE its report has no hull verdicts; :func:`probe_hull` fills that in for the few atoms the
comparison needs, with the column-generation LP (exact for each atom tested).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dictopt.check.hull import joint_hull
from dictopt.check.tolerances import DEFAULT_TOLERANCES
from dictopt.evals.probe_absorption import ProbeAbsorption
from dictopt.problem import Dictionary

F64 = torch.float64


@dataclass
class HullVerdict:
    """The joint hull condition at one atom."""

    atom: int
    tested: bool
    """False when the atom is never inactive (no hull question) or passed by the bound."""
    violated: bool
    gap: float
    """``q·v − κ`` of the separating direction (0 when the atom passes)."""
    model_decrease: float
    """First-order decrease of the best step along the hull move (0 when it passes)."""
    measured: bool = True
    """False when the CPU budget ran out before this atom."""
    seconds: float = 0.0
    """CPU seconds of this atom's LP."""


def probe_atoms(probe: ProbeAbsorption) -> list[int]:
    """The absorbing latents of every probe case, then their letters' main latents (the letters
    kept in the means), each once, absorbers first."""
    kept = [c for c in probe.classes if c.in_means and c.absorbers]
    absorbers = sorted({a for c in kept for a in c.absorbers})
    main = sorted({m for c in kept for m in c.main} - set(absorbers))
    return absorbers + main


def all_codes(dictionary: Dictionary, source: Any, *, chunk: int = 8192) -> torch.Tensor:
    """The dictionary's own codes ``[N, K]`` (float64) on every row of ``source`` (an array
    ``[N, d]`` or a ``.npy`` path, memory-mapped)."""
    x = np.load(source, mmap_mode="r") if isinstance(source, str | Path) else source
    out = []
    with torch.no_grad():
        for lo in range(0, x.shape[0], chunk):
            xb = torch.as_tensor(np.array(x[lo : lo + chunk]), dtype=dictionary.dtype)
            out.append(dictionary.encode(xb).to(F64))
    return torch.cat(out)


def probe_hull(
    dictionary: Dictionary,
    source: Any,
    atoms: list[int],
    lam: float,
    *,
    budget_s: float | None = None,
) -> dict[int, HullVerdict]:
    """The joint hull condition C5′ at each of ``atoms``, on the dictionary's own codes.

    Parameters
    ----------
    dictionary:
        The SAE (must have a bias: the hull condition is a statement about the bias).
    source:
        The rows of the check (array ``[N, d]`` or ``.npy`` path).
    atoms:
        Atoms to test, in this order (each exactly, by column generation).
    lam:
        λ of the report (``summary.lam``; the implied λ for TopK SAEs).
    budget_s:
        CPU seconds (this process) after which the remaining atoms are left untested
        (``measured=False``); ``None``: no limit. An LP in ``K − 1`` dimensions over tens of
        thousands of rows can take a minute.

    Returns
    -------
    dict[int, HullVerdict]
        One verdict per atom of ``atoms``.
    """
    if not dictionary.has_bias:
        raise ValueError("probe_hull: the hull condition needs a dictionary with a bias")
    A = all_codes(dictionary, source)
    D, mean_a = dictionary.atoms.to(F64), A.mean(0)
    t0 = time.process_time()
    out: dict[int, HullVerdict] = {}
    for k in atoms:
        if budget_s is not None and time.process_time() - t0 > budget_s:
            out[k] = HullVerdict(k, False, False, 0.0, 0.0, measured=False)
            continue
        res = joint_hull(A, D, mean_a, lam, 0.0, DEFAULT_TOLERANCES, atoms=[k],
                         duals="working_set")
        v = res.violations[0] if res.violations else None
        out[k] = HullVerdict(
            k, k in res.tested, v is not None,
            float(v.detail["gap"]) if v is not None else 0.0,
            float(v.model_decrease or 0.0) if v is not None else 0.0,
            seconds=time.process_time() - t0 - sum(x.seconds for x in out.values()),
        )
    return out


def structure_counts(
    probe: ProbeAbsorption, report: dict[str, Any], hull: dict[int, HullVerdict] | None = None
) -> dict[str, Any]:
    """Per probe case, which predicted structure the check shows (module docstring), and counts.

    Parameters
    ----------
    probe:
        The probe-based absorption of the SAE.
    report:
        ``dictopt check``'s JSON report on the same SAE and rows.
    hull:
        :func:`probe_hull`'s verdicts (``None``: not measured; ``hull`` is then left out).

    Returns
    -------
    dict
        ``cases`` (one dict per case) and ``counts`` (cases showing each structure, and
        ``any``: at least one of them).
    """
    c5: set[frozenset[int]] = set()
    c5_atoms: set[int] = set()
    for v in report.get("violations", []):
        if v.get("condition") == "C5" and v.get("i") is not None and v.get("j") is not None:
            c5.add(frozenset((v["i"], v["j"])))
            c5_atoms |= {v["i"], v["j"]}
    star: set[frozenset[int]] = set()
    star_atoms: set[int] = set()
    for lab in report.get("labels", []):
        if "absorption" in str(lab.get("label", "")) and lab.get("i") is not None:
            star.add(frozenset((lab["i"], lab["j"])))
            star_atoms |= {lab["i"], lab["j"]}
    cases = []
    for c in probe.classes:
        if not c.in_means:
            continue
        for a in sorted(c.absorbers):
            row = {
                "letter_class": c.cls, "absorber": a, "main": list(c.main),
                "c5_pair": any(frozenset((m, a)) in c5 for m in c.main if m != a),
                "c5_any": a in c5_atoms,
                "star_pair": any(frozenset((m, a)) in star for m in c.main if m != a),
                "star_any": a in star_atoms,
            }
            if hull is not None:
                row["hull"] = any(hull[k].violated for k in [a, *c.main] if k in hull)
                row["hull_absorber"] = bool(a in hull and hull[a].violated)
                row["hull_unmeasured"] = any(
                    k not in hull or not hull[k].measured for k in [a, *c.main])
            cases.append(row)
    keys = ["c5_pair", "c5_any", "star_pair", "star_any"] + (
        ["hull", "hull_absorber", "hull_unmeasured"] if hull is not None else [])
    counts: dict[str, Any] = {k: sum(r[k] for r in cases) for k in keys}
    counts["any_pair"] = sum(
        r["c5_pair"] or r["star_pair"] or r.get("hull", False) for r in cases)
    counts["cases"] = len(cases)
    return {"cases": cases, "counts": counts}
