"""Wide-limit bound ``L_∞ = min_b (1/N) Σ h_λ(‖x_n − b‖)`` (THEORY §3): fast solver vs cvxpy.

dictopt's ``wide_limit_bound(method="fast")`` (Newton with line search, torch float64) against
the same function with ``method="cvxpy"`` (the epigraph form solved by CLARABEL, the reference).
Heavy-tailed radii so both regimes of the Huber function occur. Accuracy: the relative
difference of the two values and both optimality residuals ``‖∇f(b)‖ / λ``.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import (
    Result,
    Row,
    Timing,
    fmt_speed,
    mark_baseline,
    mib,
    ratio,
    run_side,
    target_cell,
    time_repeats,
)

SIZES = {
    "smoke": dict(n=300, d=8, repeats=1),
    "quick": dict(n=3000, d=32, repeats=3),
    "full": dict(n=10_000, d=64, repeats=3),
}
LAM = 1.0
TARGET = 50


def make_data(n: int, d: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(n, 1, generator=g, dtype=torch.float64) ** 2 * 4.0
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale / d**0.5 + 0.1


def side(n: int, d: int, repeats: int, method: str) -> dict[str, Any]:
    import torch

    from dictopt.wide.bound import wide_limit_bound

    torch.set_num_threads(1)
    x = make_data(n, d)
    wide_limit_bound(x[:50], LAM, method=method)  # warm-up (not timed)
    mark_baseline()
    timing, res = time_repeats(lambda: wide_limit_bound(x, LAM, method=method), repeats)
    return {"timing": timing.as_dict(), "value": res.value, "residual": res.residual,
            "bias": res.bias.tolist(), "n_outside": res.n_outside}


def run_sides(mode: str) -> dict[str, Any]:
    s = SIZES[mode]
    kw = dict(n=s["n"], d=s["d"])
    return {
        "dictopt": run_side(__name__, "side", repeats=s["repeats"] + 2, method="fast", **kw),
        "cvxpy": run_side(__name__, "side", repeats=max(1, s["repeats"] - 1), method="cvxpy",
                          **kw),
    }


def summarise(mode: str, sides: dict[str, Any]) -> Result:
    s = SIZES[mode]
    kw = dict(n=s["n"], d=s["d"])
    f, c = sides["dictopt"], sides["cvxpy"]
    r = ratio(Timing.from_dict(c["timing"]), Timing.from_dict(f["timing"]))
    rel = abs(f["value"] - c["value"]) / abs(c["value"])
    met = r["median"] >= TARGET
    row = Row(
        comparison="wide-limit bound `wide_limit_bound` (fast) vs the same problem in cvxpy "
                   "CLARABEL",
        problem=f"N={s['n']}, d={s['d']}, λ={LAM} ({f['n_outside']} points outside the λ-ball)",
        figure=f"{fmt_speed(r)}",
        memory=f"dictopt {mib(f)} vs cvxpy {mib(c)}",
        accuracy=f"values agree to {rel:.1e} (relative); residual ‖∇f‖/λ: dictopt "
                 f"{f['residual']:.1e}, cvxpy {c['residual']:.1e}",
        target=target_cell(f"≥ {TARGET}×", met, f"{r['median']:.1f}× (median)"),
    )
    return Result("wide", mode, {**kw, "lam": LAM}, sides, {"cvxpy": r, "value_rel_diff": rel},
                  [row])


def compare(mode: str) -> Result:
    """Run every side (each in a fresh process) and summarise them."""
    return summarise(mode, run_sides(mode))
