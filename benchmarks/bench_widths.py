"""The width table of issue #17: ``dictopt check`` against one encode+decode pass, per width.

One command::

    python -m benchmarks.bench_widths [--sizes 4096x768x30000,16384x2304x8192]
        [--l0 45] [--threads 1] [--json out.json]

Each size ``KxdxN`` builds a synthetic ReLU SAE and its data with
:func:`benchmarks.bench_amortisation.make` (``K`` random unit decoder rows, encoder = their
transpose with one threshold tuned to the mean L0 ``--l0``, data generated from the decoder,
float32), then runs, each in its own process under ``/usr/bin/time -v``:

- **encode+decode**: one pass over the rows in the checker's chunks (the least a check can do);
- **check**: ``dictopt check SAE --activations X.npy --lam 0.05 --certify 0 --no-hull
  --amortisation off`` (own codes, hull off: the setting of the issue's table; the amortisation
  sample is a fixed cost measured by ``bench_amortisation``).

It reports wall time, **CPU time** (user + system; with one thread this is what an idle box's
wall time would be, and it is robust to other jobs on a shared machine) and peak resident memory
of both, and the ratios (targets: check ≤ 2× the pass in time, ≤ 1.5× in peak memory). ``N`` is
chosen per size so that the pass fits the machine; peak memory is set per 8,192-row chunk.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.bench_amortisation import LAM, make
from benchmarks.harness import timed_process

DEFAULT_SIZES = "4096x768x30000,16384x2304x8192"


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    """``"4096x768x30000,..."`` → ``[(K, d, N), ...]``; ``ValueError`` naming a bad entry."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"bad size {item!r}: expected KxdxN with positive integers, "
                             "e.g. 4096x768x30000")
        sizes.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return sizes


def measure(work: Path, K: int, d: int, N: int, l0: int, threads: int) -> dict[str, Any]:
    """Build one size in ``work`` and time the pass and the check; return the figures."""
    work.mkdir(parents=True, exist_ok=True)
    built = make(work, K, d, N, l0)
    py = sys.executable
    base = timed_process([py, "-m", "benchmarks.bench_amortisation", "encdec", "--work",
                          str(work)], threads)
    report = work / "report.json"
    chk = timed_process([py, "-m", "dictopt", "check", str(work / "sae"), "--activations",
                         str(work / "X.npy"), "--lam", str(LAM), "--certify", "0", "--no-hull",
                         "--amortisation", "off", "--quiet", "--json", str(report)], threads)
    summary = json.loads(report.read_text())["summary"]
    return {
        **built, "threads": threads, "l0_check": summary["l0"],
        "encdec": {k: base[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "check": {k: chk[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "cpu_ratio": chk["cpu_seconds"] / base["cpu_seconds"],
        "wall_ratio": chk["seconds"] / base["seconds"],
        "peak_ratio": chk["peak_rss_mib"] / base["peak_rss_mib"],
        "timings": summary["timings"],
    }


def row(r: dict[str, Any]) -> str:
    """One markdown row of the width table."""
    e, c = r["encdec"], r["check"]
    return (f"| {r['K']:,} | {r['d']} | {r['rows']:,} | {r['l0_check']:.1f} | "
            f"{e['cpu_seconds']:.0f} s CPU ({e['seconds']:.0f} s wall), "
            f"{e['peak_rss_mib']:,.0f} MiB | "
            f"{c['cpu_seconds']:.0f} s CPU ({c['seconds']:.0f} s wall), "
            f"{c['peak_rss_mib']:,.0f} MiB | **{r['cpu_ratio']:.2f}×** | "
            f"**{r['peak_ratio']:.2f}×** |")


HEADER = ("| K | d | rows | L0 | encode+decode | check (own codes, hull off) | time ratio (CPU) "
          "| peak ratio |\n|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated KxdxN")
    p.add_argument("--l0", type=int, default=45)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/dictopt_bench_widths"))
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = p.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = []
    print(HEADER, flush=True)
    for K, d, N in sizes:
        r = measure(args.work / f"K{K}_d{d}_N{N}", K, d, N, args.l0, args.threads)
        results.append(r)
        print(row(r), flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
