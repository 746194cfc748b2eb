"""Machinery shared by every comparison: timing with repeats, peak memory, results, README table.

How figures are taken (the same for every comparison):

* **Time**: wall clock (``time.perf_counter``) of each repeat, after one untimed warm-up where
  the comparison says so; a :class:`Timing` keeps every repeat plus the min and the median.
  A *ratio* is always between two sides measured in the same run, as min/min and median/median.
* **Peak memory**: each side runs in its own fresh Python process (:func:`run_side`). Inside it,
  after imports, data and an untimed warm-up on a small slice (so lazy imports and caches are
  not counted), the side calls :func:`mark_baseline`: it returns freed heap to the system
  (``malloc_trim``), records the resident set size and resets the kernel's peak-RSS mark
  (``/proc/self/clear_refs`` ← 5). At the end the process
  reads its peak resident set size since then (``VmHWM`` in ``/proc/self/status``; it covers
  torch's allocator, numpy and the C libraries that ``tracemalloc`` does not see).
  ``peak_mib`` is that peak minus the baseline: the memory the method itself needed on top of
  its data. (Without ``clear_refs`` it falls back to ``ru_maxrss``, the peak since start.)
* Threads: the harness sets ``OMP_NUM_THREADS`` (default 1) for every side; torch, numpy/BLAS,
  scikit-learn and CLARABEL then all run single-threaded, so no side gets more cores.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (``benchmarks/`` lives directly under it)."""

BEGIN = "<!-- benchmarks:begin"
END = "<!-- benchmarks:end -->"
MODES = ("smoke", "quick", "full")

# --------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds of every repeat, with their min and median."""

    seconds: list[float]

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "min": self.min, "median": self.median}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timing:
        return cls(list(d["seconds"]))


def time_repeats(fn: Callable[[], Any], repeats: int, *, keep: bool = False
                 ) -> tuple[Timing, Any]:
    """Call ``fn`` ``repeats`` times; returns the timing and the last result (the previous
    result is dropped before each call, so it does not count in the next call's memory), or
    with ``keep`` the list of all results. Marks the end of the measured work
    (:func:`mark_end`)."""
    out, kept = None, []
    seconds = []
    for _ in range(max(1, repeats)):
        out = None
        gc.collect()
        t = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t)
        if keep:
            kept.append(out)
    mark_end()
    return Timing(seconds), kept if keep else out


def ratio(numerator: Timing, denominator: Timing) -> dict[str, float]:
    """``numerator / denominator`` as min/min and median/median."""
    return {"min": numerator.min / denominator.min,
            "median": numerator.median / denominator.median}


def fit_exponent(sizes: list[float], seconds: list[float]) -> float:
    """Least-squares slope of ``log(seconds)`` against ``log(size)`` (cost ∝ size^slope)."""
    lx = [math.log(s) for s in sizes]
    ly = [math.log(t) for t in seconds]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx


# --------------------------------------------------------------------------------------------
# Peak memory: one fresh process per side.
# --------------------------------------------------------------------------------------------

_BASELINE_MIB: float | None = None
_PEAK_MIB: float | None = None


def rss_mib() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0; a no-op elsewhere). A
    forked process inherits its parent's high-water mark, so without this a fresh worker's
    peak would be its parent's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident set size of this process since the last reset (MiB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _trim_heap() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``), so that memory freed
    by data preparation is not silently reused by the method under the baseline."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def mark_baseline() -> float:
    """Record the RSS now (imports done, data ready, warmed up) as the side's memory baseline
    and reset the kernel's peak-RSS mark, so the peak read at the end is the method's."""
    global _BASELINE_MIB, _PEAK_MIB
    gc.collect()
    _trim_heap()
    _PEAK_MIB = None
    reset_peak_rss()
    _BASELINE_MIB = rss_mib()
    return _BASELINE_MIB


def mark_end() -> float:
    """Record the peak RSS now, at the end of the measured work (before accuracy checks, which
    may import or allocate things the method did not need)."""
    global _PEAK_MIB
    _PEAK_MIB = peak_rss_mib()
    return _PEAK_MIB


def side_main(argv: list[str]) -> None:
    """Entry of a side's process: ``python -m benchmarks.harness MODULE FUNC JSON_KWARGS``.

    Prints one JSON line: the side function's result plus ``peak_mib`` (peak RSS minus the
    baseline the function marked), ``peak_rss_mib`` and ``baseline_mib``.
    """
    module, func, kwargs = argv[0], argv[1], json.loads(argv[2])
    fn = getattr(importlib.import_module(module), func)
    out = fn(**kwargs)
    # Run as ``-m benchmarks.harness`` this module is ``__main__``; the side functions marked
    # the baseline and the end in the imported ``benchmarks.harness``.
    marks = importlib.import_module("benchmarks.harness")
    peak = marks._PEAK_MIB if marks._PEAK_MIB is not None else peak_rss_mib()
    base = marks._BASELINE_MIB if marks._BASELINE_MIB is not None else 0.0
    out["memory"] = {"peak_mib": max(peak - base, 0.0), "peak_rss_mib": peak,
                     "baseline_mib": base}
    print("@@RESULT@@" + json.dumps(out), flush=True)


class SideError(RuntimeError):
    """A side's process failed; the message carries the end of its stderr."""


def run_side(module: str, func: str, *, threads: int = 1, timeout: float = 3600,
             **kwargs: Any) -> dict[str, Any]:
    """Run ``module.func(**kwargs)`` in a fresh process (see :func:`side_main`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TQDM_DISABLE", "1")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", module, func, json.dumps(kwargs)],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")]
    if proc.returncode != 0 or not lines:
        raise SideError(f"{module}.{func} failed (exit {proc.returncode}):\n"
                        + proc.stderr[-3000:])
    return json.loads(lines[-1].removeprefix("@@RESULT@@"))


# --------------------------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the README table."""

    comparison: str
    """What is compared (ours vs theirs)."""
    problem: str
    """The problem, with its sizes."""
    figure: str
    """The measured ratio(s), min / median over repeats."""
    memory: str
    """Peak memory of each side (see the module docstring)."""
    accuracy: str
    """How equal accuracy was established."""
    target: str
    """The target and whether it is met (``met`` / ``not met: ...`` / ``—``)."""


@dataclass
class Result:
    """Everything one comparison measured (goes to the JSON as is)."""

    name: str
    mode: str
    problem: dict[str, Any]
    sides: dict[str, dict[str, Any]]
    ratios: dict[str, Any]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def target_cell(target: str, met: bool | None, why: str = "") -> str:
    """``"≥ 100×: met"`` or ``"≥ 100×: not met: why"``."""
    if met is None:
        return target
    return f"{target}: met" if met else f"{target}: not met: {why}".rstrip(": ")


def fmt_ratio(r: dict[str, float], unit: str = "×") -> str:
    """``12.3× / 11.0×`` (min / median)."""
    return f"{_num(r['min'])}{unit} / {_num(r['median'])}{unit}"


def fmt_speed(r: dict[str, float]) -> str:
    """A speed-up ``baseline / ours``: ``3.1× / 3.0× faster`` or, below 1, the inverse as
    ``17× / 16× slower`` (min / median)."""
    if r["median"] >= 1:
        return f"{fmt_ratio(r)} faster"
    return f"{fmt_ratio({'min': 1 / r['min'], 'median': 1 / r['median']})} slower"


def _num(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def mib(side: dict[str, Any]) -> str:
    v = side["memory"]["peak_mib"]
    return f"{v:.0f} MiB" if v >= 10 else f"{v:.1f} MiB"


# --------------------------------------------------------------------------------------------
# Machine, versions, JSON and the README block.
# --------------------------------------------------------------------------------------------


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - a missing package is reported as None
        return None


def machine_info() -> dict[str, Any]:
    """CPU model and cores, RAM, load, package versions, date."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram,
        "platform": platform.platform(),
        "load_average_start": load,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "versions": {
            "python": platform.python_version(),
            **{m: _version(m) for m in ("dictopt", "torch", "numpy", "scipy", "scikit-learn",
                                         "cvxpy", "clarabel", "sae-lens")},
        },
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def render_block(doc: dict[str, Any]) -> str:
    """The README block (markers included) for a results document."""
    m = doc["machine"]
    v = m["versions"]
    load = m.get("load_average_start")
    load_end = m.get("load_average_end")
    lines = [
        f"{BEGIN} (regenerated by `python benchmarks/run.py --{doc['mode']} --update-readme`; "
        "edit the script, not this table) -->",
        f"Mode `{doc['mode']}`, {m['date']}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB "
        f"RAM, {m['threads']} thread(s) per side; load average "
        f"{_load(load)} at the start, {_load(load_end)} at the end (shared machine). "
        f"Python {v['python']}, torch {v['torch']}, numpy {v['numpy']}, scikit-learn "
        f"{v['scikit-learn']}, cvxpy {v['cvxpy']}, clarabel {v['clarabel']}, sae-lens "
        f"{v['sae-lens']}. Total {doc['seconds'] / 60:.1f} min. Every ratio is between two "
        "sides measured in this run: min / median over repeats. Peak memory: peak RSS of the "
        "side's own process minus its RSS once data are ready. Figures: "
        "`benchmarks/results.json`.",
        "",
        "| comparison | problem | measured (min / median) | peak memory | accuracy | target |",
        "|---|---|---|---|---|---|",
    ]
    for res in doc["results"]:
        for r in res["rows"]:
            cells = [r["comparison"], r["problem"], r["figure"], r["memory"], r["accuracy"],
                     r["target"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = [n for res in doc["results"] for n in res["notes"]]
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    lines.append(END)
    return "\n".join(lines)


def _load(load: list[float] | None) -> str:
    return "?" if not load else "/".join(f"{x:.1f}" for x in load)


def update_readme(path: Path, doc: dict[str, Any]) -> None:
    """Replace the text between the benchmark markers of ``path`` (markers included)."""
    text = path.read_text()
    start = text.find(BEGIN)
    end = text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path}: no '{BEGIN} ... {END}' block")
    path.write_text(text[:start] + render_block(doc) + text[end + len(END):])


if __name__ == "__main__":
    side_main(sys.argv[1:])


def timed_process(cmd: list[str], threads: int = 1) -> dict[str, Any]:
    """Run ``cmd`` (from the repository root, this checkout first on ``PYTHONPATH``) under
    ``/usr/bin/time -v`` with ``threads`` BLAS/OpenMP threads.

    Returns
    -------
    dict
        ``seconds`` (wall), ``cpu_seconds`` (user + system: with one thread, what an idle
        machine's wall time would be; robust to other jobs), ``peak_rss_mib`` (maximum resident
        set size) and ``stdout``. Raises ``SystemExit`` with the command's output if it fails.
    """
    import re

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise SystemExit(f"{' '.join(cmd[:4])} failed with status {out.returncode}")

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([\d.]+)", out.stderr).group(1))

    return {"seconds": wall,
            "cpu_seconds": field("User time (seconds)") + field("System time (seconds)"),
            "peak_rss_mib": field("Maximum resident set size (kbytes)") / 1024,
            "stdout": out.stdout}
