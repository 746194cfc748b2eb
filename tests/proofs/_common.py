"""Ground truth for the proof tests, in plain numpy (independent of dictopt's kernels).

Every quantity of THEORY §1–§2 is recomputed here from its definition, so that a test can
compare the library (``dictopt.check``, ``solve_codes``, ``Dictionary``) with the mathematics
of ``proofs/`` rather than with itself. Random instances reuse
:func:`tests.test_check.random_problem` (near-antipodal pairs, a planted hierarchy child and,
sometimes, an always-on atom).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from tests.test_check import random_problem


class Instance(NamedTuple):
    x: np.ndarray
    A: np.ndarray
    D: np.ndarray
    b: np.ndarray
    lam: float


def instance(seed: int, has_bias: bool = True) -> Instance:
    """A random float64 problem ``(x, codes, unit atoms, bias, λ)``."""
    return Instance(*random_problem(seed, has_bias))


def residuals(x: np.ndarray, A: np.ndarray, D: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``r_n = x_n − b − Σ_k a_kn d_k`` (rows)."""
    return x - A @ D - b


def loss(x: np.ndarray, A: np.ndarray, D: np.ndarray, b: np.ndarray, lam: float) -> float:
    """``L = (1/N) Σ_n [½‖r_n‖² + λ Σ_k a_kn]`` (THEORY §1)."""
    r = residuals(x, A, D, b)
    return float(0.5 * (r * r).sum(1).mean() + lam * A.sum(1).mean())


def pair_extremes(A: np.ndarray, i: int, j: int, tau: float = 0.0) -> tuple[float, float]:
    """``(H_ij, L_ij)``: max and min of ``a_i`` over the points where ``a_j ≤ τ``."""
    off = A[:, j] <= tau
    return float(A[off, i].max()), float(A[off, i].min())


def rel_err(a: float, b: float, floor: float = 1e-5) -> float:
    """Relative error of two loss changes. A measured change is a difference of two O(1)
    losses, exact only to ~1e-16 absolute, so tiny changes are compared against ``floor``."""
    return abs(a - b) / max(abs(a), abs(b), floor)


@lru_cache(maxsize=1)
def converged_optimum() -> Instance:
    """A well-converged optimum of a tiny independent world (positive controls).

    ``fit_classical`` stops at C2/C3 residuals ~1e-7 λ; the codes are then re-solved to KKT
    1e-12 for the final atoms and bias.
    """
    from dictopt.data.worlds import make_world
    from dictopt.solvers.classical import fit_classical
    from dictopt.solvers.coding import solve_codes

    lam = 0.05
    w = make_world("independent", seed=0, n=200, d=6, k=4, p=0.3, bias_norm=1.0)
    dic = fit_classical(w.x, K=4, lam=lam, seed=0, progress=False, max_iter=3000)
    A = solve_codes(dic.atoms, w.x, lam, bias=dic.bias, tol=1e-12).codes.numpy()
    return Instance(np.asarray(w.x, dtype=np.float64), A, dic.atoms.numpy(),
                    dic.bias.numpy(), lam)
