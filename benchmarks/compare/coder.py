"""Exact nonnegative-lasso coder vs per-point cvxpy (CLARABEL) and scikit-learn ``Lasso``.

Problem: ``N`` points, ``K`` random unit atoms in ``R^d``; data = sparse nonnegative codes @
atoms + noise; ``min_{a ≥ 0} ½‖x − Dᵀa‖² + λ Σ a`` for every point. scikit-learn's ``Lasso``
minimises ``(1/(2 n_samples))‖y − Xw‖² + α‖w‖₁`` with ``n_samples = d`` here, so ``α = λ/d``.
dictopt solves all ``N`` points at once; the baselines loop over points and are timed on the
first ``m`` points (their cost per point does not depend on the others), so the ratio is
per point. Accuracy: every side's codes are scored by the same C1 KKT residual (max violation
/ λ, :func:`dictopt.solvers.coding.kkt_violations`; codes ≤ 1e-9 count as inactive, since
interior-point codes are never exactly 0), and by how much their per-point objective exceeds
that of dictopt's exact codes (max relative excess; the KKT residual of an interior-point
solution can be large while its objective is optimal to 1e-9).
"""

from __future__ import annotations

from typing import Any

import numpy as np

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

TAU = 1e-9
SIZES = {
    "smoke": dict(n=60, k=32, d=16, m_sklearn=20, m_cvxpy=4, repeats=1),
    "quick": dict(n=1000, k=256, d=64, m_sklearn=150, m_cvxpy=15, repeats=3),
    "full": dict(n=2000, k=256, d=64, m_sklearn=500, m_cvxpy=50, repeats=3),
}
LAM = 0.1
SKLEARN_TOL = 1e-10
"""Tight enough that sklearn's codes reach KKT/λ ≈ 1e-9 (its default 1e-4 gives ≈ 1e-3)."""


def make_problem(n: int, k: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random unit atoms ``[k, d]`` and ``x = A D + noise`` with about 5 active atoms per point."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.uniform(0.5, 1.5, (n, k)) * (rng.random((n, k)) < 5 / k)
    return D, A @ D + 0.01 * rng.standard_normal((n, d))


def kkt(D: np.ndarray, x: np.ndarray, codes: np.ndarray, lam: float) -> float:
    """Max C1 violation / λ of ``codes`` (entries ≤ TAU read as inactive)."""
    from dictopt.solvers.coding import kkt_violations

    codes = np.where(codes <= TAU, 0.0, codes)
    return float(kkt_violations(D, x, codes, lam).max()) / lam


def objective_excess(D: np.ndarray, x: np.ndarray, codes: np.ndarray, lam: float) -> float:
    """Max over points of ``(f(codes) − f(exact)) / f(exact)``, ``f`` the per-point lasso
    objective and ``exact`` dictopt's codes: how far from optimal the baseline's codes are."""
    from dictopt.solvers.coding import solve_codes

    def f(a: np.ndarray) -> np.ndarray:
        r = x - a @ D
        return 0.5 * (r * r).sum(1) + lam * a.sum(1)

    exact = solve_codes(D, x, lam, tol=1e-12).codes.numpy()
    return float(((f(codes) - f(exact)) / f(exact)).max())


# -- sides (each runs in its own process) ----------------------------------------------------


def side_ours(n: int, k: int, d: int, repeats: int) -> dict[str, Any]:
    import torch

    from dictopt.solvers.coding import solve_codes

    torch.set_num_threads(1)
    D, x = make_problem(n, k, d)
    solve_codes(D, x[:10], LAM, tol=1e-9)  # warm-up (not timed)
    mark_baseline()
    timing, res = time_repeats(lambda: solve_codes(D, x, LAM, tol=1e-9), repeats)
    return {"timing": timing.as_dict(), "points": n, "kkt_rel": kkt(D, x, res.codes.numpy(), LAM)}


def side_sklearn(n: int, k: int, d: int, m: int, repeats: int) -> dict[str, Any]:
    from sklearn.linear_model import Lasso

    D, x = make_problem(n, k, d)
    x = x[:m]
    model = Lasso(alpha=LAM / d, positive=True, fit_intercept=False, tol=SKLEARN_TOL,
                  max_iter=100_000)

    def loop() -> np.ndarray:
        out = np.zeros((m, k))
        for i in range(m):
            out[i] = model.fit(D.T, x[i]).coef_
        return out

    model.fit(D.T, x[0])  # warm-up (not timed)
    mark_baseline()
    timing, codes = time_repeats(loop, repeats)
    return {"timing": timing.as_dict(), "points": m, "kkt_rel": kkt(D, x, codes, LAM),
            "objective_excess": objective_excess(D, x, codes, LAM)}


def side_cvxpy(n: int, k: int, d: int, m: int, repeats: int) -> dict[str, Any]:
    import cvxpy as cp

    D, x = make_problem(n, k, d)
    x = x[:m]
    xp = cp.Parameter(d)
    a = cp.Variable(k, nonneg=True)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xp - D.T @ a) + LAM * cp.sum(a)))

    def loop() -> np.ndarray:
        out = np.zeros((m, k))
        for i in range(m):
            xp.value = x[i]
            prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
            out[i] = np.clip(a.value, 0, None)
        return out

    xp.value = x[0]
    prob.solve(solver=cp.CLARABEL)  # compile the problem once and warm up (not timed)
    mark_baseline()
    timing, codes = time_repeats(loop, repeats)
    return {"timing": timing.as_dict(), "points": m, "kkt_rel": kkt(D, x, codes, LAM),
            "objective_excess": objective_excess(D, x, codes, LAM)}


# -- the comparison ---------------------------------------------------------------------------


def per_point(side: dict[str, Any]) -> Timing:
    return Timing([s / side["points"] for s in side["timing"]["seconds"]])


def run_sides(mode: str) -> dict[str, Any]:
    s = SIZES[mode]
    n, k, d, reps = s["n"], s["k"], s["d"], s["repeats"]
    mod = __name__
    return {
        "dictopt": run_side(mod, "side_ours", n=n, k=k, d=d, repeats=reps + 2),
        "sklearn": run_side(mod, "side_sklearn", n=n, k=k, d=d, m=s["m_sklearn"], repeats=reps),
        "cvxpy": run_side(mod, "side_cvxpy", n=n, k=k, d=d, m=s["m_cvxpy"], repeats=reps),
    }


def summarise(mode: str, sides: dict[str, Any]) -> Result:
    s = SIZES[mode]
    n, k, d = s["n"], s["k"], s["d"]
    ours = per_point(sides["dictopt"])
    ratios = {name: ratio(per_point(sides[name]), ours) for name in ("cvxpy", "sklearn")}
    problem = dict(n=n, k=k, d=d, lam=LAM, **{key: s[key] for key in ("m_sklearn", "m_cvxpy")})
    prob = (f"N={n}, K={k}, d={d}, λ={LAM}; baselines on the first {s['m_cvxpy']} (cvxpy) / "
            f"{s['m_sklearn']} (sklearn) points, per point")
    acc = (f"KKT/λ: dictopt {sides['dictopt']['kkt_rel']:.1e}, cvxpy "
           f"{sides['cvxpy']['kkt_rel']:.1e}, sklearn (tol {SKLEARN_TOL:g}) "
           f"{sides['sklearn']['kkt_rel']:.1e}; objective above dictopt's (max relative): "
           f"cvxpy {sides['cvxpy']['objective_excess']:.1e}, sklearn "
           f"{sides['sklearn']['objective_excess']:.1e}")
    rows = []
    for name, label, tgt in (("cvxpy", "cvxpy CLARABEL, one problem per point", 100),
                             ("sklearn", "scikit-learn `Lasso(positive=True)` per point", 1)):
        r = ratios[name]
        met = r["median"] >= tgt
        rows.append(Row(
            comparison=f"exact coder `solve_codes` vs {label}",
            problem=prob,
            figure=f"{fmt_speed(r)}",
            memory=f"dictopt {mib(sides['dictopt'])} (all N) vs {name} {mib(sides[name])}",
            accuracy=acc,
            target=target_cell(f"≥ {tgt}×", met, f"{r['median']:.2f}× (median)"),
        ))
    return Result("coder", mode, problem, sides, ratios, rows)


def compare(mode: str) -> Result:
    """Run every side (each in a fresh process) and summarise them."""
    return summarise(mode, run_sides(mode))
