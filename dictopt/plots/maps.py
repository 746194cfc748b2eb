"""Report-level maps: the C5 violation heatmap, co-occurrence vs decoder cosine, per-atom bars.

All read a :class:`~dictopt.check.report.CheckReport` (the co-occurrence scatter also needs
:class:`~dictopt.plots.hull.PairData`, i.e. the codes) and return a Figure.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from dictopt.check.report import CheckReport
from dictopt.plots.figure import (
    legend_inches,
    legend_outside,
    new_figure,
    note_figure,
    set_margins,
)
from dictopt.plots.hull import PairData

LABEL_MARK = {"hierarchy": "H", "absorption": "A", "antipodal": "±", "duplicate": "D"}


def c5_margins(report: CheckReport) -> dict[tuple[int, int], float]:
    """Signed relative C5 margin of each violated ordered pair ``(i, j)``.

    Upper side: ``((1 − c_ij) ā_i − H_ij) / ā_i > 0``; lower side: ``−(L_ij − (1 − c_ij) ā_i)
    / ā_i < 0``. When both sides are violated (impossible for a single pair in exact
    arithmetic) the larger magnitude is kept. Pairs not listed hold.
    """
    out: dict[tuple[int, int], float] = {}
    for v in report.violations:
        if v.condition != "C5" or v.i is None or v.j is None:
            continue
        mean = float(report.atoms[v.i]["mean_code"]) if v.i < len(report.atoms) else math.nan
        theta = v.detail.get("theta")
        if theta is None or not mean or mean <= 0:
            continue
        if v.detail.get("side", "upper") == "upper":
            m = (theta - v.detail["H"]) / mean
        else:
            m = -(v.detail["L"] - theta) / mean
        key = (v.i, v.j)
        if key not in out or abs(m) > abs(out[key]):
            out[key] = m
    return out


def top_atoms(report: CheckReport, top: int) -> list[int]:
    """Atoms ranked by the summed slope of the C5 violations they take part in."""
    score: dict[int, float] = defaultdict(float)
    for v in report.violations:
        if v.condition == "C5":
            for k in (v.i, v.j):
                if k is not None:
                    score[k] += abs(v.slope)
    return [k for k, _ in sorted(score.items(), key=lambda kv: -kv[1])[:top]]


def _cluster_order(M: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering of rows of ``[|M| + |M|ᵀ]`` (families show)."""
    n = M.shape[0]
    if n < 3:
        return np.arange(n)
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import pdist

    S = np.abs(M) + np.abs(M.T)
    return leaves_list(linkage(pdist(S), method="average"))


def violation_map(report: CheckReport, top: int = 30) -> Figure:
    """Heatmap of signed C5 margins for the ``top`` atoms, clustered, with structural labels.

    Row ``i``, column ``j`` shows the margin of the ordered pair ``(i, j)`` (red: upper side
    violated, blue: lower side, white: holds). Letters mark hierarchy (H), absorption (A),
    dense antipodal (±) and duplicate (D) pairs. The image artist has gid ``"violation_map"``
    and ``fig.dictopt_atoms`` lists the atoms in display order.
    """
    margins = c5_margins(report)
    atoms = top_atoms(report, top)
    if not atoms:
        return note_figure("No C5 violations: every ordered pair satisfies the two-hull "
                           "condition, so there is no violation map to draw.")
    pos = {k: p for p, k in enumerate(atoms)}
    M = np.zeros((len(atoms), len(atoms)))
    for (i, j), m in margins.items():
        if i in pos and j in pos:
            M[pos[i], pos[j]] = m
    order = _cluster_order(M)
    M = M[np.ix_(order, order)]
    atoms = [atoms[o] for o in order]
    pos = {k: p for p, k in enumerate(atoms)}
    size = min(3.0 + 0.25 * len(atoms), 11.0)
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    # tick labels at 7 pt (rotated below) and the axis labels; right of the colorbar (which
    # takes 0.45 in of the axes' cell: a gap and its bar): its tick labels and label
    set_margins(fig, left=0.75, right=0.9, bottom=0.8, top=0.4)
    cell = size + 1.2 - 0.75 - 0.9
    vmax = float(np.abs(M).max()) or 1.0
    im = ax.imshow(M, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -vmax, vmax),
                   interpolation="nearest")
    im.set_gid("violation_map")
    fig.colorbar(im, ax=ax, shrink=0.8, fraction=0.3 / cell, pad=0.15 / cell,
                 label="C5 margin / ā_i  (+ upper, − lower)")
    ax.set_xticks(range(len(atoms)), [str(k) for k in atoms], fontsize=7, rotation=90)
    ax.set_yticks(range(len(atoms)), [str(k) for k in atoms], fontsize=7)
    ax.set_xlabel("j (inactive atom)")
    ax.set_ylabel("i (varying atom)")
    marks: dict[tuple[int, int], str] = {}
    for v in report.violations:
        if v.label == "hierarchy" and v.i in pos and v.j in pos:
            marks[(v.i, v.j)] = "H"
    for lab in report.labels:
        if lab.j is not None and lab.i in pos and lab.j in pos and lab.label in LABEL_MARK:
            marks.setdefault((lab.i, lab.j), LABEL_MARK[lab.label])
            marks.setdefault((lab.j, lab.i), LABEL_MARK[lab.label])
    for (i, j), text in marks.items():
        ax.text(pos[j], pos[i], text, ha="center", va="center", fontsize=7, gid="mark")
    ax.set_title(f"C5 violations among the top {len(atoms)} atoms (clustered)", fontsize=10)
    fig.dictopt_atoms = atoms  # type: ignore[attr-defined]
    return fig


def pair_category(report: CheckReport) -> dict[tuple[int, int], str]:
    """Unordered pair → its most telling label (hierarchy > C5 > absorption > antipodal > dup)."""
    rank = {"hierarchy": 0, "C5": 1, "absorption": 2, "antipodal": 3, "duplicate": 4}
    out: dict[tuple[int, int], str] = {}

    def put(i: int, j: int, cat: str) -> None:
        key = (min(i, j), max(i, j))
        if key not in out or rank[cat] < rank[out[key]]:
            out[key] = cat

    for v in report.violations:
        if v.condition == "C5" and v.i is not None and v.j is not None:
            put(v.i, v.j, "hierarchy" if v.label == "hierarchy" else "C5")
    for lab in report.labels:
        if lab.j is not None and lab.label in rank:
            put(lab.i, lab.j, lab.label)
    return out


CATEGORY_STYLE = {
    "hierarchy": ("tab:red", "hierarchy (strict C5)"),
    "C5": ("tab:orange", "C5 violated"),
    "absorption": ("tab:purple", "absorption signature"),
    "antipodal": ("tab:green", "dense antipodal (C6)"),
    "duplicate": ("tab:brown", "duplicate"),
    "other": ("0.6", "other candidate"),
}


def cooccurrence(pd: PairData) -> float:
    """``|S_i ∩ S_j| / min(|S_i|, |S_j|)``: 1 for a strict hierarchy, 0 for exclusive atoms."""
    low = min(pd.active_i, pd.active_j)
    return pd.coactive / low if low else math.nan


def cooccurrence_scatter(pairs: list[PairData], report: CheckReport) -> Figure:
    """Co-occurrence against decoder cosine for candidate pairs, coloured by label.

    Each category is one scatter artist with gid ``"pairs:<category>"``.
    """
    if not pairs:
        return note_figure("No candidate pairs (no C5 violations and no labelled pairs).")
    cats = pair_category(report)
    fig = new_figure(7.6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for pd in pairs:
        key = (min(pd.i, pd.j), max(pd.i, pd.j))
        groups[cats.get(key, "other")].append((pd.cos, cooccurrence(pd)))
    for cat in CATEGORY_STYLE:
        if cat not in groups:
            continue
        xy = np.array(groups[cat])
        colour, name = CATEGORY_STYLE[cat]
        ax.scatter(xy[:, 0], xy[:, 1], s=16, c=colour, label=f"{name} ({len(xy)})",
                   gid=f"pairs:{cat}", alpha=0.8)
    ax.set_xlabel("decoder cosine c_ij")
    ax.set_ylabel("co-occurrence |S_i ∩ S_j| / min(|S_i|, |S_j|)")
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    legend = legend_outside(ax)
    ax.set_title("Candidate pairs: co-occurrence vs decoder cosine", fontsize=10)
    set_margins(fig, left=0.8, right=legend_inches(legend)[0] + 0.3, bottom=0.6, top=0.4)
    return fig


def condition_scores(report: CheckReport) -> dict[str, np.ndarray]:
    """Per-atom C1–C4 scores, each relative to its tolerance's natural scale.

    ``C1``: largest KKT violation / λ. ``C2 tangential`` and ``C2 radial``:
    ``|·| / (λ max(ā_k, floor))``. ``C4``: ``min_n a_kn / ā_k`` (0 for dead atoms).
    """
    lam = float(report.summary["lam"])
    rows = report.atoms
    mean = np.array([r["mean_code"] or 0.0 for r in rows], dtype=float)
    floor = max(1e-9 * float(mean.max()) if mean.size else 0.0, 1e-300)
    scale = lam * np.maximum(mean, floor)
    def col(name: str) -> np.ndarray:
        return np.array([r.get(name) or 0.0 for r in rows], dtype=float)

    with np.errstate(divide="ignore", invalid="ignore"):
        c4 = np.where(mean > 0, col("min_code") / np.where(mean > 0, mean, 1), 0.0)
    return {
        "C1 KKT / λ": col("kkt_violation"),
        "C2 tangential / λā": np.abs(col("stationarity_tangential")) / scale,
        "C2 radial / λā": np.abs(col("stationarity_radial")) / scale,
        "C4 min a / ā": c4,
    }


def condition_bars(report: CheckReport, top: int = 20) -> Figure:
    """Horizontal bars of the per-atom C1–C4 scores for the ``top`` worst atoms (one panel
    each; gids ``"bars:<name>"``), with the tolerance of each condition as a dashed line."""
    scores = condition_scores(report)
    if not report.atoms:
        return note_figure("The report lists no atoms.")
    tol = report.summary.get("tolerances") or {}
    tols = {"C1 KKT / λ": tol.get("kkt_rel", 1e-6), "C2 tangential / λā": tol.get("stat_rel", 1e-5),
            "C2 radial / λā": tol.get("stat_rel", 1e-5), "C4 min a / ā": tol.get("pair_rel", 1e-6)}
    norm = np.zeros(len(report.atoms))
    for name, v in scores.items():
        norm = np.maximum(norm, v / tols[name])
    order = np.argsort(-norm, kind="stable")[:top]
    fig = new_figure(11.0, 0.9 + 0.22 * len(order))
    axes = fig.subplots(1, 4, sharey=True)
    # top: the title and the panels' titles; between panels: half a tick label each side
    set_margins(fig, left=0.75, right=0.25, bottom=0.35, top=0.6, wspace=0.35, ncols=4)
    labels = [str(report.atoms[k]["k"]) for k in order]
    for ax, (name, v) in zip(axes, scores.items(), strict=True):
        # zeros (e.g. C4 of atoms that are off somewhere) sit at a floor 1000× below the
        # tolerance, so that the log axis spans what matters rather than 1e-300
        floor = tols[name] * 1e-3
        vals = np.maximum(v[order], floor)
        ax.barh(range(len(order)), vals, color=np.where(vals > tols[name], "tab:red", "tab:blue"),
                gid=f"bars:{name}")
        ax.axvline(tols[name], ls="--", color="k", lw=0.8)
        ax.set_xscale("log")
        # decades only: the scores span many decades, where minor ticks carry no labels
        # and cost more to lay out than the rest of the figure
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlim(left=floor)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].set_yticks(range(len(order)), labels)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("atom")
    fig.suptitle(f"Per-atom conditions, {len(order)} worst atoms (red: above tolerance)",
                 fontsize=10)
    return fig
