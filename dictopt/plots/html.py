"""The report: a check (and optionally a wide sweep) as self-contained HTML, Markdown or JSON.

:func:`write_report` is the entry point (used by ``dictopt report`` and the demo). The HTML
embeds every figure as a base64 PNG and needs no network. A tiny inline script records, on
load, how many images decoded (``<body data-images-ok=… data-images-total=…>``), which the
browser test reads from a headless Chromium's DOM dump.
"""

from __future__ import annotations

import html
import json
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib.figure import Figure

from dictopt.atomic import write_text
from dictopt.check.report import CONDITIONS, LABELS, SCHEMA_VERSION, CheckReport, Violation
from dictopt.plots.figure import to_base64
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)
FORMATS = ("html", "json", "md")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise DictoptInputError(f"{what}: {path}: no such file or folder")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DictoptInputError(f"{what}: {path} is not valid JSON ({err})") from None


def load_check(path: str | Path) -> CheckReport:
    """A :class:`CheckReport` from ``dictopt check --json`` output (a file, or a folder holding
    ``check.json`` / ``report.json`` / a single check JSON), moves restored
    (:meth:`CheckReport.from_json`)."""
    p = Path(path)
    if p.is_dir():
        names = [p / "check.json", p / "report.json"]
        found = [q for q in names if q.is_file()]
        if not found:
            found = sorted(p.glob("*.json"))
            found = [q for q in found if '"dictopt.check/' in q.read_text()[:200]]
        if len(found) != 1:
            raise DictoptInputError(
                f"check: {p} holds {len(found)} check JSON files; name the file"
            )
        p = found[0]
    data = _read_json(p, "check")
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith("dictopt.check/"):
        raise DictoptInputError(
            f"check: {p} is not a dictopt check report (expected schema {SCHEMA_VERSION!r}; "
            "write one with `dictopt check ... --json FILE`)"
        )
    try:
        return CheckReport.from_json(data)
    except (KeyError, TypeError, ValueError) as err:
        raise DictoptInputError(f"check: {p} is missing field {err} (schema mismatch)") from None


def load_wide(path: str | Path) -> dict[str, Any]:
    """A wide sweep (``wide.json`` written by ``dictopt wide``; a folder holding it is fine)."""
    p = Path(path)
    if p.is_dir():
        p = p / "wide.json"
    data = _read_json(p, "wide")
    if not isinstance(data, dict) or "rows" not in data or "l_inf" not in data:
        raise DictoptInputError(f"wide: {p} is not a dictopt wide sweep (no 'l_inf'/'rows')")
    return data


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


class ReportFigure(NamedTuple):
    """One figure of the report, or the note saying why it is missing."""

    key: str
    title: str
    figure: Figure | None
    note: str = ""
    caption: str = ""
    """One sentence under the plot: what it shows and how to read it."""


def top_pairs(report: CheckReport, top: int) -> list[tuple[int, int]]:
    """The ``top`` unordered pairs with the largest C5 violations, as ordered ``(i, j)``."""
    seen: set[tuple[int, int]] = set()
    out = []
    for v in report.violations:
        if v.condition != "C5" or v.i is None or v.j is None:
            continue
        key = (min(v.i, v.j), max(v.i, v.j))
        if key not in seen:
            seen.add(key)
            out.append((v.i, v.j))
        if len(out) >= top:
            break
    return out


def candidate_pairs(report: CheckReport, limit: int) -> list[tuple[int, int]]:
    """Unordered pairs that are violated or labelled (for the co-occurrence scatter)."""
    seen: dict[tuple[int, int], None] = {}
    for v in report.violations:
        if v.condition == "C5" and v.i is not None and v.j is not None:
            seen.setdefault((min(v.i, v.j), max(v.i, v.j)))
    for lab in report.labels:
        if lab.j is not None:
            seen.setdefault((min(lab.i, lab.j), max(lab.i, lab.j)))
    return list(seen)[:limit]


def build_figures(
    report: CheckReport,
    *,
    data: Any | None = None,
    dictionary: Dictionary | None = None,
    wide: Any | None = None,
    top: int = 8,
    codes: Any | None = None,
    sample: int = 20_000,
    max_scatter_pairs: int = 500,
    progress: bool = False,
) -> list[ReportFigure]:
    """Every figure of the report (notes where the inputs do not allow one).

    ``codes`` defaults to the mode the check used (``summary["codes"]``); given codes cannot
    be recomputed, so they fall back to the dictionary's own encoder with a note.
    """
    from dictopt.plots.curves import training_curves, wide_curves
    from dictopt.plots.maps import condition_bars, violation_map

    figs: list[ReportFigure] = []
    pairs = top_pairs(report, top)
    have_codes = data is not None and dictionary is not None
    if have_codes:
        if dictionary.K != report.summary["K"] or dictionary.d != report.summary["d"]:
            raise DictoptInputError(
                f"dictionary: K={dictionary.K}, d={dictionary.d} but the check has "
                f"K={report.summary['K']}, d={report.summary['d']}"
            )
        if dictionary.lam is None:
            dictionary = dictionary.with_lam(report.summary["lam"])
    if codes is None:
        codes = report.summary.get("codes", "own")
        if codes == "given":
            codes = "own"
    figs += _pair_figures(report, pairs, dictionary if have_codes else None, data, codes,
                          max_scatter_pairs, sample, progress)
    figs.append(ReportFigure(
        "violation_map", "C5 violation map", violation_map(report, 30),
        caption="Rows i, columns j: how far the pair (i|j) is from C5's interval, relative to "
                "ā_i (red: atom i too dependent on j, blue: too independent); marked cells "
                "are reported violations." if report.by_condition("C5") else ""))
    figs.append(ReportFigure(
        "conditions", "Per-atom conditions C1–C4", condition_bars(report, 20),
        caption="The atoms with the largest per-atom scores: KKT of the codes (C1), "
                "stationarity of the atom (C2) and always-on atoms (C4), on a log scale; a red "
                "bar passes its condition's tolerance (the dashed line) and is a violation."))
    if dictionary is not None:
        meta = dictionary.meta or {}
        logd = meta.get("train_log") or meta.get("history")
        if logd:
            figs.append(ReportFigure("training", "Training curves", training_curves(logd),
                                     caption="The training log recorded with the "
                                             "dictionary."))
    if wide is not None:
        sweep = load_wide(wide) if isinstance(wide, str | Path) else wide
        figs.append(ReportFigure(
            "wide", "Wide limit", wide_curves(sweep),
            caption="Left: the best loss found at each width against the wide-limit bound "
                    "L_∞ (THEORY §3), which no width can beat. Right: how the atoms split to "
                    "own the limit's rays as the width grows."))
    antipodal = [lab for lab in report.labels if lab.label == "antipodal"]
    if antipodal and data is not None:
        figs.append(_one_d_figure(report, data, dictionary))
    return figs


def _pair_figures(
    report: CheckReport, pairs: list[tuple[int, int]], dictionary: Dictionary | None,
    data: Any | None, codes: Any, max_scatter_pairs: int, sample: int, progress: bool,
) -> list[ReportFigure]:
    """The pair hull plots and the co-occurrence scatter (``dictionary`` given only when the
    codes can be computed), or a note saying why there are none."""
    from dictopt.plots.hull import hull_plot, pair_data
    from dictopt.plots.maps import cooccurrence_scatter

    figs: list[ReportFigure] = []
    if dictionary is not None and pairs:
        cand = candidate_pairs(report, max_scatter_pairs)
        allp = list(dict.fromkeys(pairs + cand))
        pds = pair_data(dictionary, data, allp, codes=codes,
                        tau=float(report.summary.get("tau") or 0.0), sample=sample,
                        sample_pairs=pairs, progress=progress)
        by = {(pd.i, pd.j): pd for pd in pds}
        for i, j in pairs:
            figs.append(ReportFigure(f"hull_{i}_{j}", f"Pair hull plot: atoms {i} and {j}",
                                     hull_plot(by[(i, j)], report),
                                     caption=hull_caption(by[(i, j)], report)))
        figs.append(ReportFigure(
            "cooccurrence", "Co-occurrence vs decoder cosine",
            cooccurrence_scatter([by[p] for p in cand], report),
            caption="Each dot is a violated or labelled pair: how often the two atoms fire "
                    "together (1 = the rarer one never fires alone) against the cosine of "
                    "their atoms; hierarchies sit at the top, duplicates at the right."))
    elif pairs:
        note = ("Pair hull plots and the co-occurrence scatter need the codes: pass the "
                "dictionary and the activations (--dictionary DIR --activations PATH).")
        figs.append(ReportFigure("hull", "Pair hull plots", None, note))
    else:
        figs.append(ReportFigure("hull", "Pair hull plots", None,
                                 "No C5 violations: every pair satisfies the two-hull "
                                 "condition, so there is no pair to plot."))
    return figs


def _one_d_figure(report: CheckReport, data: Any, dictionary: Dictionary | None) -> ReportFigure:
    from dictopt.data.sources import as_source
    from dictopt.plots.curves import one_d_plot

    src = as_source(data)
    if src.n is None or src.n > 200_000:
        return ReportFigure("one_d", "1-D antipodal model", None,
                            "Skipped: the 1-D model plot holds the data in memory (N ≤ 200k).")
    lab = next(lab for lab in report.labels if lab.label == "antipodal")
    direction = None
    if dictionary is not None:
        direction = dictionary.atoms[lab.i].to(dtype=__import__("torch").float64)
    x = src.to_tensor().numpy()
    return ReportFigure("one_d", f"1-D antipodal model (atoms {lab.i}, {lab.j})",
                        one_d_plot(x, report.summary["lam"], dictionary, direction))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def verdict_text(report: CheckReport) -> str:
    """The verdict sentence (the triage's first line)."""
    from dictopt.check.triage import verdict

    return verdict(report.summary, len(report.violations))


def common_notes(report: CheckReport) -> list[str]:
    """Notes that apply to every plot, said once above them."""
    notes = []
    if report.summary.get("codes") == "given":
        notes.append("The check used given codes; the plots use the dictionary's own codes.")
    notes.append(
        "ã_k = a_k / ā_k − 1 is atom k's code relative to its mean over all points (−1 where "
        "the atom is off); c = d_i · d_j is the cosine of the two atoms. C5 holds for the "
        "ordered pair (i|j) exactly when −c lies in the hull of ã_i over the points where j "
        "is off (THEORY §2).")
    return notes


def hull_caption(pd: Any, report: CheckReport) -> str:
    """One sentence under a pair hull plot."""
    from dictopt.plots.hull import fmt_number, pair_verdict

    v = pair_verdict(pd, report)
    i, j = pd.i, pd.j
    if pd.n_off_j and pd.lo_i == pd.hi_i == 0.0:
        what = (f"atom {i} is never active where atom {j} is off, so its hull on the bottom "
                f"edge is the single point −1 and cannot contain −c = {fmt_number(-pd.cos)}")
    elif v.violated:
        what = "the red cross lies outside its hull"
    else:
        what = "both crosses lie inside their hulls"
    dec = (f"; the certificate lowers the loss by {v.decrease:.3g}" if v.decrease is not None
           else "")
    return (f"Atoms {i} and {j}: {v.text}: {what}{dec}. Grey dots are points, the thick "
            f"segments the two hulls on the edges where the other atom is off.")


def summary_rows(report: CheckReport) -> list[tuple[str, str]]:
    """(name, value) rows of the summary table."""
    s = report.summary
    rows = [
        ("verdict", verdict_text(report)),
        ("N, K, d", f"{s.get('N')}, {s.get('K')}, {s.get('d')}"),
        ("λ", _fmt(s.get("lam"))),
        ("codes", str(s.get("codes"))),
        ("loss (reconstruction + sparsity)",
         f"{_fmt(s.get('loss'))} ({_fmt(s.get('reconstruction'))} + {_fmt(s.get('sparsity'))})"),
        ("explained variance", _fmt(s.get("explained_variance"))),
        ("L0", _fmt(s.get("l0"))),
        ("violations", ", ".join(f"{c} {s.get('counts', {}).get(c, 0)}" for c in CONDITIONS)),
        ("labels", ", ".join(f"{k} {s.get('labels', {}).get(k, 0)}" for k in LABELS)),
        ("max KKT violation (/λ)", _fmt(s.get("max_kkt_violation"))),
        ("bias residual ‖r̄‖", _fmt(s.get("bias_residual"))),
    ]
    cap = s.get("capacity") or {}
    if cap:
        rows.append(("capacity (points with ‖r‖ > λ, total gain)",
                     f"{cap.get('points_over_lam')}, {_fmt(cap.get('total_gain'))}"))
    am = s.get("amortisation")
    if isinstance(am, dict):
        gap = _fmt(am.get("loss_gap"))
        if am.get("rows") == "sample":
            gap += (f" ± {_fmt(am.get('loss_gap_se'))} (standard error, "
                    f"{am.get('sample_size')} sampled rows)")
        rows.append(("amortisation gap (own − optimal loss)", gap))
    return rows


def _pair(v: Violation) -> str:
    if v.i is not None and v.j is not None:
        return f"({v.i}, {v.j})"
    if v.i is None and v.j is None:
        return "–"
    return f"atom {v.i if v.i is not None else v.j}"


VIOLATION_COLUMNS = ("rank", "condition", "atoms", "label", "predicted", "exact", "measured")


def violation_rows(report: CheckReport, limit: int = 50) -> list[tuple[str, ...]]:
    return [
        (str(r + 1), v.condition, _pair(v), v.label, _fmt(v.predicted_decrease),
         _fmt(v.model_decrease), _fmt(v.measured_decrease))
        for r, v in enumerate(report.violations[:limit])
    ]


_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var k = 0; k < imgs.length; k++) {
    if (imgs[k].complete && imgs[k].naturalWidth > 0) { ok++; }
  }
  document.body.dataset.imagesTotal = String(imgs.length);
  document.body.dataset.imagesOk = String(ok);
});
</script>"""

_STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 1.5em auto; color: #222;
       padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f2f2f2; }
.bad { color: #b00; font-weight: bold; } .good { color: #070; font-weight: bold; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.5em 1em; }
#triage { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1.2em; background: #fafafa; }
#triage li { margin: 0.45em 0; } .action { color: #235; }
.pct { color: #666; font-size: 0.9em; }
figure { margin: 1em 0 2.2em; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; max-width: 60em; margin-top: 0.3em; }
details { margin: 0.8em 0; } summary { cursor: pointer; font-weight: bold; font-size: 1.1em; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr));
         gap: 1em; }
.card { border: 1px solid #ccc; border-radius: 6px; padding: 0.5em 0.9em; }
.card h3 { margin: 0.2em 0; font-size: 1em; } .card img { border: none; }
.ctx { font-family: ui-monospace, monospace; font-size: 0.82em; white-space: pre-wrap;
       margin: 0.15em 0; border-bottom: 1px dotted #ddd; }
.ctx mark { background: #ffb74d; font-weight: bold; } .ctx .val { color: #a40; }
</style>"""


def _triage_html(report: CheckReport, json_href: str | None) -> list[str]:
    from dictopt.check.triage import triage

    e = html.escape
    t = triage(report)
    cls = "bad" if report.summary.get("unstable_optimum") else "good"
    out = ["<section id='triage'><h2>Triage</h2>",
           f"<p class='{cls}' id='verdict'>{e(t.verdict)}</p>"]
    if t.findings:
        out.append("<ol>")
        for f in t.findings:
            out.append(f"<li>{e(f.meaning)} <span class='action'>{e(f.action)}</span></li>")
        out.append("</ol>")
        more = t.total - len(t.findings)
        out.append("<p>" + (f"{more} smaller findings are in the violations table below. "
                            if more else "")
                   + "Decreases are in loss units; a certificate is a move that lowers the "
                   "loss by that much.</p>")
    if json_href:
        out.append(f"<p>Full report as JSON: <a id='json-link' href='{e(json_href)}' "
                   "download='check.json'>check.json</a></p>")
    out.append("</section>")
    return out


def _json_href(report: CheckReport, limit: int = 4_000_000) -> str | None:
    """The report's JSON as a ``data:`` link (self-contained), unless it is very large."""
    import base64

    text = json.dumps(report.to_json())
    if len(text) > limit:
        return None
    return "data:application/json;base64," + base64.b64encode(text.encode()).decode()


ATOM_COLUMNS = ("k", "mean_code", "active_fraction", "min_code", "max_code", "kkt_violation",
                "stationarity_tangential", "stationarity_radial", "labels")


def _atom_table(report: CheckReport, limit: int = 500) -> list[str]:
    e = html.escape
    rows = report.atoms[:limit]
    out = ["<table id='atoms'><tr>" + "".join(f"<th>{c}</th>" for c in ATOM_COLUMNS) + "</tr>"]
    for a in rows:
        cells = [", ".join(a.get(c) or []) if c == "labels" else _fmt(a.get(c))
                 for c in ATOM_COLUMNS]
        out.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    if len(report.atoms) > limit:
        out.append(f"<p>First {limit} of {len(report.atoms)} atoms (all are in the JSON).</p>")
    return out


def render_html(report: CheckReport, figures: list[ReportFigure], *,
                title: str = "dictopt report", cards: list[Any] | None = None,
                json_href: str | None = None) -> str:
    """A self-contained HTML page (images embedded as base64 PNG; no network).

    It opens with the triage (verdict and the worded findings), then the summary, the
    figures with a caption each, the feature cards (when tokens were given), and foldable
    violation and per-atom tables.
    """
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}"
             f"</title>{_STYLE}{_SCRIPT}</head><body>", f"<h1>{e(title)}</h1>"]
    parts += _triage_html(report, json_href)
    parts.append("<h2>Summary</h2><table id='summary'>")
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary_rows(report)]
    parts.append("</table>")
    parts.append("<h2>Figures</h2>")
    parts += [f"<p class='note'>{e(n)}</p>" for n in common_notes(report)]
    for f in figures:
        parts.append(f"<figure id='{e(f.key)}'><h3>{e(f.title)}</h3>")
        if f.figure is not None:
            parts.append(f"<img alt='{e(f.title)}' src='data:image/png;base64,"
                         f"{to_base64(f.figure)}'>")
        if f.caption:
            parts.append(f"<figcaption>{e(f.caption)}</figcaption>")
        if f.note:
            parts.append(f"<p class='note'>{e(f.note)}</p>")
        parts.append("</figure>")
    if cards:
        from dictopt.plots.cards import render_cards

        parts += render_cards(cards)
    rows = violation_rows(report)
    if rows:
        parts.append(f"<details id='violations-section'><summary>Ranked violations (top "
                     f"{len(rows)} of {len(report.violations)})</summary>"
                     "<p>Ranked by the exact decrease of their certificate (loss units; "
                     "positive = the loss goes down); 'measured' is the decrease measured on "
                     "the data.</p><table id='violations'><tr>"
                     + "".join(f"<th>{c}</th>" for c in VIOLATION_COLUMNS) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table></details>")
    else:
        parts.append("<p class='good' id='violations'>No violations: nothing to rank.</p>")
    if report.atoms:
        parts.append(f"<details id='atoms-section'><summary>Per-atom table ({len(report.atoms)}"
                     " atoms)</summary>")
        parts += _atom_table(report)
        parts.append("</details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(report: CheckReport, figures: list[ReportFigure], *,
                    title: str = "dictopt report") -> str:
    """Markdown: summary and violation tables; figures are listed by title (use HTML to see
    them)."""
    lines = [f"# {title}", "", f"**{verdict_text(report)}**", "", "## Summary", "",
             "| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {v.replace('|', '/')} |" for k, v in summary_rows(report)]
    lines += ["", "## Ranked violations", ""]
    rows = violation_rows(report)
    if rows:
        lines += ["| " + " | ".join(VIOLATION_COLUMNS) + " |",
                  "|" + "---|" * len(VIOLATION_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        lines.append("No violations: nothing to rank.")
    lines += ["", "## Figures", "", "Figures are embedded in the HTML format "
              "(`--format html`)."]
    for f in figures:
        lines.append(f"- {f.title}" + (f": {f.note}" if f.note else ""))
    return "\n".join(lines) + "\n"


def render_json(report: CheckReport, figures: list[ReportFigure]) -> dict[str, Any]:
    """The check report's JSON plus the verdict and the figure notes (no images)."""
    out = report.to_json()
    out["report"] = {
        "verdict": verdict_text(report),
        "figures": [{"key": f.key, "title": f.title, "drawn": f.figure is not None,
                     "note": f.note} for f in figures],
    }
    return out


def write_report(
    report: CheckReport | str | Path,
    out: str | Path,
    *,
    data: Any | None = None,
    dictionary: Dictionary | str | Path | None = None,
    wide: Any | None = None,
    format: str | None = None,  # noqa: A002
    top: int = 8,
    codes: Any | None = None,
    progress: bool = False,
    tokens: Any | None = None,
    json_href: str | None = None,
) -> Path:
    """Write the report of a check (HTML by default) and return the file written.

    Parameters
    ----------
    report:
        A :class:`CheckReport` or the path of its JSON (file or folder).
    out:
        Output file, or a folder (then ``report.<format>`` is written inside).
    data, dictionary:
        Activations and the dictionary (object or saved folder) that were checked: with both,
        the top pairs' hull plots and the co-occurrence scatter are drawn.
    wide:
        A wide sweep (``SweepResult``, its dict, or the path of ``wide.json``).
    format:
        ``"html"``, ``"json"`` or ``"md"``; default from ``out``'s suffix, else HTML.
    top:
        Number of pairs with a hull plot.
    tokens:
        The token of every row, for feature cards: a :class:`~dictopt.plots.cards.RowTokens`,
        a list of token strings, or a ``dictopt activations`` folder; by default
        ``tokens.npz`` beside the shards when ``data`` is such a folder. Cards are drawn for
        the latents of the triage's findings when the dictionary and data are given too.
    json_href:
        Where the HTML's JSON link points (e.g. ``"check.json"`` next to the page); default
        the report itself embedded as a ``data:`` link.
    """
    if not isinstance(report, CheckReport):
        report = load_check(report)
    if top < 0:
        raise DictoptInputError(f"top: must be ≥ 0, got {top}")
    out, format = _output(Path(out), format)  # noqa: A001
    dictionary = _report_dictionary(dictionary)
    if isinstance(data, str | Path) and not Path(data).exists():
        raise DictoptInputError(f"activations: {data}: no such file or folder")
    if format == "html":
        figs = build_figures(report, data=data, dictionary=dictionary, wide=wide, top=top,
                             codes=codes, progress=progress)
        cards = _cards(report, data, dictionary, tokens)
        write_text(out, render_html(report, figs, cards=cards,
                                    json_href=json_href or _json_href(report)))
    else:
        figs = _notes_only(report, data, dictionary, wide, top)
        if format == "md":
            write_text(out, render_markdown(report, figs))
        else:
            write_text(out, json.dumps(render_json(report, figs), indent=1) + "\n")
    log.info("report written to %s", out)
    return out


def _output(out: Path, format: str | None) -> tuple[Path, str]:  # noqa: A002
    """The file :func:`write_report` writes and its format (from ``out``'s suffix by
    default); a folder, or a new suffix-less path, gets ``report.<format>`` inside."""
    if format is None:
        suffix = out.suffix.lstrip(".").lower()
        format = {"htm": "html", "markdown": "md"}.get(suffix, suffix) if suffix else "html"  # noqa: A001
    if format not in FORMATS:
        raise DictoptInputError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if out.is_dir() or (not out.suffix and not out.exists()):
        out.mkdir(parents=True, exist_ok=True)
        out = out / f"report.{format}"
    if not out.parent.exists():
        raise DictoptInputError(f"out: folder {out.parent} does not exist")
    return out, format


def _report_dictionary(dictionary: Any) -> Dictionary | None:
    """``write_report``'s ``dictionary`` as a :class:`Dictionary` (a saved folder or file in
    any format ``dictopt check`` reads, or an object)."""
    if isinstance(dictionary, str | Path):
        from dictopt.io import load

        if not Path(dictionary).exists():
            raise DictoptInputError(f"dictionary: {dictionary}: no such file or folder")
        return load(dictionary)  # every format `dictopt check` reads
    if dictionary is not None:
        from dictopt.io.objects import as_dictionary

        return as_dictionary(dictionary)
    return None


def report_html(
    report: CheckReport,
    *,
    data: Any | None = None,
    dictionary: Any | None = None,
    wide: Any | None = None,
    top: int = 8,
    codes: Any | None = None,
    tokens: Any | None = None,
    title: str = "dictopt report",
) -> str:
    """The HTML report as a string, nothing written (for notebooks:
    ``IPython.display.HTML(report_html(...))``). Arguments as for :func:`write_report`;
    ``dictionary`` may be any object :func:`dictopt.io.as_dictionary` accepts."""
    if dictionary is not None:
        from dictopt.io.objects import as_dictionary

        dictionary = as_dictionary(dictionary)
    figs = build_figures(report, data=data, dictionary=dictionary, wide=wide, top=top,
                         codes=codes)
    cards = _cards(report, data, dictionary, tokens)
    return render_html(report, figs, title=title, cards=cards, json_href=_json_href(report))


def _cards(report: CheckReport, data: Any, dictionary: Dictionary | None,
           tokens: Any) -> list[Any]:
    """Feature cards for the findings' latents, when tokens are available."""
    from dictopt.plots.cards import RowTokens, feature_cards, finding_latents, load_row_tokens

    if data is None or dictionary is None:
        return []
    if tokens is None and isinstance(data, str | Path) and Path(data).is_dir():
        tokens = Path(data)
    if tokens is None:
        return []
    if isinstance(tokens, str | Path):
        tokens = load_row_tokens(tokens)
    elif not isinstance(tokens, RowTokens):
        tokens = RowTokens.from_strings(tokens)
    latents = finding_latents(report)
    if tokens is None or not latents:
        return []
    codes = report.summary.get("codes", "own")
    return feature_cards(dictionary, data, tokens, latents,
                         codes="optimal" if codes == "optimal" else "own")


def _notes_only(report, data, dictionary, wide, top) -> list[ReportFigure]:  # noqa: ANN001
    """Figure titles and notes without drawing (text formats)."""
    pairs = top_pairs(report, top)
    have = data is not None and dictionary is not None
    out = [ReportFigure(f"hull_{i}_{j}", f"Pair hull plot: atoms {i} and {j}", None,
                        "" if have else "needs --dictionary and --activations")
           for i, j in pairs]
    if not pairs:
        out.append(ReportFigure("hull", "Pair hull plots", None, "no C5 violations"))
    if wide is not None:
        out.append(ReportFigure("wide", "Wide limit", None))
    return out
