"""The pair hull plot, the theory's signature figure (THEORY §2 C5, the two-hull picture).

For atoms ``i, j`` with means ``ā_i, ā_j`` over all points, the normalised responses are
``ã_i = a_i / ā_i − 1`` (and ``ã_j``). C5 reads, for the ordered pair ``(i, j)``,
``L_ij ≤ (1 − c_ij) ā_i ≤ H_ij`` with ``H_ij, L_ij`` the max and min of ``a_i`` over the points
where ``j`` is inactive; dividing by ``ā_i`` gives ``−c_ij ∈ [L_ij/ā_i − 1, H_ij/ā_i − 1]``:
the point ``−c_ij`` must lie in the hull (a segment) of ``ã_i`` over the ``j``-inactive points.
Those points sit on the edge ``ã_j = −1`` of the scatter, so the segment is drawn there, and the
swapped condition on the edge ``ã_i = −1``. (THEORY writes ``ã = (a − ā)/(ā − min a)``, which
agrees when ``min_n a_in = 0``; dividing by ``ā_i`` is the form that is right in general.)

:func:`~dictopt.check.pairdata.pair_data` (in the checker layer; re-exported here) streams a
source once for any number of pairs, keeping exact edge extremes (and the points attaining
them), co-activity counts and a shared reservoir subsample of the points; :func:`hull_plot`
only draws one pair.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from dictopt.check.pairdata import PairData, pair_data
from dictopt.check.report import CheckReport, Violation
from dictopt.plots.figure import new_figure

F64 = torch.float64
INF = math.inf

__all__ = ["PairData", "PairVerdict", "hull_plot", "pair_data", "pair_verdict"]


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------


class PairVerdict(NamedTuple):
    """C5 for both orders of a pair, as the plot's title states it."""

    text: str
    """E.g. ``"(3|7) upper violated; (7|3) holds"``."""
    decrease: float | None
    """The largest certified (exact) decrease among the pair's C5 violations, if any."""
    violated: bool


def _side_from_data(pd: PairData, atom: str, rel: float, floor: float) -> str:
    if atom == "i":
        mean, lo, hi, n_off = pd.mean_i, pd.lo_i, pd.hi_i, pd.n_off_j
    else:
        mean, lo, hi, n_off = pd.mean_j, pd.lo_j, pd.hi_j, pd.n_off_i
    if n_off == 0 or mean <= 0:
        return "holds"
    theta = (1 - pd.cos) * mean
    tol = rel * mean + floor
    if theta - hi > tol:
        return "upper violated"
    if lo - theta > tol:
        return "lower violated"
    return "holds"


def pair_verdict(
    pd: PairData, report: CheckReport | None = None, *, rel: float = 1e-6, floor: float = 0.0
) -> PairVerdict:
    """The verdict for ``(i|j)`` and ``(j|i)``: from the report's C5 violations when a report is
    given (with their certified decrease), else recomputed from the pair data."""
    i, j = pd.i, pd.j
    if report is not None:
        found: list[Violation] = [
            v for v in report.violations
            if v.condition == "C5" and {v.i, v.j} == {i, j}
        ]
        parts = []
        for a, b in ((i, j), (j, i)):
            sides = sorted({str(v.detail.get("side", v.label)) for v in found
                            if (v.i, v.j) == (a, b)})
            if any(v.label == "hierarchy" for v in found if (v.i, v.j) == (a, b)):
                sides = ["upper violated (strict hierarchy)"]
            else:
                sides = [f"{s} violated" for s in sides]
            parts.append(f"({a}|{b}) " + (" & ".join(sides) if sides else "holds"))
        decs = [v.model_decrease if v.model_decrease is not None else v.predicted_decrease
                for v in found]
        return PairVerdict("; ".join(parts), max(decs) if decs else None, bool(found))
    si = _side_from_data(pd, "i", rel, floor)
    sj = _side_from_data(pd, "j", rel, floor)
    return PairVerdict(f"({i}|{j}) {si}; ({j}|{i}) {sj}", None,
                       si != "holds" or sj != "holds")


# ---------------------------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------------------------


def hull_plot(
    pd: PairData,
    report: CheckReport | None = None,
    *,
    width: float = 5.6,
    height: float = 5.0,
) -> Figure:
    """The two-hull picture of one pair.

    Scatter of ``(ã_i, ã_j)`` (the reservoir subsample in grey, the exact extreme points in
    black), the hull segment of ``ã_i`` over the ``j``-inactive points on the edge ``ã_j = −1``
    (artist gid ``"hull_i"``), the one of ``ã_j`` on ``ã_i = −1`` (gid ``"hull_j"``), and the
    point ``−c_ij`` on both (gids ``"c_marker_i"``, ``"c_marker_j"``): green inside its segment,
    red outside. The title states the verdict and the certified decrease.
    """
    fig = new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    i, j, c = pd.i, pd.j, pd.cos
    verdict = pair_verdict(pd, report)
    dec = "" if verdict.decrease is None else f"\ncertified decrease {verdict.decrease:.3g}"
    ax.set_title(f"atoms {i}, {j}  (c = {c:.3f})\n{verdict.text}{dec}", fontsize=9)
    ax.set_xlabel(f"ã_{i} = a_{i}/ā_{i} − 1")
    ax.set_ylabel(f"ã_{j} = a_{j}/ā_{j} − 1")
    if pd.mean_i <= 0 or pd.mean_j <= 0:
        dead = i if pd.mean_i <= 0 else j
        ax.text(0.5, 0.5, f"atom {dead} is never active: no normalised responses",
                ha="center", va="center", transform=ax.transAxes)
        return fig
    if pd.sample is not None and len(pd.sample):
        s = pd.sample
        ax.scatter(pd.normalised(s[:, 0], "i"), pd.normalised(s[:, 1], "j"), s=4,
                   c="0.55", alpha=0.35, linewidths=0, rasterized=True, gid="sample",
                   label=f"{len(s)} of {pd.n} points (uniform subsample)")
    ext = pd.extremes[np.isfinite(pd.extremes).all(axis=1)]
    if len(ext):
        ax.scatter(pd.normalised(ext[:, 0], "i"), pd.normalised(ext[:, 1], "j"), s=14,
                   c="k", marker="o", gid="extremes", label="exact extreme points", zorder=4)
    for atom, lo, hi, n_off, other in (("i", pd.lo_i, pd.hi_i, pd.n_off_j, j),
                                       ("j", pd.lo_j, pd.hi_j, pd.n_off_i, i)):
        if n_off == 0 or not math.isfinite(lo):
            continue
        seg = pd.normalised(np.array([lo, hi]), atom)
        inside = seg[0] - 1e-12 <= -c <= seg[1] + 1e-12
        colour = "tab:green" if inside else "tab:red"
        name = i if atom == "i" else j
        if atom == "i":
            ax.plot(seg, [-1.0, -1.0], lw=5, color="tab:blue", alpha=0.6, solid_capstyle="butt",
                    marker="|", ms=14,
                    gid="hull_i", label=f"hull of ã_{name} where {other} inactive", zorder=3)
            ax.plot([-c], [-1.0], marker="X", ms=11, color=colour, ls="none", gid="c_marker_i",
                    label=f"−c = {-c:.3f}", zorder=5)
        else:
            ax.plot([-1.0, -1.0], seg, lw=5, color="tab:orange", alpha=0.6, marker="_", ms=14,
                    solid_capstyle="butt", gid="hull_j",
                    label=f"hull of ã_{name} where {other} inactive", zorder=3)
            ax.plot([-1.0], [-c], marker="X", ms=11, color=colour, ls="none", gid="c_marker_j",
                    zorder=5)
    ax.axhline(-1.0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(-1.0, color="0.8", lw=0.8, zorder=0)
    ax.legend(fontsize=7, loc="upper right")
    ax.text(0.01, 0.99, f"N = {pd.n}, active {pd.active_i} / {pd.active_j}, both {pd.coactive}",
            transform=ax.transAxes, fontsize=7, va="top")
    return fig
