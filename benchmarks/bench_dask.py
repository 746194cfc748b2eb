"""Distributed check on Dask vs one process: wall time and peak memory per worker.

    python benchmarks/bench_dask.py                 # N = 1M (16 shards × 65536), K=1024, d=128
    python benchmarks/bench_dask.py --shards 4      # N = 262144 only (quick)

Data: 16 shards of 65536 rows (float32, d = 128) written once to ``--dir`` (lazily generated
sparse combinations of the atoms of a random ReLU SAE plus noise, as in bench_check.py; planted
L0 = 16 of K = 1024). The check is ``codes="own", hull=False, amortisation=False``.

Figures: the single-process check (a fresh subprocess; its peak RSS) against
``dictopt.distributed.check_distributed`` on a ``LocalCluster(n_workers=2,
threads_per_worker=1)`` (cluster start-up excluded, timed apart), at N = 262144 (the first 4
shards, via a manifest) and N = 1048576, with each worker's peak RSS (VmHWM, reset when the
worker is idle; fresh cluster per N). The single process uses as many threads as one worker
and as the two workers together (``--threads 1,2``). The machine is shared: the
load average is printed with the figures, and ratios are measured in one run.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare.check import make_chunk  # noqa: E402
from benchmarks.compare.check import make_dictionary as _make_dictionary  # noqa: E402
from benchmarks.harness import peak_rss_mib, reset_peak_rss  # noqa: E402

print = functools.partial(print, flush=True)  # noqa: A001  (figures appear as measured)

K, D, ROWS, L0, THRESHOLD = 1024, 128, 65536, 16, 0.85  # L0 ≈ 2 % of K


def make_dictionary():
    """The benchmark's ReLU SAE (float32, threshold ``THRESHOLD``)."""
    return _make_dictionary(K, D, "float32", theta=THRESHOLD)


def write_shards(folder: Path, n_shards: int) -> None:
    """Shard ``i``: ``ROWS`` points generated with seed ``1000 + i`` (written once)."""
    folder.mkdir(parents=True, exist_ok=True)
    dic = make_dictionary()
    for i in range(n_shards):
        path = folder / f"shard_{i:05d}.npy"
        if not path.exists():
            np.save(path, make_chunk(dic.atoms, dic.bias, ROWS, 1000 + i, l0=L0).numpy())


def manifest(folder: Path, n_shards: int) -> None:
    names = [f"shard_{i:05d}.npy" for i in range(n_shards)]
    (folder / "manifest.json").write_text(json.dumps({"shards": names}))


def single(folder: str, threads: int) -> None:
    """Child process: one single-process check; prints JSON with time and peak RSS."""
    from dictopt.check import check

    reset_peak_rss()
    torch.set_num_threads(threads)
    dic = make_dictionary()
    t = time.perf_counter()
    rep = check(dic, folder, codes="own", hull=False, amortisation=False)
    wall = time.perf_counter() - t
    peak = peak_rss_mib()
    print(json.dumps({"wall": wall, "peak_mb": peak, "counts": rep.summary["counts"],
                      "l0": rep.summary["l0"], "loss": rep.summary["loss"],
                      "pairs_in_pass2": rep.summary["pairs_in_pass2"]}))


def run_single(folder: Path, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--_single", str(folder), "--threads",
                          str(threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_dask(folder: Path) -> dict:
    from distributed import Client, LocalCluster

    from dictopt.distributed import check_distributed

    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(2)
    start = time.perf_counter() - t
    client.run(reset_peak_rss)
    before = client.run(peak_rss_mib)
    dic = make_dictionary()
    t = time.perf_counter()
    rep = check_distributed(dic, folder, client=client, codes="own", hull=False,
                            amortisation=False)
    wall = time.perf_counter() - t
    peaks = client.run(peak_rss_mib)
    client.close()
    cluster.close()
    return {"wall": wall, "startup": start, "peaks_mb": sorted(peaks.values()),
            "idle_mb": sorted(before.values()), "counts": rep.summary["counts"],
            "l0": rep.summary["l0"], "loss": rep.summary["loss"],
            "pairs_in_pass2": rep.summary["pairs_in_pass2"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="/tmp/dictopt_bench_dask", help="where the shards live")
    p.add_argument("--shards", type=int, default=16, help="shards of 65536 rows (default 16)")
    p.add_argument("--threads", default="1,2",
                   help="torch threads of the 1-process runs (default 1,2)")
    p.add_argument("--_single", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._single:
        single(args._single, int(args.threads))
        return
    folder = Path(args.dir)
    write_shards(folder, args.shards)
    sizes = sorted({min(4, args.shards), args.shards})
    print(f"K={K} d={D}, shards of {ROWS} rows, cores={os.cpu_count()}, "
          f"load average {os.getloadavg()}")
    for n_shards in sizes:
        manifest(folder, n_shards)
        N = n_shards * ROWS
        singles = {}
        if n_shards == args.shards:
            for threads in sorted({int(t) for t in args.threads.split(",")}):
                s = singles[threads] = run_single(folder, threads)
                print(f"N={N}: 1 process ({threads} thread{'s' * (threads > 1)}) "
                      f"{s['wall']:.1f}s, peak {s['peak_mb']:.0f} MB, "
                      f"L0 {100 * s['l0'] / K:.2f}% of K, counts {s['counts']}  "
                      f"[load {os.getloadavg()[0]:.2f}]")
        r = run_dask(folder)
        print(f"N={N}: 2 workers {r['wall']:.1f}s (+{r['startup']:.1f}s cluster start), "
              f"peak per worker {', '.join(f'{m:.0f}' for m in r['peaks_mb'])} MB "
              f"(idle {', '.join(f'{m:.0f}' for m in r['idle_mb'])} MB), "
              f"L0 {100 * r['l0'] / K:.2f}% of K, counts {r['counts']}, "
              f"{r['pairs_in_pass2']} pairs in pass 2  [load {os.getloadavg()[0]:.2f}]")
        for threads, s in singles.items():
            print(f"  wall-time ratio 1 process ({threads} thread(s)) / 2 workers: "
                  f"{s['wall'] / r['wall']:.2f}; counts equal: {s['counts'] == r['counts']}, "
                  f"loss equal to {abs(s['loss'] - r['loss']) / abs(s['loss']):.1e} relative")
    (folder / "manifest.json").unlink()
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
