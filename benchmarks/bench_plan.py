"""The check's pair planning alone (issue #17): the sweep against the row-block products.

One command::

    python -m benchmarks.bench_plan --work DIR [--repeat 1]

``DIR`` holds a ``bench_widths`` size (``DIR/sae``, ``DIR/X.npy``). The first run saves the
planner's inputs (pass 1's statistics, the dictionary, the options) to ``DIR/plan_args.pt`` by
running ``dictopt check`` (as ``bench_widths`` does) up to the planning; later runs load them.
It then times :func:`dictopt.check.plan.decide_pairs` with ``sweep=False`` (every block forms
its own ``[block, K]`` products: ``K² d`` multiply-adds) and ``sweep=True`` (each unordered pair
once), in CPU seconds (``time.process_time``; run it with one thread), checks that both plans
are equal bit for bit and prints how many blocks the sweep left to their own products.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_amortisation import LAM


def save_args(work: Path) -> Path:
    """Run the check up to the planning and save ``decide_pairs``'s arguments."""
    import dictopt.check.checker as checker
    from dictopt.cli import main

    out = work / "plan_args.pt"

    def stop(*args: Any, **kwargs: Any) -> None:
        torch.save((args, kwargs), out)
        raise SystemExit(0)

    checker.decide_pairs = stop
    try:
        main(["check", str(work / "sae"), "--activations", str(work / "X.npy"), "--lam",
              str(LAM), "--certify", "0", "--no-hull", "--amortisation", "off", "--quiet"])
    except SystemExit:
        pass
    return out


def same(a: Any, b: Any) -> bool:
    """Plans equal bit for bit (tensors: same dtype, shape and values)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    return a == b


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="a bench_widths size's folder")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args(argv)
    path = args.work / "plan_args.pt"
    if not path.exists():
        if not (args.work / "sae").exists():
            print(f"error: no {args.work / 'sae'}: run benchmarks.bench_widths for this size "
                  "first, or pass its folder with --work", file=sys.stderr)
            return 2
        save_args(args.work)
    import dictopt.check.plan as plan

    a, kw = torch.load(path, weights_only=False)
    calls = [0]
    own = plan._classify_block

    def counted(*x: Any, **k: Any) -> Any:
        calls[0] += 1
        return own(*x, **k)

    plan._classify_block = counted
    plans = {}
    for _ in range(args.repeat):
        for sweep in (False, True):
            calls[0] = 0
            t = time.process_time()
            plans[sweep] = plan.decide_pairs(*a, **kw, sweep=sweep)
            cpu = time.process_time() - t
            print(f"sweep={sweep}: {cpu:.2f} s CPU, {calls[0]} blocks formed their own "
                  "products", flush=True)
    print("plans equal bit for bit:", same(tuple(plans[False]), tuple(plans[True])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
