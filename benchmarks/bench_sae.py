"""SAE family benchmark: speed and memory, recovery of planted atoms, hierarchy representation.

Run:  PYTHONPATH=. python benchmarks/bench_sae.py [--threads 1] [--skip-speed] ...

1. Steps per second and peak memory on CPU at d=256, K=2048, batch 1024, one architecture per
   fresh subprocess. Memory is the process's peak resident set size (``ru_maxrss``, includes
   torch's allocator, which tracemalloc does not see) minus the RSS just before the SAE is built.
2. Recovery on the independent world: fraction of true atoms whose best learned atom has
   cosine ≥ 0.95, with the CPU seconds (process time) used, over several seeds.
3. Hierarchy world: for each (child, parent) edge, the best cosine of any learned atom to the
   parent, the child and the normalised parent+child direction (means over edges).

Timings are noisy: this machine's CPU is shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from dictopt.solvers.sae.presets import TOY_RECOVERY

ARCHS = ["relu", "relu-unit", "topk", "batchtopk", "jumprelu", "matryoshka", "mp"]

#: Settings under which each architecture recovers the independent toy world (3-5 s CPU each).
RECOVERY = TOY_RECOVERY


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def speed_one(arch: str, steps: int, d: int, K: int, batch: int) -> dict:
    """Time ``steps`` training steps (after 2 warm-up steps) in this process."""
    from dictopt.data.sources import as_source
    from dictopt.solvers.sae import make_config
    from dictopt.solvers.train import TrainConfig, _Trainer

    name = arch.removesuffix("-unit")
    opts = {"relu": {"l1_coefficient": 1.0}, "topk": {"k": 32}, "batchtopk": {"k": 32.0},
            "matryoshka": {"k": 32.0}, "jumprelu": {}, "mp": {"k": 32}}[name]
    if arch == "relu-unit":
        opts["unit_norm_decoder"] = True
    x = torch.randn(batch * 4, d)
    cfg = TrainConfig(sae=make_config(name, d_in=d, d_sae=K, **opts), batch_size=batch,
                      total_steps=steps + 2, b_dec_init_method="mean")
    base = _rss_mib()
    trainer = _Trainer(as_source(x), cfg, seed=0)
    trainer.fresh(None)
    batches = [x[i * batch:(i + 1) * batch] for i in range(4)]
    for i in range(2):
        trainer.train_step(batches[i % 4])
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.train_step(batches[i % 4])
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"arch": arch, "steps_per_s": steps / dt, "peak_rss_mib": peak,
            "peak_over_baseline_mib": peak - base}


def speed_table(args: argparse.Namespace) -> None:
    rows = []
    for arch in ARCHS:
        cmd = [sys.executable, __file__, "--one", arch, "--threads", str(args.threads),
               "--speed-steps", str(args.speed_steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\n## Speed and memory (CPU, d=256, K=2048, batch 1024, torch threads={args.threads})")
    print("| architecture | steps/s | peak RSS (MiB) | peak − baseline (MiB) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arch']} | {r['steps_per_s']:.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_over_baseline_mib']:.0f} |")


def fit(arch: str, x: np.ndarray, K: int, seed: int, steps: int, **extra):
    from dictopt.solvers.train import fit_sae

    opts = {**RECOVERY[arch], **extra}
    lam = opts.pop("lam", None)
    t0 = time.process_time()
    D = fit_sae(arch.removesuffix("-unit"), x.astype(np.float32), K=K, lam=lam, seed=seed,
                progress=False, total_steps=steps, **opts)
    return D, time.process_time() - t0


def best_cos(targets_TD: np.ndarray, atoms_KD: np.ndarray) -> np.ndarray:
    t = targets_TD / np.linalg.norm(targets_TD, axis=1, keepdims=True)
    return (t @ atoms_KD.T).max(axis=1)


def recovery_table(args: argparse.Namespace) -> None:
    from dictopt.data.worlds import make_world

    sizes = [(dict(n=8192, d=16, k=24, p=0.08), 48, 3000)]
    if not args.quick:
        sizes.append((dict(n=16384, d=32, k=64, p=0.03), 128, 6000))
    print("\n## Recovery on the independent world (cosine ≥ 0.95; mean over seeds; the larger "
          "world: one seed)")
    print("| world | K | steps | architecture | recovered (per seed) | mean | CPU s / run |")
    print("|---|---:|---:|---|---|---:|---:|")
    for params, K, steps in sizes:
        for arch in ARCHS:
            recs, cpu = [], []
            for seed in range(args.seeds if params["d"] == 16 else 1):
                world = make_world("independent", seed=seed, **params)
                extra = {}
                if arch == "matryoshka":
                    extra["matryoshka_widths"] = [params["k"], K]
                D, t = fit(arch, world.x, K, seed, steps, **extra)
                recs.append(float((best_cos(world.atoms, D.atoms.numpy()) >= 0.95).mean()))
                cpu.append(t)
            label = f"d={params['d']}, K_true={params['k']}, p={params['p']}"
            print(f"| {label} | {K} | {steps} | {arch} | {', '.join(f'{r:.2f}' for r in recs)} | "
                  f"{np.mean(recs):.3f} | {np.mean(cpu):.1f} |", flush=True)


def hierarchy_table(args: argparse.Namespace) -> None:
    from dictopt.data.worlds import make_world

    world = make_world("hierarchy", n=8192, seed=0)
    edges = np.array(world.edges)
    child, parent = world.atoms[edges[:, 0]], world.atoms[edges[:, 1]]
    K = 2 * world.atoms.shape[0]
    print(f"\n## Hierarchy world (d={world.x.shape[1]}, {world.atoms.shape[0]} true atoms, "
          f"{len(edges)} child→parent edges, K={K}, 3000 steps): best cosine to each "
          "direction, mean over edges (fraction of edges with cosine ≥ 0.95)")
    print("| architecture | parent | child | parent+child | EV |")
    print("|---|---|---|---|---:|")
    for arch in ARCHS:
        extra = {}
        if arch in ("topk", "batchtopk", "matryoshka"):
            extra["k"] = 3
        if arch == "mp":
            extra["k"] = 3
        if arch == "matryoshka":
            extra["matryoshka_widths"] = [world.atoms.shape[0] // 4, world.atoms.shape[0], K]
        D, _ = fit(arch, world.x, K, 0, 3000, **extra)
        A = D.atoms.numpy()
        cells = []
        for target in (parent, child, parent + child):
            c = best_cos(target, A)
            cells.append(f"{c.mean():.3f} ({(c >= 0.95).mean():.2f})")
        ev = D.meta["train_log"]["explained_variance"][-1]
        print(f"| {arch} | {' | '.join(cells)} | {ev:.3f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--speed-steps", type=int, default=10)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="only the small recovery world")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-recovery", action="store_true")
    p.add_argument("--skip-hierarchy", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(speed_one(args.one, args.speed_steps, 256, 2048, 1024)))
        return
    if not args.skip_speed:
        speed_table(args)
    if not args.skip_recovery:
        recovery_table(args)
    if not args.skip_hierarchy:
        hierarchy_table(args)


if __name__ == "__main__":
    main()
