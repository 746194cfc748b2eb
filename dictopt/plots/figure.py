"""Figures without pyplot's global state: every plot builds a :class:`Figure` on an Agg canvas.

Plot functions return the :class:`~matplotlib.figure.Figure` so that tests (and users) can
inspect its artists; :func:`to_png` / :func:`to_base64` / :func:`save_png` turn it into bytes.

*Layout.* Figures have no layout engine: each plot sets its margins in inches with
:func:`set_margins` (room for tick labels, axis labels and titles at their fixed font sizes),
widened by the measured size of a legend placed outside the axes. Constrained layout measured
every tick label of every axes several times per figure, about 40 % of a report's rendering
time (``tests/test_plots.py`` checks that every label stays inside the figure and clear of
other axes).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.legend import Legend

DPI = 100


def new_figure(width: float = 6.0, height: float = 4.5) -> Figure:
    """A fresh figure (inches) attached to an Agg canvas; no pyplot state is touched."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def legend_inches(legend: Legend | None) -> tuple[float, float]:
    """Width and height of a legend in inches (its text measured once; 0 without one)."""
    if legend is None:
        return 0.0, 0.0
    fig = legend.figure
    box = legend.get_window_extent(fig.canvas.get_renderer())
    return box.width / fig.dpi, box.height / fig.dpi


def set_margins(
    fig: Figure, *, left: float, right: float, bottom: float, top: float,
    wspace: float = 0.0, hspace: float = 0.0, ncols: int = 1, nrows: int = 1,
) -> None:
    """Place the figure's subplot grid with margins in inches: ``left``/``right``/``bottom``/
    ``top`` from the figure's edges, ``wspace``/``hspace`` between the ``ncols`` columns and
    ``nrows`` rows (inches too; matplotlib's own ``wspace`` is a fraction of the mean axes
    width)."""
    width, height = fig.get_size_inches()
    # a figure too small for its margins keeps a tenth of each side for the axes
    scale_w = min(1.0, 0.9 * width / max(left + right + (ncols - 1) * wspace, 1e-9))
    scale_h = min(1.0, 0.9 * height / max(top + bottom + (nrows - 1) * hspace, 1e-9))
    left, right, wspace = left * scale_w, right * scale_w, wspace * scale_w
    top, bottom, hspace = top * scale_h, bottom * scale_h, hspace * scale_h
    cell_w = max((width - left - right - (ncols - 1) * wspace) / ncols, 1e-9)
    cell_h = max((height - top - bottom - (nrows - 1) * hspace) / nrows, 1e-9)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace / cell_w, hspace=hspace / cell_h)


def legend_outside(ax: Axes, *, where: str = "right", ncol: int = 1, **kwargs: Any) -> Legend:
    """The axes' legend placed outside its data area (right of it, or below it), so that it
    never hides data; ``kwargs`` go to :meth:`Axes.legend` (e.g. ``handles``, ``title``)."""
    kwargs.setdefault("fontsize", 7)
    if where == "below":
        return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol,
                         borderaxespad=0.0, **kwargs)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=ncol,
                     borderaxespad=0.0, **kwargs)


def note_figure(text: str, width: float = 6.0, height: float = 1.2) -> Figure:
    """A small figure that only states why a plot is missing."""
    fig = new_figure(width, height)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10)
    return fig


def to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def to_base64(fig: Figure, dpi: int = DPI) -> str:
    """Base64 PNG (for ``<img src="data:image/png;base64,...">``)."""
    return base64.b64encode(to_png(fig, dpi)).decode("ascii")


def save_png(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write a figure as PNG; returns the path."""
    from dictopt.atomic import write_bytes

    return write_bytes(path, to_png(fig, dpi))
