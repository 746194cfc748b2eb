"""Fast wide-limit bound solver vs the cvxpy (CLARABEL) reference, one run each.

Usage: ``python benchmarks/bench_wide.py [--n 10000] [--d 64] [--lam 1.0] [--seed 0]``.
Prints both timings, their ratio and the agreement (relative value difference, bias distance,
both optimality residuals). One run, wall clock: on a shared machine the ratio is noisy.
"""

from __future__ import annotations

import argparse
import time

import torch

from dictopt.wide.bound import wide_limit_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--lam", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(args.seed)
    # Heavy-tailed radii so that both regimes of the Huber function occur.
    scale = torch.rand(args.n, 1, generator=g, dtype=torch.float64) ** 2 * 4.0
    x = torch.randn(args.n, args.d, generator=g, dtype=torch.float64) * scale / args.d**0.5 + 0.1

    t0 = time.perf_counter()
    fast = wide_limit_bound(x, args.lam)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = wide_limit_bound(x, args.lam, method="cvxpy")
    t_ref = time.perf_counter() - t0

    rel = abs(fast.value - ref.value) / abs(ref.value)
    print(f"N={args.n} d={args.d} lam={args.lam}: {fast.n_outside} points outside the λ-ball")
    print(f"fast : L_inf={fast.value:.12g}  residual={fast.residual:.2e}  "
          f"iters={fast.n_iter}  time={t_fast:.3f}s")
    print(f"cvxpy: L_inf={ref.value:.12g}  residual={ref.residual:.2e}  "
          f"iters={ref.n_iter}  time={t_ref:.3f}s  converged={ref.converged}")
    print(f"relative value difference {rel:.2e}; |b_fast - b_cvxpy| = "
          f"{float((fast.bias - ref.bias).norm()):.2e}")
    print(f"speed-up (cvxpy time / fast time): {t_ref / t_fast:.1f}x")


if __name__ == "__main__":
    main()
