"""The default check of a wide ReLU SAE, peak memory against one encode+decode pass (issue #21).

One command::

    python -m benchmarks.bench_amortisation [--rows 30000] [--K 32768] [--d 768] [--l0 40]

1. **make**: a synthetic ReLU SAE, built without training: ``K`` random unit decoder rows, the
   encoder their transpose with one threshold ``θ`` tuned (a quantile of the pre-activations
   on 1,024 rows) so that the mean L0 of its own codes is ``--l0``; ``b_dec = 0``. Data from it:
   each row is ``l0`` random atoms with Exp(1) magnitudes plus Gaussian noise (σ = 0.002 per
   coordinate), written as float32 ``X.npy``. Saved in dictopt's native format as a
   ``relu`` SAE with ``l1_coefficient = 2 λ`` (λ = 0.05).
2. **encdec**: one encode+decode pass over the rows, streamed in the checker's chunks of
   8,192 rows (``decode(encode(x))``), as the baseline: the least any check must do.
3. **check**: ``dictopt check SAE --activations X.npy --lam 0.05 --certify 0 --json ...``,
   the default check (own codes, amortisation gap on the default sample).

``python -m benchmarks.bench_amortisation alone --sample 48`` (after a run made the files)
measures the amortisation step by itself on the first chunk: the peak resident memory above
the chunk's state (its rows and own codes), with the Linux peak reset just before the step.

Steps 2 and 3 run in their own processes under ``/usr/bin/time -v``; the table gives their
CPU time (user + system), wall time and peak resident memory (maximum RSS), the ratio, the
check's L0 and the sampled amortisation gap with its standard error. ``--certify 0`` (the
default here) leaves out the certificate pass (one more encode pass); ``--certify 20`` runs
the CLI's own default. ``--reuse`` keeps the files of an earlier run of the same size.
Threads: ``--threads`` (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import timed_process

LAM = 0.05
NOISE = 0.002
CHUNK = 8192


def make(work: Path, K: int, d: int, rows: int, l0: int, seed: int = 0) -> dict[str, Any]:
    """Write ``work/sae`` (native ReLU SAE) and ``work/X.npy``; return what was built."""
    import numpy as np
    import torch

    from dictopt.io.native import save_dictionary
    from dictopt.solvers.sae.relu import ReLUSAE, ReLUSAEConfig

    g = torch.Generator().manual_seed(seed)
    D = torch.randn(K, d, generator=g)
    D /= D.norm(dim=1, keepdim=True)
    x = np.lib.format.open_memmap(work / "X.npy", mode="w+", dtype=np.float32, shape=(rows, d))
    for lo in range(0, rows, 2048):
        m = min(2048, rows - lo)
        idx = torch.stack([torch.randperm(K, generator=g)[:l0] for _ in range(m)])
        amp = -torch.log(torch.rand(m, l0, generator=g))  # Exp(1)
        xs = torch.einsum("ml,mld->md", amp, D[idx]) + NOISE * torch.randn(m, d, generator=g)
        x[lo:lo + m] = xs.numpy()
    x.flush()
    pre = torch.from_numpy(np.asarray(x[:1024])) @ D.T
    theta = float(torch.quantile(pre.flatten()[::7], 1 - l0 / K))
    cfg = ReLUSAEConfig(d_in=d, d_sae=K, l1_coefficient=2 * LAM, dtype="float32")
    sae = ReLUSAE(cfg)
    with torch.no_grad():
        sae.W_dec.copy_(D)
        sae.W_enc.copy_(D.T)
        sae.b_enc.fill_(-theta)
        sae.b_dec.zero_()
    save_dictionary(sae.to_dictionary(), work / "sae")
    l0_own = float((torch.relu(pre - theta) > 0).sum(1).float().mean())
    return {"K": K, "d": d, "rows": rows, "l0_data": l0, "theta": theta, "l0_own_1024": l0_own}


def encdec(work: Path) -> None:
    """One encode+decode pass over ``work/X.npy`` in chunks of 8,192 rows."""
    from dictopt.data.sources import as_source
    from dictopt.io import load

    dic = load(work / "sae")
    t = time.perf_counter()
    for chunk in as_source(work / "X.npy", dtype=dic.dtype, chunk_size=CHUNK).iter_chunks():
        dic.decode(dic.encode(chunk.data))
    print(f"encode+decode {time.perf_counter() - t:.1f} s, dtype {dic.dtype}")


def alone(work: Path, sample: int) -> None:
    """The amortisation step alone on the first 8,192-row chunk, about ``sample`` rows."""
    import numpy as np
    import torch

    from dictopt.check.amortisation import AmortisationPlan, AmortisationSums
    from dictopt.io import load
    from dictopt.lasso import plan_coder

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(key + ":"))

    dic = load(work / "sae")
    x = torch.from_numpy(np.load(work / "X.npy")[:CHUNK]).to(dic.dtype)
    a = dic.encode(x)
    print(f"coder plan: {plan_coder(dic.K, dic.d)}")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size to the current one
    base = status("VmRSS")
    t = time.perf_counter()
    sums = AmortisationSums(dic.K, dic.device)
    sums.update(AmortisationPlan("sample", sample, x.shape[0]), dic, LAM, x, a, 0)
    print(f"{sums.m} rows in {time.perf_counter() - t:.0f} s; peak "
          f"{(status('VmHWM') - base) / 1e9:.2f} GB above the chunk's state "
          f"({base / 1e9:.2f} GB, of which own codes {a.numel() * a.element_size() / 1e9:.2f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", nargs="?", default="all", choices=("all", "encdec", "alone"))
    p.add_argument("--sample", type=int, default=48, help="rows for the 'alone' step")
    p.add_argument("--rows", type=int, default=30_000)
    p.add_argument("--K", type=int, default=32_768)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--l0", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--certify", type=int, default=0,
                   help="the check's --certify N (default 0; the CLI's own default is 20)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the SAE and X.npy of an earlier run in --work (same sizes)")
    p.add_argument("--work", type=Path, default=Path("/tmp/dictopt_bench_amortisation"))
    args = p.parse_args(argv)
    if args.step == "encdec":
        encdec(args.work)
        return 0
    if args.step == "alone":
        alone(args.work, args.sample)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    made = args.work / "built.json"
    if args.reuse and made.exists() and json.loads(made.read_text())["rows"] == args.rows:
        built = json.loads(made.read_text())
    else:
        built = make(args.work, args.K, args.d, args.rows, args.l0)
        made.write_text(json.dumps(built) + "\n")
    py = sys.executable
    base = timed_process([py, "-m", "benchmarks.bench_amortisation", "encdec", "--work",
                   str(args.work)], args.threads)
    report = args.work / "report.json"
    chk = timed_process([py, "-m", "dictopt", "check", str(args.work / "sae"), "--activations",
                  str(args.work / "X.npy"), "--lam", str(LAM), "--certify", str(args.certify),
                  "--quiet",
                  "--json", str(report)], args.threads)
    s = json.loads(report.read_text())["summary"]
    am = s["amortisation"]
    plan_line = next((ln for ln in chk["stdout"].splitlines()
                      if ln.startswith("amortisation gap:")), "")
    result = {
        **built, "threads": args.threads, "certify": args.certify, "l0_check": s["l0"],
        "encdec": {k: base[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "check": {k: chk[k] for k in ("seconds", "cpu_seconds", "peak_rss_mib")},
        "peak_ratio": chk["peak_rss_mib"] / base["peak_rss_mib"],
        "time_ratio": chk["cpu_seconds"] / base["cpu_seconds"],
        "amortisation": {k: am[k] for k in ("rows", "sample_size", "population", "loss_gap",
                                            "loss_gap_se", "optimal_loss")},
        "timings": s["timings"], "plan_line": plan_line,
    }
    (args.work / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(plan_line)
    print("| K | d | rows | L0 | encode+decode | check (default) | peak ratio | CPU time ratio | "
          "amortisation gap ± SE (sample) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.K:,} | {args.d} | {args.rows:,} | {s['l0']:.1f} | "
          f"{base['cpu_seconds']:.0f} CPU s ({base['seconds']:.0f} s wall), "
          f"{base['peak_rss_mib']:,.0f} MiB | "
          f"{chk['cpu_seconds']:.0f} CPU s ({chk['seconds']:.0f} s wall), "
          f"{chk['peak_rss_mib']:,.0f} MiB | "
          f"**{result['peak_ratio']:.2f}×** | {result['time_ratio']:.2f}× | "
          f"{am['loss_gap']:.4g} ± {am['loss_gap_se']:.2g} ({am['sample_size']} of "
          f"{am['population']:,} rows) |")
    print("check timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["timings"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
