"""Where a check's memory goes: its resident memory sampled with the code running (issue #17).

One command::

    python -m benchmarks.memtrace --work DIR [--out trace.tsv] [--interval 0.2]

``DIR`` holds a ``bench_widths`` size (``DIR/sae``, ``DIR/X.npy``). The check of
``bench_widths`` (own codes, hull off, amortisation off) runs in this process while a thread
samples, every ``--interval`` seconds, ``VmRSS`` and ``VmHWM`` (``/proc/self/status``), the
process's CPU time and the main thread's innermost ``dictopt`` frames
(``module:function:line``, innermost first); the report is written to
``DIR/memtrace_report.json`` as the benchmark writes it. Each sample is one tab-separated line of
``--out``; the largest samples are printed at the end, so a peak is named by the line that
held it. A sampling profiler of memory, not an exact one: a peak shorter than the interval
can fall between two samples (``VmHWM`` still records it).
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path


def status_mib() -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of this process in MiB."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                got[key] = int(value.split()[0]) // 1024
    return got["VmRSS"], got["VmHWM"]


def frames(thread_id: int, depth: int = 5) -> str:
    """The innermost ``depth`` dictopt frames of a thread, ``module:function:line``."""
    frame = sys._current_frames().get(thread_id)
    out = []
    while frame is not None and len(out) < depth:
        name = frame.f_code.co_filename
        if "dictopt" in name and "site-packages" not in name:
            out.append(f"{Path(name).stem}:{frame.f_code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="a bench_widths size folder")
    p.add_argument("--out", type=Path, default=Path("memtrace.tsv"))
    p.add_argument("--interval", type=float, default=0.2)
    args = p.parse_args(argv)
    if not (args.work / "sae").exists() or not (args.work / "X.npy").exists():
        print(f"error: --work {args.work}: no sae/ and X.npy there; build one with "
              "python -m benchmarks.bench_widths --work DIR", file=sys.stderr)
        return 2
    from benchmarks.bench_amortisation import LAM
    from dictopt.cli import main as cli

    main_id, done, samples = threading.main_thread().ident, threading.Event(), []

    def sample() -> None:
        t0 = time.perf_counter()
        with open(args.out, "w") as f:
            f.write("wall_s\trss_mib\thwm_mib\tcpu_s\tframes\n")
            while not done.is_set():
                rss, hwm = status_mib()
                row = (time.perf_counter() - t0, rss, hwm, time.process_time(), frames(main_id))
                samples.append(row)
                f.write(f"{row[0]:.1f}\t{rss}\t{hwm}\t{row[3]:.1f}\t{row[4]}\n")
                f.flush()
                done.wait(args.interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cli(["check", str(args.work / "sae"), "--activations", str(args.work / "X.npy"), "--lam",
         str(LAM), "--certify", "0", "--no-hull", "--amortisation", "off", "--quiet", "--json",
         str(args.work / "memtrace_report.json")])
    done.set()
    thread.join()
    print(f"peak (VmHWM) {status_mib()[1]:,} MiB; largest samples:")
    for wall, rss, _, cpu, where in sorted(samples, key=lambda s: -s[1])[:5]:
        print(f"  {rss:,} MiB at {wall:.1f} s wall ({cpu:.1f} s CPU): {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
