"""Diagnostic plots and the HTML report (matplotlib Agg; no pyplot global state).

Modules: :mod:`.hull` (pair data streamed from a source, the pair hull plot), :mod:`.maps`
(violation map, co-occurrence scatter, per-atom bars), :mod:`.curves` (wide limit, 1-D model,
training), :mod:`.html` (``write_report``), :mod:`.figure` (PNG/base64 helpers).
"""

from dictopt.plots.figure import save_png, to_base64, to_png
from dictopt.plots.html import build_figures, load_check, load_wide, report_html, write_report
from dictopt.plots.hull import PairData, hull_plot, pair_data

__all__ = [
    "PairData",
    "build_figures",
    "hull_plot",
    "load_check",
    "load_wide",
    "pair_data",
    "report_html",
    "save_png",
    "to_base64",
    "to_png",
    "write_report",
]
