"""Speed where users feel it (issue 17): the joint hull, optimal codes, repair and the demo.

Four rows, every side in its own process, every ratio taken in the same run:

* ``hull``: a ReLU SAE (K = 64) trained by dictopt on the hierarchy world, checked with its own
  codes and ``hull=True``. The joint hull by column generation (:mod:`dictopt.check.hull`) is
  timed against the LP on every distinct inactive point for every atom (the algorithm before
  column generation, re-implemented here from :func:`dictopt.check.hull.hull_distance`), and
  its share of the whole check is reported (target ≤ 10 %). Equal accuracy: the same atoms
  fail, with the same gaps.
* ``optimal``: ``check(codes="optimal")`` against ``check(codes="own", amortisation=False)``
  on random unit atoms with a ReLU encoder (the problem of the ``check`` comparison) at
  K = 4,096, d = 768, data with 45 atoms per point; also against the optimal-codes check with
  the code cache off (codes solved in both passes, as before). Target: ≤ 3× own codes.
* ``repair``: :func:`dictopt.check.repair.repair` on the demo world (hierarchy, N = 4,000)
  holding and warm-starting codes, against the same repair solving every code from zero
  (``code_budget_bytes=0``). Equal accuracy: the same final loss to 1e-9.
* ``demo``: the whole ``dictopt demo`` (full mode only; target ≤ 45 s on an idle 2-core box).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.harness import (
    Result,
    Row,
    Timing,
    fmt_ratio,
    fmt_speed,
    mark_baseline,
    mib,
    ratio,
    run_side,
    target_cell,
    time_repeats,
)

SIZES = {
    "smoke": dict(hull_n=2000, opt=dict(K=256, d=64, N=200), repair_rounds=3, repeats=1,
                  demo=False),
    "quick": dict(hull_n=10_000, opt=dict(K=1024, d=256, N=500), repair_rounds=20, repeats=2,
                  demo=False),
    "full": dict(hull_n=30_000, opt=dict(K=4096, d=768, N=2000), repair_rounds=100,
                 repeats=3, demo=True),
}
LAM = 0.05
HULL_K = 64
OPT_L0 = 45
OPT_THETA = 0.6


def _sae(n: int):
    """A ReLU SAE (K = 64) trained on the hierarchy world, and its data."""
    import torch

    from dictopt.data.worlds import make_world
    from dictopt.solvers.train import fit_sae

    w = make_world("hierarchy", seed=1, n=n)
    sae = fit_sae("relu", w.x, K=HULL_K, lam=LAM, seed=0, total_steps=3000, batch_size=256,
                  lr_decay_steps=600, progress=False).to(torch.float64)
    return sae, torch.as_tensor(w.x, dtype=torch.float64)


def _hull_every_point(A, D, abar, tau, tol):
    """The joint hull as it was solved before column generation: per atom, the LP on every
    distinct inactive point. Returns ``{atom: gap}`` of the violated atoms."""
    import numpy as np
    import torch

    from dictopt.check.hull import hull_distance

    K = A.shape[1]
    gram = D @ D.T
    floor = tol.floor_rel * float(abar.max())
    out = {}
    for k in range(K):
        off = A[:, k] <= tau
        if not bool(off.any()):
            continue
        J = [j for j in range(K) if j != k]
        v = ((1 - gram[J, k]) * abar[J]).numpy()
        P = np.unique(A[off][:, J].numpy(), axis=0)
        dist, q, _ = hull_distance(v, P)
        if dist <= tol.hull_rel * (1 + np.abs(v).sum()):
            continue
        gap = float(q @ v) - float((A[off][:, J] @ torch.from_numpy(q)).max())
        if gap > tol.pair_rel * float(abar.max()) + floor:
            out[k] = gap
    return out


def side_hull(n: int, repeats: int, method: str) -> dict[str, Any]:
    """``method``: ``check`` (check with the hull, its share), ``cg`` or ``every_point``."""
    import torch

    from dictopt.check import check
    from dictopt.check.hull import joint_hull
    from dictopt.check.tolerances import DEFAULT_TOLERANCES

    torch.set_num_threads(1)
    sae, x = _sae(n)
    A = sae.encode(x).to(torch.float64)
    abar, D = A.mean(0), sae.atoms.to(torch.float64)
    mark_baseline()
    if method == "check":
        import dictopt.check.checker as checker

        cpu: dict[str, list[float]] = {"check": [], "hull": []}
        verdicts = checker.joint_hull_verdicts

        def timed_hull(*args: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            out = verdicts(*args, **kw)
            cpu["hull"].append(time.process_time() - t0)
            return out

        def run() -> Any:
            t0 = time.process_time()
            rep = check(sae, x, hull=True)
            cpu["check"].append(time.process_time() - t0)
            return rep

        checker.joint_hull_verdicts = timed_hull  # CPU time of the hull inside the check
        timing, rep = time_repeats(run, repeats)
        t = rep.summary["timings"]
        return {"timing": timing.as_dict(), "hull_seconds": t["hull"], "total": t["total"],
                "cpu_check": cpu["check"], "cpu_hull": cpu["hull"],
                "l0": float((A > 0).sum(1).double().mean()), "counts": rep.summary["counts"]}
    if method == "cg":
        timing, res = time_repeats(
            lambda: joint_hull(A, D, abar, LAM, 0.0, DEFAULT_TOLERANCES), repeats)
        gaps = {v.j: v.detail["gap"] for v in res.violations}
        return {"timing": timing.as_dict(), "gaps": gaps, "lp_solves": res.lp_solves,
                "certified": len(res.certified)}
    timing, gaps = time_repeats(
        lambda: _hull_every_point(A, D, abar, 0.0, DEFAULT_TOLERANCES), max(1, repeats - 1))
    return {"timing": timing.as_dict(), "gaps": gaps}


def side_optimal(K: int, d: int, N: int, repeats: int, method: str) -> dict[str, Any]:
    """``method``: ``own``, ``optimal`` or ``optimal_twice`` (code cache off)."""
    import torch

    import dictopt.check.codecache as codecache
    from benchmarks.compare.check import make_chunk, make_dictionary
    from dictopt.check import check

    torch.set_num_threads(1)
    dic = make_dictionary(K, d, theta=OPT_THETA)
    x = make_chunk(dic.atoms, dic.bias, N, 7, l0=OPT_L0)
    if method == "optimal_twice":
        # hold nothing: pass 2 solves the lasso again (the cost before the code cache)
        codecache.CodeCache.put = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    codes = "own" if method == "own" else "optimal"
    mark_baseline()
    cpu: list[float] = []

    def run() -> Any:
        t0 = time.process_time()
        rep = check(dic, x, codes=codes, hull=False, amortisation=False)
        cpu.append(time.process_time() - t0)
        return rep

    timing, rep = time_repeats(run, repeats)
    return {"timing": timing.as_dict(), "cpu": cpu, "l0": rep.summary["l0"],
            "loss": rep.summary["loss"], "counts": rep.summary["counts"]}


def side_repair(rounds: int, reuse: bool) -> dict[str, Any]:
    import torch

    from dictopt.check.repair import repair
    from dictopt.data.worlds import make_world

    torch.set_num_threads(1)
    w = make_world("hierarchy", seed=0, n=4000)
    truth = w.truth(LAM)
    mark_baseline()
    kw = {} if reuse else {"code_budget_bytes": 0}
    timing, res = time_repeats(lambda: repair(truth, w.x, max_rounds=rounds, **kw), 1)
    return {"timing": timing.as_dict(), "losses": res.losses, "moves": len(res.moves)}


def side_demo() -> dict[str, Any]:
    import tempfile

    import torch

    from dictopt.demo import run_demo

    torch.set_num_threads(1)
    mark_baseline()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        res = run_demo(out, progress=False)
        seconds = time.perf_counter() - t
    return {"timing": Timing([seconds]).as_dict(), "repaired_loss": res.figures["repaired_loss"]}


def run_sides(mode: str) -> dict[str, Any]:
    s = SIZES[mode]
    n, rep = s["hull_n"], s["repeats"]
    out: dict[str, Any] = {
        "hull_check": run_side(__name__, "side_hull", n=n, repeats=rep, method="check"),
        "hull_cg": run_side(__name__, "side_hull", n=n, repeats=rep, method="cg"),
        "hull_every_point": run_side(__name__, "side_hull", n=n, repeats=rep,
                                     method="every_point"),
    }
    for method in ("own", "optimal", "optimal_twice"):
        out[f"opt_{method}"] = run_side(__name__, "side_optimal", repeats=rep, method=method,
                                        **s["opt"])
    for reuse in (True, False):
        out[f"repair_{'reuse' if reuse else 'cold'}"] = run_side(
            __name__, "side_repair", rounds=s["repair_rounds"], reuse=reuse)
    if s["demo"]:
        out["demo"] = run_side(__name__, "side_demo")
    return out


def summarise(mode: str, sides: dict[str, Any]) -> Result:
    s = SIZES[mode]
    rows = []
    hc, cg, ep = sides["hull_check"], sides["hull_cg"], sides["hull_every_point"]
    share = hc["hull_seconds"] / hc["total"]  # wall, from the report's timings
    if hc.get("cpu_check"):  # CPU time (one thread): robust to the load of a shared box
        i = sorted(range(len(hc["cpu_check"])), key=hc["cpu_check"].__getitem__)[
            len(hc["cpu_check"]) // 2]
        share_cpu, hull_cpu, check_cpu = (hc["cpu_hull"][i] / hc["cpu_check"][i],
                                          hc["cpu_hull"][i], hc["cpu_check"][i])
    else:  # older results: wall time only
        share_cpu, hull_cpu, check_cpu = share, hc["hull_seconds"], hc["total"]
    kind = "CPU" if hc.get("cpu_check") else "wall"
    r_hull = ratio(Timing.from_dict(ep["timing"]), Timing.from_dict(cg["timing"]))
    same = set(cg["gaps"]) == set(ep["gaps"]) and all(
        abs(cg["gaps"][k] - ep["gaps"][k]) <= 1e-6 * max(1.0, abs(ep["gaps"][k]))
        for k in ep["gaps"])
    rows.append(Row(
        comparison="joint hull C5′: column generation vs the LP on every point",
        problem=f"ReLU SAE K={HULL_K}, N={s['hull_n']} (L0 {hc['l0']:.1f}), own codes",
        figure=f"{fmt_speed(r_hull)}; hull = {share_cpu:.0%} of the check's {kind} time "
               f"({hull_cpu:.2f} of {check_cpu:.2f} s"
               + (f"; wall {share:.0%}, {hc['hull_seconds']:.2f} of {hc['total']:.2f} s)"
                  if kind == "CPU" else ")")
               + (f"; {cg['certified']} atoms passed by batched weights, {cg['lp_solves']} LPs"
                  if "certified" in cg else ""),
        memory=f"check {mib(hc)}",
        accuracy=("same violated atoms and gaps" if same else "DIFFERENT verdicts")
                 + f" ({len(ep['gaps'])} violated)",
        target=target_cell("hull ≤ 10 % of the check", share_cpu <= 0.10,
                           f"{share_cpu:.0%} ({kind})"),
    ))
    own, opt, twice = sides["opt_own"], sides["opt_optimal"], sides["opt_optimal_twice"]
    r_opt = ratio(Timing.from_dict(opt["timing"]), Timing.from_dict(own["timing"]))
    if opt.get("cpu") and own.get("cpu"):  # CPU time (one thread) where it was recorded
        r_opt = ratio(Timing(opt["cpu"]), Timing(own["cpu"]))
    r_cache = ratio(Timing.from_dict(twice["timing"]), Timing.from_dict(opt["timing"]))
    o = s["opt"]
    rows.append(Row(
        comparison="stress: optimal L0 ≫ data L0 — check with optimal codes vs own codes "
                   "(and vs solving them in both passes)",
        problem=f"random ReLU SAE K={o['K']}, d={o['d']}, N={o['N']}, data L0 {OPT_L0}; "
                f"optimal-codes L0 {opt['l0']:.1f}",
        figure=f"optimal / own {fmt_ratio(r_opt)}"
               + (" (CPU time)" if opt.get("cpu") else "")
               + f"; code cache {fmt_speed(r_cache)}",
        memory=f"own {mib(own)}, optimal {mib(opt)}, solved twice {mib(twice)}",
        accuracy="same report with and without the cache (tests/test_code_cache.py)",
        target=target_cell("optimal ≤ 3× own", r_opt["median"] <= 3,
                           f"{r_opt['median']:.1f}× (median)"),
    ))
    warm, cold = sides["repair_reuse"], sides["repair_cold"]
    r_rep = ratio(Timing.from_dict(cold["timing"]), Timing.from_dict(warm["timing"]))
    diff = abs(warm["losses"][-1] - cold["losses"][-1])
    rows.append(Row(
        comparison="repair: held + warm-started codes vs every code solved from zero",
        problem=f"demo world (hierarchy, N=4000, K=32), {s['repair_rounds']} rounds at most "
                f"({warm['moves']} moves); {Timing.from_dict(warm['timing']).median:.1f} s",
        figure=fmt_speed(r_rep),
        memory=f"reuse {mib(warm)} vs cold {mib(cold)}",
        accuracy=f"final loss differs by {diff:.1e}",
        target=target_cell("same loss to 1e-9", diff <= 1e-9 * abs(cold["losses"][-1]),
                           f"{diff:.1e}"),
    ))
    if "demo" in sides:
        dm = sides["demo"]
        sec = Timing.from_dict(dm["timing"]).median
        rows.append(Row(
            comparison="`dictopt demo`, end to end",
            problem="the built-in demonstration (seed 0)",
            figure=f"{sec:.0f} s",
            memory=mib(dm),
            accuracy=f"repaired loss {dm['repaired_loss']:.9g}",
            target=target_cell("≤ 45 s on an idle 2-core box", sec <= 45, f"{sec:.0f} s"),
        ))
    ratios = {"hull_every_point_over_cg": r_hull, "hull_share": share,
              "hull_share_cpu": share_cpu,
              "optimal_over_own": r_opt, "twice_over_cached": r_cache, "repair_cold_over_warm":
              r_rep}
    return Result("speed", mode, dict(s), sides, ratios, rows)


def compare(mode: str) -> Result:
    """Run every side (each in a fresh process) and summarise them."""
    return summarise(mode, run_sides(mode))
