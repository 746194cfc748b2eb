"""Exact nonnegative-lasso coder vs cvxpy (CLARABEL, per point) vs scikit-learn Lasso.

N = 2000 points, K = 256 random unit atoms, d = 64; data = sparse nonnegative codes @ atoms
+ noise. Every method's codes are scored with the same C1 KKT residual
(:func:`dictopt.solvers.coding.kkt_violations`, max violation / λ). cvxpy is timed on a subset
of points and extrapolated per point (said in the output). Times are the minimum over repeats;
the machine may be shared, so treat ratios as rough.

Run: ``python benchmarks/bench_coder.py [--cvxpy-points 50] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import time

import cvxpy as cp
import numpy as np
from sklearn.linear_model import Lasso

from dictopt.solvers.coding import kkt_violations, solve_codes


def make_problem(n: int, k: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.uniform(0.5, 1.5, (n, k)) * (rng.random((n, k)) < 5 / k)
    x = A @ D + 0.01 * rng.standard_normal((n, d))
    return D, x


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def ours(D, x, lam):
    return solve_codes(D, x, lam, tol=1e-9).codes.numpy()


def sklearn_loop(D, x, lam, tol):
    d = D.shape[1]
    model = Lasso(alpha=lam / d, positive=True, fit_intercept=False, tol=tol, max_iter=100_000)
    out = np.zeros((x.shape[0], D.shape[0]))
    for n in range(x.shape[0]):
        out[n] = model.fit(D.T, x[n]).coef_
    return out


def cvxpy_loop(D, x, lam):
    k, d = D.shape
    xp = cp.Parameter(d)
    a = cp.Variable(k, nonneg=True)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xp - D.T @ a) + lam * cp.sum(a)))
    out = np.zeros((x.shape[0], k))
    for n in range(x.shape[0]):
        xp.value = x[n]
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        out[n] = np.clip(a.value, 0, None)
    return out


def kkt(D, x, codes, lam):
    return float(kkt_violations(D, x, codes, lam).max()) / lam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--cvxpy-points", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    D, x = make_problem(args.n, args.k, args.d)
    lam, n, m = args.lam, args.n, args.cvxpy_points
    ours(D, x[:10], lam)  # warm-up (imports, thread pools)

    rows = []
    t, codes = best_time(lambda: ours(D, x, lam), args.repeats)
    rows.append(("dictopt solve_codes (all N)", t, t / n, kkt(D, x, codes, lam), n))
    t_ours = t / n
    for tol in (1e-4, 1e-10):
        t, codes = best_time(lambda tol=tol: sklearn_loop(D, x, lam, tol), 1)
        rows.append((f"sklearn Lasso loop, tol={tol:g}", t, t / n, kkt(D, x, codes, lam), n))
    t, codes = best_time(lambda: cvxpy_loop(D, x[:m], lam), 1)
    rows.append(
        (f"cvxpy CLARABEL loop ({m} pts, extrapolated)", t * n / m, t / m,
         kkt(D, x[:m], codes, lam), m)
    )

    print(f"N={n} K={args.k} d={args.d} lam={lam}  (min over {args.repeats} repeats for ours; "
          f"cvxpy timed on {m} points and extrapolated to N; shared CPU: rough)")
    print(f"{'method':46s} {'time N (s)':>11s} {'per point':>11s} {'KKT/λ':>10s} {'× ours':>9s}")
    for name, total, per, res, _ in rows:
        print(f"{name:46s} {total:11.3f} {per * 1e3:9.3f}ms {res:10.2e} {per / t_ours:9.1f}")


if __name__ == "__main__":
    main()
