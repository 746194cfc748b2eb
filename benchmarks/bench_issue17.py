"""Every benchmark row of issue #17 from one command: the width table and the speed rows.

One command::

    python -m benchmarks.bench_issue17 [--smoke|--quick|--full] [--sizes KxdxN,...]
        [--json out.json] [--md out.md] [--work DIR] [--threads 1]

It runs, one after the other, each side in its own process:

1. **the width table** (:mod:`benchmarks.bench_widths`): per size ``KxdxN``, one
   encode+decode pass against ``dictopt check --certify 0 --no-hull --amortisation off``
   (own codes, hull off: the issue's setting), CPU time (user + system, one thread), wall time
   and peak RSS of both, and the ratios against the targets (time ≤ 2×, peak memory ≤ 1.5×);
2. **the speed rows** (:mod:`benchmarks.compare.speed`, as ``benchmarks/run.py --only speed``
   runs them): the joint hull's share of a check, optimal vs own codes on a random ReLU SAE
   (the stress row: optimal L0 334 ≫ data L0 45), repair held vs cold and, in ``--full``,
   the whole ``dictopt demo``;
3. with ``--realistic DIR``, the realistic optimal-codes row
   (:mod:`benchmarks.issue17_trained`): an SAE whose optimal L0 is the data's (≈ 43 against
   45) at K = 4,096, d = 768, own codes vs optimal codes cold and warm-started, N =
   ``--realistic-rows`` (``DIR`` from ``python -m benchmarks.issue17_trained build``, or
   any folder with ``X.npy`` and a native SAE named by ``--realistic-sae``).

Sizes per mode: ``--smoke`` is tiny (the test suite runs it), ``--quick`` (default) is the
width table's two ``d = 768`` rows that take about a minute each, ``--full`` is the issue's
table (``d = 768`` to K = 65,536, ``d = 2,304`` at K = 16,384 and 65,536, with ``N`` chosen
to fit 24 GB; about an hour of CPU). ``--sizes`` replaces the mode's width sizes. Writes one
JSON document (``--json``) and one markdown page (``--md``; also printed).
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_widths import HEADER, measure, parse_sizes, row
from benchmarks.harness import machine_info, render_block

WIDTHS = {
    "smoke": "512x64x2000,1024x96x1500",
    "quick": "4096x768x30000,16384x768x30000",
    "full": ("4096x768x30000,16384x768x30000,32768x768x30000,65536x768x30000,"
             "16384x2304x20000,65536x2304x8192"),
}
"""Width-table sizes per mode (``KxdxN``)."""

TIME_TARGET = 2.0
"""Check ≤ 2× one encode+decode pass in CPU time (issue #17)."""
PEAK_TARGET = 1.5
"""Check ≤ 1.5× the pass's peak memory (issue #17)."""


def width_rows(results: list[dict[str, Any]]) -> list[str]:
    """The width table in markdown, with the targets met or missed per row."""
    head, sep = HEADER.split("\n")
    lines = [head + " targets (≤ 2× time, ≤ 1.5× memory) |", sep + "---|"]
    for r in results:
        time_ok, peak_ok = r["cpu_ratio"] <= TIME_TARGET, r["peak_ratio"] <= PEAK_TARGET
        verdict = ("met" if time_ok and peak_ok else "not met: " + ", ".join(
            w for w, ok in (("time", time_ok), ("memory", peak_ok)) if not ok))
        lines.append(row(r) + f" {verdict} |")
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """One page: the width table, then the speed rows (the README block's format)."""
    m = doc["machine"]
    load = "/".join(f"{x:.1f}" for x in m.get("load_average_start", []))
    load_end = "/".join(f"{x:.1f}" for x in doc.get("load_average_end", []))
    head = (f"Issue #17's benchmark rows, mode `{doc['mode']}`, {m['date']}; {m['cpu']}, "
            f"{m['cores']} cores, {doc['threads']} thread(s) per side; load average {load} at "
            f"the start, {load_end} at the end. Width table: CPU time (user + system) of each "
            "side's own process (its Python start-up included), wall time in brackets, peak "
            f"RSS. Total {doc['seconds'] / 60:.1f} min.")
    parts = [head, "", *width_rows(doc["widths"]), ""]
    if doc.get("speed") is not None:  # the README block's table, without its markers
        parts += render_block(doc["speed"]).splitlines()[1:-1]
    if doc.get("realistic") is not None:
        from benchmarks.issue17_trained import row as realistic_row

        parts += ["", "| optimal-codes row | shape | figure | reports | target |",
                  "|---|---|---|---|---|", realistic_row(doc["realistic"])]
    return "\n".join(parts) + "\n"


def run(mode: str, sizes: list[tuple[int, int, int]], work: Path, threads: int, l0: int,
        speed: bool = True, realistic: tuple[Path, str, int] | None = None) -> dict[str, Any]:
    """Measure the width table at ``sizes`` and the speed rows in ``mode``; the document."""
    from benchmarks.run import run as run_comparisons

    t0 = time.perf_counter()
    doc: dict[str, Any] = {"schema": 1, "mode": mode, "threads": threads,
                           "machine": machine_info(), "widths": [], "speed": None}
    print(HEADER, flush=True)
    for K, d, N in sizes:
        r = measure(work / f"K{K}_d{d}_N{N}", K, d, N, l0, threads)
        doc["widths"].append(r)
        print(row(r), flush=True)
    if speed:
        doc["speed"] = run_comparisons(mode, ["speed"], threads)
    if realistic is not None:
        from benchmarks.issue17_trained import measure as measure_realistic

        doc["realistic"] = measure_realistic(*realistic)
    doc["seconds"] = time.perf_counter() - t0
    doc["load_average_end"] = list(os.getloadavg())
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    for m in WIDTHS:
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m)
    p.set_defaults(mode="quick")
    p.add_argument("--sizes", default=None, help="comma-separated KxdxN (default: the mode's)")
    p.add_argument("--no-speed", action="store_true", help="the width table only")
    p.add_argument("--l0", type=int, default=45)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/dictopt_bench_issue17"))
    p.add_argument("--realistic", type=Path, default=None,
                   help="folder with X.npy and the SAE of the realistic optimal-codes row")
    p.add_argument("--realistic-sae", default="sae")
    p.add_argument("--realistic-rows", type=int, default=2000)
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--md", type=Path, default=None, help="write the markdown tables here")
    args = p.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes or WIDTHS[args.mode])
    except ValueError as e:
        print(f"error: --sizes: {e}", file=sys.stderr)
        return 2
    realistic = None
    if args.realistic is not None:
        if not (args.realistic / args.realistic_sae).exists():
            print(f"error: --realistic: no SAE {args.realistic_sae!r} in {args.realistic}; "
                  "make one with `python -m benchmarks.issue17_trained build --work DIR`",
                  file=sys.stderr)
            return 2
        realistic = (args.realistic, args.realistic_sae, args.realistic_rows)
    doc = run(args.mode, sizes, args.work, args.threads, args.l0, speed=not args.no_speed,
              realistic=realistic)
    page = markdown(doc)
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.md is not None:
        args.md.write_text(page)
    print(page)
    failed = doc["speed"]["failed"] if doc["speed"] is not None else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
