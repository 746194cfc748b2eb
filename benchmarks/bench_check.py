"""Cost of ``dictopt.check`` relative to one encode+decode pass, LP timings, peak memory.

    python benchmarks/bench_check.py            # K=4096, d=256, N=200k (the issue's size)
    python benchmarks/bench_check.py --quick    # K=1024, d=128, N=50k

Ratio: wall time of ``check(codes="own", hull=False)`` (two passes: C1–C5 over all ordered
pairs, certificates of the violations found) divided by one pass of ``encode`` + ``decode`` over
the same in-memory chunks, measured in the same run. The joint-hull LPs are timed separately
on the codes of the first ``--hull-n`` points for ``--hull-atoms`` atoms (restricted mode).
Peak memory: ``ru_maxrss`` of a fresh subprocess that checks a lazily generated source of
N = 100k and N = 1M rows (so the data never sit in memory), at ``--mem-K``/``--mem-d``.
Timings are noisy on a shared machine.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import torch

from dictopt.data.sources import ActivationSource
from dictopt.problem import Dictionary


class ReluEncoder:
    """``relu((x − b) W_enc + b_enc)`` with ``W_enc = atoms^T`` and a negative ``b_enc``."""

    architecture = "bench-relu"

    def __init__(self, atoms: torch.Tensor, bias: torch.Tensor, threshold: float) -> None:
        self.W = atoms.t().contiguous()
        self.b = bias
        self.b_enc = torch.full((atoms.shape[0],), -threshold, dtype=atoms.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b) @ self.W + self.b_enc)


class SyntheticSource(ActivationSource):
    """Lazily generated sparse combinations of the atoms plus noise (seeded per chunk)."""

    def __init__(self, atoms: torch.Tensor, bias: torch.Tensor, n: int, l0: int,
                 chunk_size: int = 8192) -> None:
        self.atoms, self.bias, self.n, self.l0 = atoms, bias, n, l0
        self.d = atoms.shape[1]
        self.chunk_size = chunk_size
        self.dtype = atoms.dtype

    def _raw_chunks(self) -> Iterator[tuple[torch.Tensor, str]]:
        K = self.atoms.shape[0]
        for i, lo in enumerate(range(0, self.n, self.chunk_size)):
            m = min(self.chunk_size, self.n - lo)
            g = torch.Generator().manual_seed(1000 + i)
            idx = torch.randint(0, K, (m, self.l0), generator=g)
            val = torch.rand(m, self.l0, generator=g, dtype=self.dtype) + 0.5
            codes = torch.zeros(m, K, dtype=self.dtype).scatter_add_(1, idx, val)
            x = codes @ self.atoms + self.bias
            x += 0.05 * torch.randn(m, self.d, generator=g, dtype=self.dtype)
            yield x, f"synthetic chunk {i}"


def make_dictionary(K: int, d: int, seed: int = 0) -> Dictionary:
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(K, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    bias = 0.1 * torch.randn(d, generator=g)
    return Dictionary(atoms=atoms, bias=bias, lam=0.05, encoder=ReluEncoder(atoms, bias, 0.4))


def ratio(K: int, d: int, N: int, l0: int) -> None:
    from dictopt.check import check

    dic = make_dictionary(K, d)
    src = SyntheticSource(dic.atoms, dic.bias, N, l0)
    chunks = [c.data for c in src.iter_chunks()]  # in memory: both sides read the same arrays

    class Mem(ActivationSource):
        def __init__(self) -> None:
            self.d, self.n, self.chunk_size, self.dtype = d, N, 8192, torch.float32

        def _raw_chunks(self):  # noqa: ANN202
            for i, c in enumerate(chunks):
                yield c, f"chunk {i}"

    mem = Mem()
    t = time.perf_counter()
    l0_seen = 0.0
    for c in mem.iter_chunks():
        a = dic.encode(c.data)
        xhat = dic.decode(a)
        l0_seen += float((a > 0).sum())
    base = time.perf_counter() - t
    del xhat
    t = time.perf_counter()
    rep = check(dic, mem, codes="own", hull=False, amortisation=False)
    full = time.perf_counter() - t
    s = rep.summary
    print(f"K={K} d={d} N={N}: L0={l0_seen / N:.1f} encode+decode {base:.2f}s, "
          f"check {full:.2f}s, ratio {full / base:.2f}")
    print(f"  timings {({k: round(v, 2) for k, v in s['timings'].items()})}; "
          f"pairs sent to pass 2: {s['pairs_in_pass2']}; violations {s['counts']}")


def hull_timing(K: int, d: int, n: int, atoms: int, l0: int) -> None:
    from dictopt.check.hull import joint_hull
    from dictopt.check.tolerances import DEFAULT_TOLERANCES

    dic = make_dictionary(K, d)
    src = SyntheticSource(dic.atoms, dic.bias, n, l0)
    A = torch.cat([dic.encode(c.data) for c in src.iter_chunks()]).to(torch.float64)
    t = time.perf_counter()
    v = joint_hull(A, dic.atoms.double(), A.mean(0), 0.05, 0.0, DEFAULT_TOLERANCES,
                   atoms=list(range(atoms)))
    dt = time.perf_counter() - t
    print(f"joint hull (restricted to co-active atoms), {n} points, {atoms} atoms: {dt:.2f}s "
          f"({dt / atoms * 1e3:.0f} ms per LP), {len(v)} violations")


def peak_rss(K: int, d: int, N: int, l0: int) -> None:
    from dictopt.check import check

    dic = make_dictionary(K, d)
    src = SyntheticSource(dic.atoms, dic.bias, N, l0)
    check(dic, src, codes="own", hull=False, amortisation=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--K", type=int, default=4096)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--N", type=int, default=200_000)
    p.add_argument("--l0", type=int, default=8, help="features per generated point")
    p.add_argument("--hull-n", type=int, default=20_000)
    p.add_argument("--hull-atoms", type=int, default=32)
    p.add_argument("--mem-K", type=int, default=1024)
    p.add_argument("--mem-d", type=int, default=128)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--_rss", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    if args._rss:
        peak_rss(args.mem_K, args.mem_d, args._rss, args.l0)
        return
    if args.quick:
        args.K, args.d, args.N, args.hull_n = 1024, 128, 50_000, 5_000
    ratio(args.K, args.d, args.N, args.l0)
    hull_timing(args.K, args.d, args.hull_n, args.hull_atoms, args.l0)
    if not args.skip_memory:
        rss = {}
        for n in (100_000, 1_000_000):
            out = subprocess.run(
                [sys.executable, __file__, "--_rss", str(n), "--mem-K", str(args.mem_K),
                 "--mem-d", str(args.mem_d), "--l0", str(args.l0)],
                capture_output=True, text=True, check=True,
            )
            rss[n] = int(out.stdout.strip().splitlines()[-1])
        growth = rss[1_000_000] / rss[100_000] - 1
        print(f"peak RSS (ru_maxrss, K={args.mem_K}, d={args.mem_d}): "
              f"N=100k {rss[100_000] / 1024:.0f} MiB, N=1M {rss[1_000_000] / 1024:.0f} MiB, "
              f"growth {100 * growth:.1f}%")


if __name__ == "__main__":
    main()
