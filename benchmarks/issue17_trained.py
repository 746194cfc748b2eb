"""Issue #17's realistic setting: optimal vs own codes for an SAE whose optimal L0 is the data's.

Two commands::

    python -m benchmarks.issue17_trained build [--work /work/cache/coder4] [--steps 600]
    python -m benchmarks.issue17_trained measure [--work DIR] [--sae sae] [--rows 2000]

``measure`` checks the last ``--rows`` rows of ``work/X.npy`` with the SAE ``work/<sae>``
(``sae``: :func:`benchmarks.bench_amortisation.make`'s untrained SAE, decoder = the generating
atoms; ``sae_trained``: the one ``build`` trains), each side in its own process under
``/usr/bin/time -v`` (CPU = user + system, one thread, ``DICTOPT_CODER_MEMORY=2G`` so that
the coder's plan does not depend on the free memory): ``check(codes="own")``,
``check(codes="optimal")`` cold and warm-started from the own codes (hull and amortisation
off, as in the speed row), and whether the reports (JSON without ``timings``) agree.

The data are :func:`benchmarks.bench_amortisation.make`'s: rows of ``l0 = 45`` random unit atoms
(K = 4,096, d = 768) with Exp(1) magnitudes plus Gaussian noise (σ = 0.002). The SAE starts
from ``make``'s untrained SAE (decoder = the generating atoms, encoder their transpose, one
threshold giving an own L0 of 45) and is trained by dictopt's own trainer
(:func:`dictopt.solvers.train.train_sae`: Adam, batch 512, λ = 0.05 i.e. ``l1_coefficient =
0.1``) on the first ``train_rows`` rows; the last rows are held out for the check. The result
is saved in dictopt's native format as ``work/sae_trained`` with ``work/X.npy``.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

LAM = 0.05
K, D_IN, L0 = 4096, 768, 45
TRAIN_ROWS, CHECK_ROWS = 200_000, 20_000


def build(work: Path, steps: int, batch: int, lr: float) -> dict:
    """Make the data and the untrained SAE, train it, save ``work/sae_trained``."""
    import numpy as np
    import torch

    from benchmarks.bench_amortisation import make
    from dictopt.io.native import load_dictionary, save_dictionary
    from dictopt.solvers.sae.relu import ReLUSAE, ReLUSAEConfig
    from dictopt.solvers.train import TrainConfig, train_sae

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    info = make(work, K, D_IN, TRAIN_ROWS + CHECK_ROWS, L0)
    start = load_dictionary(work / "sae")
    cfg_sae = ReLUSAEConfig(d_in=D_IN, d_sae=K, l1_coefficient=2 * LAM, dtype="float32")
    sae = ReLUSAE(cfg_sae)
    with torch.no_grad():  # the untrained SAE of make(): decoder = atoms, encoder = transpose
        sae.W_dec.copy_(start.atoms.float())
        sae.W_enc.copy_(start.atoms.float().T)
        sae.b_enc.fill_(-info["theta"])
        sae.b_dec.zero_()
    x = np.load(work / "X.npy", mmap_mode="r")
    cfg = TrainConfig(sae=cfg_sae, total_steps=steps, batch_size=batch, lr=lr,
                      b_dec_init_method="zeros", lr_decay_steps=steps // 5)
    res = train_sae(np.asarray(x[:TRAIN_ROWS]), cfg, seed=0, progress=False, sae=sae)
    save_dictionary(res.sae.to_dictionary(), work / "sae_trained")
    log = res.log.as_dict()
    out = {"make": info, "steps": steps, "batch": batch, "lr": lr,
           "train_cpu_s": time.process_time() - t0,
           "last_log": {k: v[-1] for k, v in log.items() if isinstance(v, list) and v}}
    (work / "trained.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def side(work: Path, sae: str, rows: int, mode: str, out: Path) -> None:
    """One check (``mode``: ``own``, ``cold`` or ``warm``); its report, without timings,
    to ``out``; its figures printed as one JSON line."""
    import numpy as np
    import torch

    import dictopt.coders as coders
    from dictopt.check import check
    from dictopt.io.native import load_dictionary

    torch.set_num_threads(1)
    dic = load_dictionary(work / sae)
    x = np.asarray(np.load(work / "X.npy", mmap_mode="r")[-rows:])
    coders.WARM_START = mode == "warm"
    t = time.process_time()
    rep = check(dic, x, codes="own" if mode == "own" else "optimal", hull=False,
                amortisation=False)
    cpu = time.process_time() - t
    out.write_text(json.dumps(_without_timings(rep.to_json()), sort_keys=True, default=str))
    print(json.dumps({"mode": mode, "rows": rows, "check_cpu_s": cpu, "l0": rep.summary["l0"],
                      "loss": rep.summary["loss"], "counts": rep.summary["counts"]}))


def _without_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k != "timings"}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _largest_difference(a: Any, b: Any) -> tuple[float, int]:
    """Largest relative difference of float leaves above 1e-8 in size, and the number of
    other leaves that differ (counts, verdicts, labels)."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        parts = [_largest_difference(a[k], b[k]) for k in a]
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        parts = [_largest_difference(u, v) for u, v in zip(a, b, strict=True)]
    elif isinstance(a, float) and isinstance(b, float):
        big = max(abs(a), abs(b))
        return (abs(a - b) / big if big > 1e-8 else 0.0), 0
    else:
        return 0.0, int(a != b)
    return max((p[0] for p in parts), default=0.0), sum(p[1] for p in parts)


def measure(work: Path, sae: str, rows: int) -> dict[str, Any]:
    """The three sides and their comparison."""
    import os

    from benchmarks.harness import timed_process

    os.environ.setdefault("DICTOPT_CODER_MEMORY", "2G")
    out: dict[str, Any] = {"work": str(work), "sae": sae, "rows": rows,
                           "load_average_start": list(os.getloadavg())}
    for mode in ("own", "cold", "warm"):
        r = timed_process([sys.executable, "-m", "benchmarks.issue17_trained", "side",
                           "--work", str(work), "--sae", sae, "--rows", str(rows),
                           "--mode", mode, "--out", str(work / f"report_{sae}_{rows}_{mode}.json")])
        out[mode] = {**json.loads(r["stdout"].strip().splitlines()[-1]),
                     "cpu_s": r["cpu_seconds"], "wall_s": r["seconds"],
                     "peak_rss_mib": r["peak_rss_mib"]}
    reps = {m: json.loads((work / f"report_{sae}_{rows}_{m}.json").read_text())
            for m in ("cold", "warm")}
    rel, other = _largest_difference(reps["cold"], reps["warm"])
    out["warm_vs_cold_report"] = {"identical": reps["cold"] == reps["warm"],
                                  "largest_relative_difference": rel, "other_differences": other}
    # the check itself (process_time around check()), as the issue times it; the processes'
    # CPU (imports and loading included, ~3 s each) is kept beside it
    out["ratio_cold"] = out["cold"]["check_cpu_s"] / out["own"]["check_cpu_s"]
    out["ratio_warm"] = out["warm"]["check_cpu_s"] / out["own"]["check_cpu_s"]
    out["load_average_end"] = list(os.getloadavg())
    return out


def row(r: dict[str, Any]) -> str:
    """One markdown row of the realistic setting."""
    own, cold, warm = r["own"], r["cold"], r["warm"]
    rep = r["warm_vs_cold_report"]
    same = ("identical" if rep["identical"] else
            f"same counts and verdicts, floats to {rep['largest_relative_difference']:.0e}"
            if rep["other_differences"] == 0 else f"{rep['other_differences']} leaves differ")
    return (f"| data L0 45, optimal L0 {r['cold']['l0']:.0f} (`{r['sae']}`, N = {r['rows']:,}) | "
            f"optimal L0 {cold['l0']:.1f}, own {own['l0']:.1f} | check CPU: own "
            f"{own['check_cpu_s']:.1f} s, optimal cold {cold['check_cpu_s']:.1f} s "
            f"(**{r['ratio_cold']:.1f}×**), warm {warm['check_cpu_s']:.1f} s "
            f"({r['ratio_warm']:.1f}×); whole processes {own['cpu_s']:.1f} / {cold['cpu_s']:.1f}"
            f" / {warm['cpu_s']:.1f} s | warm vs cold: {same} | "
            f"≤ 3×: {'met' if min(r['ratio_cold'], r['ratio_warm']) <= 3 else 'not met'} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["build", "measure", "side"])
    p.add_argument("--work", type=Path, default=Path("/work/cache/coder4"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--sae", default="sae")
    p.add_argument("--rows", type=int, default=2000)
    p.add_argument("--mode", choices=["own", "cold", "warm"], default="own")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.what == "build":
        print(json.dumps(build(args.work, args.steps, args.batch, args.lr), indent=1))
    elif args.what == "side":
        side(args.work, args.sae, args.rows, args.mode, args.out)
    else:
        if not (args.work / args.sae).exists() or not (args.work / "X.npy").exists():
            print(f"error: --work: no {args.sae} or X.npy in {args.work}; run "
                  "`python -m benchmarks.issue17_trained build` first", file=sys.stderr)
            return 2
        r = measure(args.work, args.sae, args.rows)
        print(json.dumps(r, indent=1))
        print(row(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
