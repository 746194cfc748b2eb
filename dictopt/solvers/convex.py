"""A reference dictionary learner built from convex cvxpy steps (small problems only).

Each iteration alternates two convex problems, solved by CLARABEL:

1. **Codes** — all codes at once: ``min_{A ≥ 0} ½‖X − 1bᵀ − AD‖²_F + λ Σ A``.
2. **Atoms and bias jointly** — the relaxed atom step
   ``min_{D, b} ½‖X − 1bᵀ − AD‖²_F`` s.t. ``‖d_k‖ ≤ 1``, convex for fixed codes.
3. **Canonicalise** — an atom of norm ``s_k < 1`` becomes ``d_k / s_k`` with codes ``s_k a_k``:
   reconstructions are unchanged and the L1 term shrinks by the factor ``s_k``; an atom of norm
   0 is replaced by a random unit vector with zero codes.

Every step lowers (or keeps) the canonical objective, so the history is non-increasing up to
the solvers' accuracy. It is slow and meant as an independent reference for the classical
solver on tiny problems. The data are loaded into memory.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dictopt.problem import Dictionary
from dictopt.solvers.classical import check_fit_args, initial_atoms, load_data
from dictopt.solvers.registry import register_solver
from dictopt.validation import DictoptInputError, check_matrix, to_tensor

log = logging.getLogger(__name__)

MAX_VARIABLES = 200_000
"""Refuse problems whose code matrix has more entries than this (cvxpy would take ages)."""


def _loss(x: np.ndarray, D: np.ndarray, b: np.ndarray, A: np.ndarray, lam: float) -> float:
    r = x - b - A @ D
    return float((0.5 * (r * r).sum() + lam * A.sum()) / x.shape[0])


def _solve(problem: Any) -> None:
    import cvxpy as cp

    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"cvxpy step failed with status {problem.status}")


def code_step(x: np.ndarray, D: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """All codes for fixed atoms and bias (one convex problem).

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    D:
        Atoms ``[K, d]``.
    b:
        Bias ``[d]``.
    lam:
        λ.

    Returns
    -------
    np.ndarray
        Codes ``[N, K]``.
    """
    import cvxpy as cp

    A = cp.Variable((x.shape[0], D.shape[0]), nonneg=True)
    _solve(cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - b - A @ D) + lam * cp.sum(A))))
    return np.clip(A.value, 0, None)


def atom_bias_step(x: np.ndarray, A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Atoms (norm ≤ 1) and bias jointly for fixed codes (one convex problem).

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    A:
        Codes ``[N, K]``.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        Atoms ``[K, d]`` and bias ``[d]``.
    """
    import cvxpy as cp

    K, d = A.shape[1], x.shape[1]
    D = cp.Variable((K, d))
    b = cp.Variable(d)
    ones = np.ones((x.shape[0], 1))
    fitted = ones @ cp.reshape(b, (1, d), order="C") + A @ D
    objective = cp.Minimize(0.5 * cp.sum_squares(x - fitted))
    _solve(cp.Problem(objective, [cp.norm(D, 2, axis=1) <= 1]))
    return np.asarray(D.value), np.asarray(b.value)


def canonicalise(
    D: np.ndarray, A: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Unit atoms with codes rescaled (zero atoms → random unit atoms with zero codes).

    Parameters
    ----------
    D:
        Atoms ``[K, d]``.
    A:
        Codes ``[N, K]``.
    rng:
        For replacing zero atoms.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        Unit atoms and codes with the same product.
    """
    norms = np.linalg.norm(D, axis=1)
    dead = norms <= 1e-9
    D, A = D.copy(), A.copy()
    if dead.any():
        D[dead] = rng.standard_normal((int(dead.sum()), D.shape[1]))
        A[:, dead] = 0.0
        norms[dead] = np.linalg.norm(D[dead], axis=1)
    return D / norms[:, None], A * norms[None, :]


def fit_cvxpy(
    source: Any,
    *,
    K: int,
    lam: float,
    seed: int = 0,
    max_iter: int = 100,
    tol: float = 1e-9,
    init: Any | None = None,
    progress: bool = False,
) -> Dictionary:
    """Alternating convex steps (module docstring); a reference for tiny problems.

    Parameters
    ----------
    source : array ``[N, d]`` or source (loaded into memory); ``N·K ≤ MAX_VARIABLES``.
    K, lam, seed : as for :func:`dictopt.solvers.classical.fit_classical` (same initial atoms).
    max_iter : bound on iterations.
    tol : stop when the relative objective decrease of an iteration is below it.
    init : initial atoms ``[K, d]`` or a :class:`Dictionary` (then its bias too).

    Returns
    -------
    Dictionary with ``meta["history"]`` (loss after each code step), ``n_iter``, ``converged``
    (relative decrease below ``tol`` before ``max_iter``).
    """
    K, lam = check_fit_args(K, lam)
    xt = load_data(source)
    if xt.shape[0] * K > MAX_VARIABLES:
        raise DictoptInputError(
            f"cvxpy solver: N·K = {xt.shape[0] * K} code variables exceeds {MAX_VARIABLES}; "
            "it is a reference for small problems (use solver 'classical')"
        )
    x = xt.numpy()
    rng = np.random.default_rng(seed)
    if isinstance(init, Dictionary):
        D, b = init.atoms.double().numpy(), init.bias.double().numpy()
    elif init is not None:
        D = check_matrix(to_tensor(init, "init"), "init", width=x.shape[1]).double().numpy()
        D, b = D / np.linalg.norm(D, axis=1, keepdims=True), x.mean(axis=0)
    else:
        D, b = initial_atoms(xt, K, seed).numpy(), x.mean(axis=0)
    if D.shape[0] != K:
        raise DictoptInputError(f"init: has {D.shape[0]} atoms but K = {K}")
    history: list[float] = []
    converged, n_iter = False, 0
    for it in tqdm(range(1, max_iter + 1), desc="cvxpy", disable=not progress, leave=False):
        n_iter = it
        A = code_step(x, D, b, lam)
        history.append(_loss(x, D, b, A, lam))
        if len(history) > 1 and history[-2] - history[-1] <= tol * abs(history[-2]):
            converged = True
            break
        D_new, b = atom_bias_step(x, A)
        D, A = canonicalise(D_new, A, rng)
    if not converged:
        log.warning("cvxpy solver: objective still decreasing after %d iterations", n_iter)
    meta = {
        "solver": "cvxpy", "K": K, "lam": lam, "seed": seed, "max_iter": max_iter, "tol": tol,
        "history": history, "n_iter": n_iter, "converged": converged,
    }
    return Dictionary(atoms=D, bias=b, lam=lam, meta=meta)


@register_solver("cvxpy", "reference: alternating convex cvxpy steps (tiny problems only)")
def _fit_cvxpy_registered(
    source: Any, *, K: int, lam: float, seed: int = 0, progress: bool = False, **options: Any
) -> Dictionary:
    return fit_cvxpy(source, K=K, lam=lam, seed=seed, progress=progress, **options)


# The command line checks --set keys and kinds against the real signature.
_fit_cvxpy_registered.__wrapped__ = fit_cvxpy  # type: ignore[attr-defined]
