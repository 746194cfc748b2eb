"""The checker's result: :class:`CheckReport` (summary, per-atom table, ranked violations).

JSON schema (``CheckReport.to_json``; version ``SCHEMA_VERSION``)::

    {
      "schema": "dictopt.check/1",
      "summary": {
        "N", "K", "d": int, "lam": float, "codes": "own" | "optimal" | "given",
        "loss", "reconstruction", "sparsity", "explained_variance", "l0": float,
        "tau": float, "has_bias": bool, "unstable_optimum": bool,
        "counts": {"C1": int, "C2": int, "C3": int, "C4": int, "C5": int, "hull": int},
        "labels": {"hierarchy": int, "absorption": int, "always_on": int, "dead": int,
                   "duplicate": int, "antipodal": int},
        "duplicate_groups": {"groups": int, "atoms": int, "largest": [int]},
                                           # connected components of the duplicate pairs
        "max_kkt_violation": float,        # C1, relative to λ
        "bias_residual": float,            # C3, ‖r̄‖
        "capacity": {"points_over_lam": int, "total_gain": float, "max_gain": float},
        "amortisation": null | str | {      # null: off; str: why it was skipped
            "optimal_loss": float,         # loss − loss_gap (estimate when sampled)
            "loss_gap": float,             # mean over those rows of own − optimal row loss
            "mean_abs_code_diff": [K floats],  # mean |a_opt − a| per atom over those rows
            "loss_gap_se": float | null,   # its standard error, s/√m·√(1 − m/N); 0 for all
            "rows": "all" | "sample",      # exact codes for every row, or a sample of rows
            "sample_size": int,            # rows with exact codes (m)
            "population": int,             # N
            "seed": int},                  # of the row-index hash choosing the sample
        "pairs_in_pass2": int, "hull": {"mode": str, "atoms_checked": int, "seconds": float},
        "timings": {name: seconds}, "tolerances": {...},
        "heldout": {...}                   # only with check(..., heldout=...): z, split,
                                           # severity by condition, headline (THEORY §5)
      },
      "atoms": [ {"k", "mean_code", "active_fraction", "min_code", "max_code",
                  "kkt_violation", "stationarity_tangential", "stationarity_radial",
                  "labels": [str]} ],
      "violations": [ {"condition": "C1"|"C2"|"C3"|"C4"|"C5"|"hull", "i": int|null,
                       "j": int|null, "label": str, "slope": float, "step": float,
                       "predicted_decrease": float, "model_decrease": float|null,
                       "measured_decrease": float|null, "detail": {...}, "move": {...},
                       "heldout": null | {"step", "fit_decrease", "decrease", "se": float,
                                          "z": float|null, "significant": bool,
                                          "n_val": int, "move": {...}}} ],
      "labels": [ {"label": str, "i": int, "j": int|null, "detail": {...}} ]
    }

``predicted_decrease`` is the first-order decrease ``slope × step``; ``model_decrease`` the
exact decrease computed from the pass statistics; ``measured_decrease`` the decrease measured
by applying the move on the data (:func:`dictopt.check.certify`), null until measured. All
decreases are in loss units (positive = the loss goes down). ``heldout`` is the finite step
of :mod:`dictopt.check.heldout`: chosen on the statistics rows, measured on the validation rows
with its standard error; with it, violations are ranked significant first, and C5 findings
labelled ``near_hierarchy`` (no exact violation, a significant held-out certificate) and
``rare`` atom labels appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dictopt.check.gcpause import paused_gc
from dictopt.check.jsontext import dumps_indented
from dictopt.check.records import (
    AtomRow,
    CheckSummary,
    Condition,
    Label,
    LabelName,
    Violation,
    ViolationLabel,
)

SCHEMA_VERSION = "dictopt.check/1"
CONDITIONS = tuple(str(c) for c in Condition)
LABELS = ("hierarchy", "absorption", "always_on", "dead", "duplicate", "antipodal")
"""The labels every summary counts (a held-out stage adds ``rare`` and ``near_hierarchy``)."""

__all__ = [
    "CONDITIONS",
    "LABELS",
    "SCHEMA_VERSION",
    "AtomRow",
    "CheckReport",
    "CheckSummary",
    "Condition",
    "Label",
    "LabelName",
    "Violation",
    "ViolationLabel",
    "duplicate_groups",
]


@dataclass
class CheckReport:
    """Result of :func:`dictopt.check.check`: the summary, one row per atom, the violations
    ranked by the exact decrease of their certificates, and the structural labels.

    Mappings are accepted for ``summary`` and ``atoms`` (as read from JSON) and converted.
    """

    summary: CheckSummary
    atoms: list[AtomRow]
    violations: list[Violation]
    labels: list[Label]

    def __post_init__(self) -> None:
        if not isinstance(self.summary, CheckSummary):
            self.summary = CheckSummary.from_json(self.summary)
        self.atoms = [r if isinstance(r, AtomRow) else AtomRow.from_json(r) for r in self.atoms]

    def by_condition(self, condition: str) -> list[Violation]:
        """The violations of one condition (``"C1"`` … ``"C5"``, ``"hull"``), in rank order.

        Parameters
        ----------
        condition:
            A :class:`Condition` or its name.

        Returns
        -------
        list[Violation]
        """
        return [v for v in self.violations if v.condition == condition]

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready values (schema ``SCHEMA_VERSION``, module docstring).

        Returns
        -------
        dict[str, Any]
        """
        return {
            "schema": SCHEMA_VERSION,
            "summary": self.summary.to_json(),
            "atoms": [row.to_json() for row in self.atoms],
            "violations": [v.to_json() for v in self.violations],
            "labels": [lab.to_json() for lab in self.labels],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckReport:
        """The report written by :meth:`to_json`, moves restored.

        Parameters
        ----------
        data:
            A report's JSON (any ``dictopt.check/…`` schema of this major version).

        Returns
        -------
        CheckReport

        Raises
        ------
        KeyError, TypeError, ValueError
            When a field is missing or has the wrong type.
        """
        return cls(
            CheckSummary.from_json(data["summary"]),
            [AtomRow.from_json(r) for r in data["atoms"]],
            [Violation.from_json(v) for v in data["violations"]],
            [Label.from_json(lab) for lab in data["labels"]],
        )

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (a failure leaves any previous file).

        Parameters
        ----------
        path:
            The file to write.

        Returns
        -------
        Path
        """
        from dictopt.atomic import write_text

        with paused_gc():  # one dict per row and violation: nothing cyclic to collect
            # json.dumps(..., indent=1)'s text (its indented encoder is pure Python and slow)
            text = dumps_indented(self.to_json(), 1) + "\n"
        return write_text(path, text)

    def format(self, top: int = 10) -> str:
        """A readable terminal summary."""
        s = self.summary
        lines = [
            f"dictopt check: N={s['N']} K={s['K']} d={s['d']} lam={s['lam']:.4g} "
            f"codes={s['codes']} tau={s['tau']:.3g}",
            f"loss {s['loss']:.6g} (reconstruction {s['reconstruction']:.6g}, sparsity "
            f"{s['sparsity']:.6g})  L0 {s['l0']:.2f}  explained variance "
            f"{s['explained_variance']:.4f}",
            "violations: " + "  ".join(f"{c} {s['counts'][c]}" for c in CONDITIONS),
            "labels:     " + "  ".join(f"{k} {s['labels'][k]}" for k in LABELS),
            *_duplicate_line(s.get("duplicate_groups")),
            f"max KKT violation {s['max_kkt_violation']:.3g}·λ   bias residual "
            f"{s['bias_residual']:.3g}   capacity: {s['capacity']['points_over_lam']} points "
            f"with ‖r‖>λ (one new atom removes at least {s['capacity']['max_gain']:.3g}; new "
            f"atoms, all else fixed, up to {s['capacity']['total_gain']:.3g}: proofs/capacity.md)",
        ]
        am = s.get("amortisation")
        if isinstance(am, str):
            lines.append(f"amortisation gap: {am}")
        elif am:
            lines.append(f"amortisation gap: own loss − optimal loss = {_gap(am)}")
        lines.append(
            "verdict: " + ("NOT a local minimum (certified descent found)"
                           if s["unstable_optimum"] else "all first-order conditions hold")
        )
        ho = s.get("heldout")
        if ho:
            lines.append(ho["headline"])
        if self.violations:
            shown = min(top, len(self.violations))
            lines.append(f"top {shown} violations (by exact decrease of their certificate):")
            for v in self.violations[:top]:
                pair = "-" if v.i is None and v.j is None else (
                    f"({v.i}, {v.j})" if v.i is not None and v.j is not None
                    else f"atom {v.i if v.i is not None else v.j}"
                )
                meas = f"  measured {v.measured_decrease:.3g}" if v.measured_decrease else ""
                if v.heldout is not None:
                    h = v.heldout
                    meas += (f"  held-out {h.decrease:.3g} ± {h.se:.2g}"
                             f"{' significant' if h.significant else ''}")
                lines.append(
                    f"  {v.condition:<4} {pair:<14} {v.label:<12} predicted "
                    f"{v.predicted_decrease:.3g}  exact {v.model_decrease or 0:.3g}{meas}"
                )
        return "\n".join(lines)


def _gap(am: dict[str, Any]) -> str:
    """``0.0123 ± 0.0004 (standard error; exact codes for 512 sampled rows of 30,000; optimal
    loss 0.05)``, or ``... (exact codes for all N rows; ...)``."""
    se = am.get("loss_gap_se")
    m, N = am.get("sample_size"), am.get("population")
    if am.get("rows") == "sample" and m is not None:
        se_text = f" ± {se:.2g}" if se is not None and se == se else ""
        rows = f"standard error; exact codes for {m:,} sampled rows of {N:,}; "
    else:
        se_text, rows = "", f"exact codes for all {m:,} rows; " if m is not None else ""
    return f"{am['loss_gap']:.4g}{se_text} ({rows}optimal loss {am['optimal_loss']:.6g})"


def duplicate_groups(pairs: list[tuple[int, int]], K: int, top: int = 5) -> dict[str, Any]:
    """Groups of atoms linked by duplicate pairs (connected components): how many groups, how
    many atoms they hold and the ``top`` largest sizes. Thousands of duplicate pairs are often
    one large group of near-identical atoms.

    Parameters
    ----------
    pairs:
        Duplicate pairs ``(i, j)``.
    K:
        Number of atoms.
    top:
        How many of the largest group sizes to list.

    Returns
    -------
    dict[str, Any]
        ``groups``, ``atoms`` and ``largest``.
    """
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not pairs:
        return {"groups": 0, "atoms": 0, "largest": []}
    i, j = np.asarray(pairs).T
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(K, K))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    groups = sorted((int(n) for n in sizes[sizes > 1]), reverse=True)
    return {"groups": len(groups), "atoms": sum(groups), "largest": groups[:top]}


def _duplicate_line(groups: dict[str, Any] | None) -> list[str]:
    if not groups or not groups["groups"]:
        return []
    return [f"duplicates:  {groups['atoms']} atoms in {groups['groups']} group(s) of "
            f"near-identical atoms; largest {groups['largest']}"]
