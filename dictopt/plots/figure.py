"""Figures without pyplot's global state: every plot builds a :class:`Figure` on an Agg canvas.

Plot functions return the :class:`~matplotlib.figure.Figure` so that tests (and users) can
inspect its artists; :func:`to_png` / :func:`to_base64` / :func:`save_png` turn it into bytes.
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
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


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
