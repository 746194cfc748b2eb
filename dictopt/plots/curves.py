"""Curves: the wide limit (loss vs K against ``L_∞``, splitting), the 1-D antipodal model and
training logs (THEORY §3, C6)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from dictopt.plots.figure import (
    legend_inches,
    legend_outside,
    new_figure,
    note_figure,
    set_margins,
)
from dictopt.validation import DictoptInputError


def _sweep_dict(sweep: Any) -> dict[str, Any]:
    if hasattr(sweep, "to_dict"):
        sweep = sweep.to_dict()
    if not isinstance(sweep, dict) or "rows" not in sweep or "l_inf" not in sweep:
        raise DictoptInputError(
            "wide: expected a dictopt.wide sweep (SweepResult or its wide.json with 'l_inf' "
            "and 'rows')"
        )
    return sweep


def wide_curves(sweep: Any) -> Figure:
    """Loss against width with the bound ``L_∞`` (left), and how the best dictionary at each
    width splits features: ray ownership, mean split count, C5 violations (right).

    Artists: gid ``"L_inf"`` (the bound), ``"best"``, ``"median"``, ``"runs"`` (every seed),
    ``"limit_init"``, ``"ray_ownership"``, ``"split_mean"``.
    """
    s = _sweep_dict(sweep)
    rows = s["rows"]
    if not rows:
        return note_figure("The sweep has no widths.")
    K = np.array([r["K"] for r in rows], dtype=float)
    fig = new_figure(11.0, 4.2)
    ax, ax2 = fig.subplots(1, 2)
    runs = [(r["K"], v) for r in rows for v in r["losses"]]
    ax.scatter([k for k, _ in runs], [v for _, v in runs], s=10, c="0.6", gid="runs",
               label="each seed")
    ax.plot(K, [r["best"] for r in rows], "o-", color="tab:blue", gid="best", label="best")
    ax.plot(K, [r["median"] for r in rows], "s--", color="tab:cyan", ms=4, gid="median",
            label="median")
    li = [(r["K"], r["limit_init_loss"]) for r in rows if r.get("limit_init_loss") is not None]
    if li:
        ax.plot([k for k, _ in li], [v for _, v in li], "D", color="tab:green", gid="limit_init",
                label="started at the limit dictionary")
    ax.axhline(s["l_inf"], color="tab:red", ls="--", gid="L_inf", label=f"L_∞ = {s['l_inf']:.4g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width K")
    ax.set_ylabel("loss (optimal codes)")
    ax.set_title(f"Wide limit: N = {s.get('n')}, λ = {s.get('lam'):.3g}, "
                 f"{s.get('n_rays')} limit rays", fontsize=10)
    below = legend_outside(ax, where="below", ncol=3)
    ax2.plot(K, [r["ray_ownership"] for r in rows], "o-", color="tab:purple",
             gid="ray_ownership", label="ray ownership")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("width K")
    ax2.set_ylabel("fraction of limit rays owned")
    splits = [(r["K"], float(np.mean(r["split_counts"]))) for r in rows if r.get("split_counts")]
    c5 = [(r["K"], r["c5_violations"]) for r in rows if r.get("c5_violations") is not None]
    if splits or c5:
        tw = ax2.twinx()
        if splits:
            tw.plot([k for k, _ in splits], [v for _, v in splits], "s--", color="tab:orange",
                    gid="split_mean", label="mean atoms per true feature")
        if c5:
            tw.plot([k for k, _ in c5], [v for _, v in c5], "^:", color="tab:red",
                    gid="c5_count", label="C5 violations (best seed)")
        tw.set_ylabel("count")
    handles = ax2.get_legend_handles_labels()[0] + (
        tw.get_legend_handles_labels()[0] if splits or c5 else [])
    below2 = legend_outside(ax2, where="below", ncol=2, handles=handles)
    ax2.set_title("Feature splitting with width", fontsize=10)
    # the legends hang 20 % of the axes' height below them (room for the tick labels and
    # the x label): bottom = 0.2 (height − top − bottom) + legend + margin
    height, top = float(fig.get_size_inches()[1]), 0.4
    legend_h = max(legend_inches(below)[1], legend_inches(below2)[1])
    set_margins(fig, left=0.8, right=0.8 if splits or c5 else 0.3, top=top,
                bottom=(0.2 * (height - top) + legend_h + 0.1) / 1.2, wspace=0.95, ncols=2)
    return fig


def one_d_plot(x: Any, lam: float, dictionary: Any | None = None, direction: Any | None = None,
               bins: int = 80) -> Figure:
    """The 1-D antipodal model (THEORY C6): histogram of the projections ``p = x·w`` with the
    Huber location ``β*`` (gid ``"location"``), the dead zone ``β* ± λ`` and the predicted
    densities of the atoms ``+w`` and ``−w``; a dictionary's bias location when given
    (gid ``"dictionary_bias"``)."""
    from dictopt.wide.one_d import predict_one_d

    pred = predict_one_d(x, lam, direction)
    X = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    p = (X @ pred.direction).numpy()
    beta = pred.location
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(p, bins=bins, color="0.6", gid="hist")
    ax.axvline(beta, color="k", lw=1.5, gid="location", label=f"β* = {beta:.3g}")
    ax.axvspan(beta - lam, beta + lam, color="0.9", zorder=0, label="dead zone β* ± λ")
    ax.axvspan(beta + lam, p.max(), color="tab:blue", alpha=0.12, zorder=0,
               label=f"+w active ({pred.density_plus:.0%})")
    ax.axvspan(p.min(), beta - lam, color="tab:orange", alpha=0.12, zorder=0,
               label=f"−w active ({pred.density_minus:.0%})")
    if dictionary is not None:
        b = float(dictionary.bias.to(torch.float64) @ pred.direction)
        ax.axvline(b, color="tab:red", ls="--", gid="dictionary_bias",
                   label=f"dictionary bias · w = {b:.3g}")
    ax.set_xlabel("projection p = x · w")
    ax.set_ylabel("points")
    ax.set_title(f"1-D model: antipodal pair (cos {pred.pair_cosine:.3f}), "
                 f"L_∞ = {pred.l_inf:.4g}", fontsize=10)
    legend = legend_outside(ax)
    set_margins(fig, left=0.8, right=legend_inches(legend)[0] + 0.3, bottom=0.6, top=0.4)
    return fig


TRAIN_FIELDS = ("loss", "mse", "l0", "explained_variance", "dead_fraction")


def training_curves(log: Any) -> Figure:
    """Training curves from the SAE trainer's log (``dictionary.meta["train_log"]``: step,
    loss, mse, l0, explained_variance, dead_fraction) or a classical solver's ``history``
    (a list of losses per iteration). One panel per recorded metric, gid ``"train:<name>"``."""
    if isinstance(log, dict) and "train_log" in log:
        log = log["train_log"]
    if isinstance(log, dict) and "history" in log and "step" not in log:
        log = log["history"]
    if isinstance(log, list | tuple):
        log = {"step": list(range(1, len(log) + 1)), "loss": list(log)}
    if not isinstance(log, dict) or "step" not in log:
        raise DictoptInputError("training log: expected the trainer's log dict or a history list")
    fields = [f for f in TRAIN_FIELDS if log.get(f) and len(log[f]) == len(log["step"])]
    if not fields:
        return note_figure("The training log has no recorded metrics.")
    fig = new_figure(3.2 * len(fields), 3.0)
    axes = fig.subplots(1, len(fields), squeeze=False)[0]
    # top: the title and the panels' titles; left of each panel: its tick labels
    set_margins(fig, left=0.7, right=0.2, bottom=0.5, top=0.6, wspace=0.7, ncols=len(fields))
    for ax, name in zip(axes, fields, strict=True):
        vals = [v if v is not None else math.nan for v in log[name]]
        ax.plot(log["step"], vals, color="tab:blue", gid=f"train:{name}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        if name in ("loss", "mse") and min(vals) > 0:
            ax.set_yscale("log")
    fig.suptitle("Training curves", fontsize=10)
    return fig
