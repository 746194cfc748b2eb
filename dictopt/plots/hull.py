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
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from dictopt.check.pairdata import PairData, pair_data
from dictopt.check.report import CheckReport, Violation
from dictopt.plots.figure import legend_inches, legend_outside, new_figure, set_margins

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


def fmt_number(v: float, digits: int = 3) -> str:
    """A number for a label: no negative zero, a true minus sign."""
    v = float(v) + 0.0
    text = f"{v:.{digits}f}" if digits == 3 and abs(v) < 1000 else f"{v:.{digits}g}"
    if float(text) == 0:
        text = text.lstrip("-")
    return text.replace("-", "−")


def hull_plot(
    pd: PairData,
    report: CheckReport | None = None,
    *,
    width: float = 10.5,
    height: float = 5.4,
) -> Figure:
    """The two-hull picture of one pair, drawn after THEORY's figure.

    Scatter of the normalised responses ``(ã_i, ã_j)`` (the reservoir subsample in grey, the
    exact extreme points in black). Points where ``j`` is off lie on the edge ``ã_j = −1``:
    the hull of their ``ã_i`` is a thick segment on that edge (artist gid ``"hull_i"``), and
    the swapped one on ``ã_i = −1`` (gid ``"hull_j"``). A hull of one point (a strict
    hierarchy: ``a_i = 0`` whenever ``j`` is off) is drawn as a large square, an empty one
    (``j`` never off) as a large hollow diamond at the axes' corner (gids ``"hull_i_empty"``,
    ``"hull_j_empty"``). The point ``−c_ij`` is marked on both edges (gids ``"c_marker_i"``,
    ``"c_marker_j"``): green inside its hull (that order of C5 holds), red outside. The legend,
    which says inside/outside for each marker, sits outside the data area.
    """
    fig = new_figure(width, height)
    ax = fig.add_subplot(1, 1, 1)
    i, j, c = pd.i, pd.j, pd.cos
    verdict = pair_verdict(pd, report)
    dec = "" if verdict.decrease is None else f"; certified decrease {verdict.decrease:.3g}"
    title = f"atoms {i} and {j} (c = {fmt_number(c)}): {verdict.text}{dec}"
    fig.suptitle(title, fontsize=10, wrap=True)
    # the title wraps at the figure's width: about 0.08 in per character at 10 pt
    top = 0.2 + 0.2 * math.ceil(0.08 * len(title) / max(width - 0.5, 1.0))
    ax.set_xlabel(f"ã_{i} = a_{i} / ā_{i} − 1   (atom {i}'s normalised response)")
    ax.set_ylabel(f"ã_{j} = a_{j} / ā_{j} − 1")
    if pd.mean_i <= 0 or pd.mean_j <= 0:
        dead = i if pd.mean_i <= 0 else j
        ax.set_axis_off()
        fig.text(0.5, 0.4, f"atom {dead} is never active: no normalised responses",
                 ha="center", va="center")
        set_margins(fig, left=0.8, right=0.3, bottom=0.6, top=top)
        return fig
    if pd.sample is not None and len(pd.sample):
        smp = pd.sample
        ax.scatter(pd.normalised(smp[:, 0], "i"), pd.normalised(smp[:, 1], "j"), s=5,
                   c="0.55", alpha=0.35, linewidths=0, rasterized=True, gid="sample",
                   label=f"points ({len(smp)} of {pd.n}, uniform subsample)")
    ext = pd.extremes[np.isfinite(pd.extremes).all(axis=1)]
    if len(ext):
        ax.scatter(pd.normalised(ext[:, 0], "i"), pd.normalised(ext[:, 1], "j"), s=16,
                   c="k", marker="o", gid="extremes", label="exact extreme points", zorder=4)
    ax.axhline(-1.0, color="0.75", lw=0.8, zorder=0)
    ax.axvline(-1.0, color="0.75", lw=0.8, zorder=0)
    # axis ranges first, so that a one-point hull can be sized relative to them
    xs = [-1.0, -c, 0.0] + list(pd.normalised(ext[:, 0], "i")) if len(ext) else [-1.0, -c, 0.0]
    ys = [-1.0, -c, 0.0] + list(pd.normalised(ext[:, 1], "j")) if len(ext) else [-1.0, -c, 0.0]
    span_x = max(xs) - min(xs) or 1.0
    span_y = max(ys) - min(ys) or 1.0
    ax.set_xlim(min(xs) - 0.08 * span_x, max(xs) + 0.05 * span_x)
    ax.set_ylim(min(ys) - 0.08 * span_y, max(ys) + 0.05 * span_y)
    for atom, lo, hi, n_off, other, span in (("i", pd.lo_i, pd.hi_i, pd.n_off_j, j, span_x),
                                             ("j", pd.lo_j, pd.hi_j, pd.n_off_i, i, span_y)):
        _draw_edge(ax, pd, atom, i if atom == "i" else j, other, lo, hi, n_off, span)
    legend = legend_outside(ax, fontsize=8, title=f"N = {pd.n}; active: atom {i} on "
                            f"{pd.active_i},\natom {j} on {pd.active_j}, both on {pd.coactive}",
                            title_fontsize=8)
    # right: the legend, its gap to the axes (2 % of their width) and a margin
    set_margins(fig, left=0.8, right=legend_inches(legend)[0] + 0.3, bottom=0.6, top=top)
    return fig


def _draw_edge(
    ax: Any, pd: PairData, atom: str, name: int, other: int, lo: float, hi: float,
    n_off: int, span: float,
) -> None:
    """One hull of :func:`hull_plot` on its edge (``ã_other = −1``) and the marker of ``−c``
    there: green inside the hull, red outside."""
    c = pd.cos
    colour = "tab:blue" if atom == "i" else "tab:orange"
    edge = f"ã_{other} = −1"
    if n_off == 0 or not math.isfinite(lo):
        inside = False
        corner = (-1.0, -1.0)
        ax.plot(*corner, marker="D", ms=16, mfc="none", mec=colour, mew=2.5, ls="none",
                gid=f"hull_{atom}_empty", zorder=6, clip_on=False,
                label=f"hull of ã_{name} where {other} is off: EMPTY ({other} is never off)")
    else:
        seg = pd.normalised(np.array([lo, hi]), atom)
        inside = bool(seg[0] - 1e-9 <= -c <= seg[1] + 1e-9)
        xy = (seg, [-1.0, -1.0]) if atom == "i" else ([-1.0, -1.0], seg)
        one_point = (seg[1] - seg[0]) < 0.01 * span
        what = (f"the single point {fmt_number(seg[0], 3)}" if one_point
                else f"[{fmt_number(seg[0], 3)}, {fmt_number(seg[1], 3)}]")
        ax.plot(*xy, lw=7, color=colour, alpha=0.75, solid_capstyle="round",
                marker="s" if one_point else None, ms=13, gid=f"hull_{atom}",
                zorder=5 if one_point else 3,
                clip_on=False,
                label=f"hull of ã_{name} where {other} is off\n(on {edge}): {what}")
    where_c = (-c, -1.0) if atom == "i" else (-1.0, -c)
    ax.plot(*where_c, marker="X", ms=13, color="tab:green" if inside else "tab:red",
            mec="k", mew=0.8, ls="none", gid=f"c_marker_{atom}", zorder=7, clip_on=False,
            label=f"−c = {fmt_number(-c)}: {'inside' if inside else 'OUTSIDE'} the hull of "
                  f"ã_{name}\n→ ({name}|{other}) {'holds' if inside else 'violated'}")
