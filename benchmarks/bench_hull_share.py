"""The joint hull's share of a check (issue 17, point 3), batched membership weights on and off.

``python -m benchmarks.bench_hull_share --n 30000 --repeats 5``: trains the ReLU SAE (K = 64)
of ``benchmarks.compare.speed._sae(n)`` (or loads it from ``--cache``), then runs
``check(sae, x, hull=True)`` alternately with the batched weights (the default) and with the
column generation alone (``joint_hull(..., batch=False)``), timing the check and its
``joint_hull_verdicts`` in CPU seconds (``time.process_time()``; run with
``OMP_NUM_THREADS=1``). Prints one line per run (share, LPs, atoms passed by weights) and
whether the two reports' hull violations are identical bit for bit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any


def main() -> None:
    import torch

    import dictopt.check.checker as checker
    import dictopt.check.hull as hull
    from benchmarks.compare.speed import _sae
    from dictopt.check import check

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=None, help="where to keep the trained SAE")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cache is not None and args.cache.exists():
        sae, x = torch.load(args.cache, weights_only=False)
    else:
        sae, x = _sae(args.n)
        if args.cache is not None:
            torch.save((sae, x), args.cache)
    state: dict[str, Any] = {"batch": True, "hull_cpu": 0.0, "res": None}
    joint_hull, verdicts = hull.joint_hull, checker.joint_hull_verdicts

    def counted(*a: Any, **k: Any) -> Any:
        state["res"] = joint_hull(*a, batch=state["batch"], **k)
        return state["res"]

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.process_time()
        out = verdicts(*a, **k)
        state["hull_cpu"] = time.process_time() - t0
        return out

    hull.joint_hull, checker.joint_hull_verdicts = counted, timed
    reports = {}
    for batch in [True, False] * args.repeats:
        state["batch"] = batch
        t0, w0 = time.process_time(), time.perf_counter()
        rep = check(sae, x, hull=True)
        cpu, res = time.process_time() - t0, state["res"]
        reports[batch] = rep
        print(f"batch={batch!s:5} check {cpu:.3f} CPU s, hull {state['hull_cpu']:.3f} CPU s "
              f"({state['hull_cpu'] / cpu:.1%}), wall {time.perf_counter() - w0:.2f} s, "
              f"{res.lp_solves} LPs, {len(res.certified)} atoms passed by weights, "
              f"{rep.summary['counts']['hull']} hull violations", flush=True)

    def key(rep: Any) -> list[Any]:
        return [(v.j, v.slope, v.step, v.detail, v.move.q.tolist()) for v in
                rep.by_condition("hull")]

    print("hull violations identical:", key(reports[True]) == key(reports[False]))


if __name__ == "__main__":
    main()
