"""The pair hull plot, the theory's signature figure (THEORY §2 C5, the two-hull picture).

For atoms ``i, j`` with means ``ā_i, ā_j`` over all points, the normalised responses are
``ã_i = a_i / ā_i − 1`` (and ``ã_j``). C5 reads, for the ordered pair ``(i, j)``,
``L_ij ≤ (1 − c_ij) ā_i ≤ H_ij`` with ``H_ij, L_ij`` the max and min of ``a_i`` over the points
where ``j`` is inactive; dividing by ``ā_i`` gives ``−c_ij ∈ [L_ij/ā_i − 1, H_ij/ā_i − 1]``:
the point ``−c_ij`` must lie in the hull (a segment) of ``ã_i`` over the ``j``-inactive points.
Those points sit on the edge ``ã_j = −1`` of the scatter, so the segment is drawn there, and the
swapped condition on the edge ``ã_i = −1``. (THEORY writes ``ã = (a − ā)/(ā − min a)``, which
agrees when ``min_n a_in = 0``; dividing by ``ā_i`` is the form that is right in general.)

:func:`pair_data` streams a source once for any number of pairs, keeping exact edge extremes
(and the points attaining them), co-activity counts and a shared reservoir subsample of the
points; :func:`hull_plot` draws one pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure

from dictopt.check.report import CheckReport, Violation
from dictopt.plots.figure import legend_outside, new_figure
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

F64 = torch.float64
INF = math.inf


class PairData(NamedTuple):
    """Everything the hull plot of the pair ``(i, j)`` needs, in raw (canonical) code units."""

    i: int
    j: int
    n: int
    """Number of points streamed."""
    cos: float
    """``c_ij = d_i · d_j``."""
    tau: float
    """Inactivity threshold: ``a ≤ τ`` is inactive."""
    mean_i: float
    mean_j: float
    active_i: int
    active_j: int
    coactive: int
    """Points where both atoms are active."""
    n_off_j: int
    """Points where ``j`` is inactive (the edge carrying the hull of ``a_i``)."""
    n_off_i: int
    lo_i: float
    """``L_ij``: min of ``a_i`` where ``j`` is inactive (NaN when ``j`` is never inactive)."""
    hi_i: float
    """``H_ij``: max of ``a_i`` where ``j`` is inactive."""
    lo_j: float
    """``L_ji``: min of ``a_j`` where ``i`` is inactive."""
    hi_j: float
    """``H_ji``."""
    extremes: np.ndarray
    """``[6, 2]`` raw points ``(a_i, a_j)`` attaining ``lo_i, hi_i, lo_j, hi_j, max a_i,
    max a_j`` (rows are NaN where undefined)."""
    sample: np.ndarray | None
    """``[s, 2]`` uniform reservoir subsample of raw ``(a_i, a_j)`` (None when not kept)."""

    def normalised(self, values: np.ndarray | float, atom: str = "i") -> Any:
        """``a / ā − 1`` for atom ``"i"`` or ``"j"`` (NaN when the atom is dead)."""
        mean = self.mean_i if atom == "i" else self.mean_j
        if mean <= 0:
            return np.asarray(values, dtype=float) * np.nan
        return np.asarray(values, dtype=float) / mean - 1.0


def _resolve_codes(dictionary: Dictionary, codes: Any):  # noqa: ANN202
    from dictopt.check.checker import make_coder

    return make_coder(dictionary, codes)


def _check_pairs(pairs: Sequence[tuple[int, int]], K: int) -> list[tuple[int, int]]:
    out = []
    for p in pairs:
        if len(p) != 2:
            raise DictoptInputError(f"pairs: expected (i, j) tuples, got {p!r}")
        i, j = int(p[0]), int(p[1])
        if not (0 <= i < K and 0 <= j < K) or i == j:
            raise DictoptInputError(f"pairs: ({i}, {j}) is not a pair of distinct atoms < K={K}")
        out.append((i, j))
    return out


def pair_data(
    dictionary: Dictionary,
    source: Any,
    pairs: Sequence[tuple[int, int]],
    *,
    codes: Any = "own",
    tau: float = 0.0,
    sample: int = 20_000,
    sample_pairs: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[PairData]:
    """Stream ``source`` once and collect :class:`PairData` for each pair.

    Parameters
    ----------
    dictionary:
        The canonical dictionary (atoms give ``c_ij``; its encoder gives the codes).
    source:
        Activations (array, ``.npy``, shard folder or source).
    pairs:
        Ordered pairs ``(i, j)``; the data cover both orders.
    codes:
        ``"own"``, ``"optimal"``, a callable or given codes ``[N, K]`` (as for ``check``).
    tau:
        Inactivity threshold (use the report's ``summary["tau"]``).
    sample:
        Reservoir size (points kept for the scatter; the extremes are kept exactly anyway).
    sample_pairs:
        Pairs that keep a subsample (default: all). Others only get exact statistics, which
        keeps memory small when many pairs are scanned for the co-occurrence scatter.
    seed:
        Seed of the reservoir.

    An encoder with a method ``encode_columns(x, idx) -> raw codes [N, len(idx)]`` (exact for
    encoders whose latents are computed independently, like ReLU and JumpReLU SAEs) is asked
    only for the atoms of ``pairs`` when ``codes="own"``, which makes the pass ``O(N d P)``
    instead of ``O(N d K)``.

    Returns
    -------
    list[PairData]
        In the order of ``pairs``. Memory: ``O(P + sample × atoms)``, independent of N.
    """
    from dictopt.check.checker import _codes_for
    from dictopt.data.sources import as_source

    K = dictionary.K
    pairs = _check_pairs(pairs, K)
    if not pairs:
        return []
    if sample < 0:
        raise DictoptInputError(f"sample: must be ≥ 0, got {sample}")
    _, coder = _resolve_codes(dictionary, codes)
    src = as_source(source, dtype=dictionary.dtype)
    if src.d != dictionary.d:
        raise DictoptInputError(
            f"activations: width {src.d} but the dictionary has d = {dictionary.d}"
        )
    union = sorted({k for p in pairs for k in p})
    col = {k: c for c, k in enumerate(union)}
    U = torch.tensor(union, dtype=torch.long, device=dictionary.device)
    pi = torch.tensor([col[i] for i, _ in pairs], dtype=torch.long)
    pj = torch.tensor([col[j] for _, j in pairs], dtype=torch.long)
    wanted = pairs if sample_pairs is None else _check_pairs(sample_pairs, K)
    s_atoms = sorted({k for p in wanted for k in p} & set(union))
    s_cols = torch.tensor([col[k] for k in s_atoms], dtype=torch.long)
    P = len(pairs)

    total = torch.zeros(len(union), dtype=F64)
    active = torch.zeros(len(union), dtype=torch.long)
    coact = torch.zeros(P, dtype=torch.long)
    off_j = torch.zeros(P, dtype=torch.long)
    off_i = torch.zeros(P, dtype=torch.long)
    # six tracked extremes per pair: lo_i, hi_i (j off), lo_j, hi_j (i off), max a_i, max a_j
    sign = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, 1.0], dtype=F64)
    best = torch.full((P, 6), -INF, dtype=F64)  # sign × value, maximised
    points = torch.full((P, 6, 2), math.nan, dtype=F64)
    gen = torch.Generator().manual_seed(seed)
    keys = torch.empty(0, dtype=F64)
    kept = torch.empty(0, len(s_atoms), dtype=F64)
    # Fast path: an encoder whose latents are computed independently (ReLU, JumpReLU, ...)
    # may expose ``encode_columns(x, idx)``; then only the needed columns are computed.
    columns = None
    if isinstance(codes, str) and codes == "own" and dictionary.encoder is not None:
        columns = getattr(dictionary.encoder, "encode_columns", None)
    n = 0
    for chunk in src.iter_chunks(progress=progress, desc="pair data"):
        x = chunk.data.to(device=dictionary.device)
        if columns is not None:
            A = columns(x, U).to(F64) * dictionary.code_scale[U].to(F64)
            if bool((A < -1e-9).any()) or not bool(torch.isfinite(A).all()):
                raise DictoptInputError(
                    f"codes: encode_columns returned negative or non-finite codes ({chunk.label})"
                )
            A = A.clamp(min=0).cpu()
        else:
            a = _codes_for(coder, x, chunk.start, K, dictionary.dtype)
            A = a[:, U].to(device="cpu", dtype=F64)
        m = A.shape[0]
        n += m
        total += A.sum(0)
        on = A > tau
        active += on.sum(0)
        ai, aj = A[:, pi], A[:, pj]
        on_i, on_j = on[:, pi], on[:, pj]
        coact += (on_i & on_j).sum(0)
        off_j += (~on_j).sum(0)
        off_i += (~on_i).sum(0)
        masks = (~on_j, ~on_j, ~on_i, ~on_i, None, None)
        vals = (ai, ai, aj, aj, ai, aj)
        for e in range(6):
            v = vals[e] * sign[e]
            if masks[e] is not None:
                v = torch.where(masks[e], v, torch.full_like(v, -INF))
            top, idx = v.max(dim=0)
            better = top > best[:, e]
            if bool(better.any()):
                best[better, e] = top[better]
                rows = idx[better]
                cols_b = better.nonzero().flatten()
                points[better, e, 0] = ai[rows, cols_b]
                points[better, e, 1] = aj[rows, cols_b]
        if sample and s_atoms:
            ck = torch.rand(m, generator=gen, dtype=F64)
            keys = torch.cat([keys, ck])
            kept = torch.cat([kept, A[:, s_cols]])
            if keys.numel() > sample:
                keep = torch.topk(keys, sample, largest=False).indices
                keys, kept = keys[keep], kept[keep]
    if n == 0:
        raise DictoptInputError("activations: no data (0 rows)")
    mean = total / n
    atoms = dictionary.atoms.to(F64)
    s_pos = {k: c for c, k in enumerate(s_atoms)}
    wanted_set = set(wanted)
    out = []
    for p, (i, j) in enumerate(pairs):
        ext = best[p] * sign  # back to values (−inf·sign where undefined)
        vals = [float(v) if math.isfinite(float(v)) else math.nan for v in ext]
        smp = None
        if sample and (i, j) in wanted_set:
            smp = torch.stack([kept[:, s_pos[i]], kept[:, s_pos[j]]], dim=1).numpy().copy()
        out.append(PairData(
            i=i, j=j, n=n, cos=float(atoms[i] @ atoms[j]), tau=float(tau),
            mean_i=float(mean[col[i]]), mean_j=float(mean[col[j]]),
            active_i=int(active[col[i]]), active_j=int(active[col[j]]),
            coactive=int(coact[p]), n_off_j=int(off_j[p]), n_off_i=int(off_i[p]),
            lo_i=vals[0], hi_i=vals[1], lo_j=vals[2], hi_j=vals[3],
            extremes=points[p].numpy().copy(), sample=smp,
        ))
    return out


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


def _num(v: float, digits: int = 3) -> str:
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
    fig.suptitle(f"atoms {i} and {j} (c = {_num(c)}): {verdict.text}{dec}", fontsize=10,
                 wrap=True)
    ax.set_xlabel(f"ã_{i} = a_{i} / ā_{i} − 1   (atom {i}'s normalised response)")
    ax.set_ylabel(f"ã_{j} = a_{j} / ā_{j} − 1")
    if pd.mean_i <= 0 or pd.mean_j <= 0:
        dead = i if pd.mean_i <= 0 else j
        ax.set_axis_off()
        fig.text(0.5, 0.4, f"atom {dead} is never active: no normalised responses",
                 ha="center", va="center")
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
        name = i if atom == "i" else j
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
            what = (f"the single point {_num(seg[0], 3)}" if one_point
                    else f"[{_num(seg[0], 3)}, {_num(seg[1], 3)}]")
            ax.plot(*xy, lw=7, color=colour, alpha=0.75, solid_capstyle="round",
                    marker="s" if one_point else None, ms=13, gid=f"hull_{atom}",
                    zorder=5 if one_point else 3,
                    clip_on=False,
                    label=f"hull of ã_{name} where {other} is off\n(on {edge}): {what}")
        where_c = (-c, -1.0) if atom == "i" else (-1.0, -c)
        ax.plot(*where_c, marker="X", ms=13, color="tab:green" if inside else "tab:red",
                mec="k", mew=0.8, ls="none", gid=f"c_marker_{atom}", zorder=7, clip_on=False,
                label=f"−c = {_num(-c)}: {'inside' if inside else 'OUTSIDE'} the hull of "
                      f"ã_{name}\n→ ({name}|{other}) {'holds' if inside else 'violated'}")
    legend_outside(ax, fontsize=8, title=f"N = {pd.n}; active: atom {i} on {pd.active_i},\n"
                   f"atom {j} on {pd.active_j}, both on {pd.coactive}", title_fontsize=8)
    return fig
