"""The Gram (representational-similarity) form of the wide limit; see proofs/wide_gram.md.

Write the codes as ``A [K, N]`` (atom ``k``'s codes over the points are the row ``a_k``) and
``Y = X − 1bᵀ`` (``[N, d]``). Unit-norm atoms with the L1 penalty are the same problem as free
atoms with the scale-invariant penalty ``λ Σ_k ‖d_k‖ ‖a_k‖₁``, and (AM–GM, rescaling each atom)
the same as the *scale-balanced* objective

    N·L = ½‖Yᵀ − D A‖_F² + (λ/2) Σ_k (‖d_k‖² + ‖a_k‖₁²).

Since ``Σ_k ‖a_k‖₁² = 1ᵀ(AᵀA)1`` for ``A ≥ 0``, and ridge regression gives the minimum over
``D`` in closed form (push-through identity), with ``Q = AᵀA [N, N]``

    N·L = F(Q, b) = (λ/2) tr(Yᵀ (Q + λI)⁻¹ Y) + (λ/2) 1ᵀQ1,

jointly convex in ``(Q, b)`` (a matrix-fractional function plus a linear term). The feasible
set over all widths is the completely positive cone; this module solves the doubly-nonnegative
relaxation (``Q ⪰ 0``, ``Q ≥ 0``) and, for contrast, the PSD-only relaxation, with cvxpy.
The DNN relaxation is tight: its optimum is ``N·L_∞`` (proof in proofs/wide_gram.md; the dual
certificate is the entrywise-nonnegative matrix :func:`dual_certificate`).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import torch

from dictopt.validation import DictoptInputError, check_lambda, to_tensor
from dictopt.wide.bound import WideBound, wide_limit_bound
from dictopt.wide.limit_dictionary import LimitDictionary

#: Largest N the cvxpy SDP is allowed to take (an (N+d)-square PSD constraint).
MAX_GRAM_N = 60


class GramResult(NamedTuple):
    """Solution of a relaxation of the Gram problem."""

    value: float
    """Optimal ``F(Q, b) / N`` (comparable with ``L_∞``)."""
    Q: np.ndarray
    """``[N, N]`` optimal Gram matrix of the codes."""
    bias: np.ndarray
    """``[d]`` optimal bias."""
    relaxation: str
    status: str


def gram_objective(Q: Any, x: Any, b: Any, lam: float) -> float:
    """``F(Q, b) / N`` with ``F = (λ/2) tr(Yᵀ(Q + λI)⁻¹Y) + (λ/2) 1ᵀQ1``, ``Y = X − 1bᵀ``.

    Parameters
    ----------
    Q:
        Gram matrix ``[N, N]`` (PSD).
    x:
        Data ``[N, d]``.
    b:
        Bias ``[d]``.
    lam:
        λ.

    Returns
    -------
    float
        ``F(Q, b) / N``.
    """
    lam = check_lambda(lam)
    X = to_tensor(x, "x", dtype=torch.float64)
    Qt = to_tensor(Q, "Q", dtype=torch.float64)
    n = X.shape[0]
    if Qt.shape != (n, n):
        raise DictoptInputError(f"Q: expected shape ({n}, {n}), got {tuple(Qt.shape)}")
    Y = X - to_tensor(b, "b", dtype=torch.float64).reshape(1, -1)
    P = Qt + lam * torch.eye(n, dtype=torch.float64)
    frac = float((Y * torch.linalg.solve(P, Y)).sum())
    return 0.5 * lam * (frac + float(Qt.sum())) / n


def limit_gram(limit: LimitDictionary) -> np.ndarray:
    """The Gram matrix of the wide-limit dictionary in balanced scale, ``Σ_k a_k a_kᵀ/‖a_k‖₁``.

    Balancing atom ``k`` (``‖d_k‖² = ‖a_k‖₁²``) divides its canonical codes by ``√‖a_k‖₁``; for
    rays holding one point this is ``diag(t_n − λ)₊``.

    Parameters
    ----------
    limit:
        The wide-limit dictionary.

    Returns
    -------
    np.ndarray
        ``[N, N]``.
    """
    A = limit.codes  # [N, K] canonical
    mass = A.sum(dim=0).clamp_min(1e-300)
    Ab = A / mass.sqrt()
    return (Ab @ Ab.T).numpy()


def dual_certificate(x: Any, bound: WideBound) -> np.ndarray:
    """``M = 11ᵀ − VᵀV`` with ``v_n = (x_n − b)/max(‖x_n − b‖, λ)``: ``(2/λ) ∇_Q F`` at the limit.

    Every entry is ``1 − v_n·v_m ≥ 0`` (``‖v_n‖ ≤ 1``), so ``M`` lies in the dual of the DNN cone
    (indeed of the nonnegative cone), and ``⟨M, Q*⟩ = 0``: the certificate that the DNN
    relaxation is tight (proofs/wide_gram.md).

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    bound:
        The wide-limit bound (its bias).

    Returns
    -------
    np.ndarray
        ``M [N, N]``.
    """
    X = to_tensor(x, "x", dtype=torch.float64)
    Y = X - bound.bias
    V = Y / Y.norm(dim=1, keepdim=True).clamp_min(bound.lam)
    return (1.0 - V @ V.T).numpy()


def gram_relaxation(
    x: Any, lam: float, *, relaxation: str = "dnn", has_bias: bool = True
) -> GramResult:
    """Solve a convex relaxation of the Gram problem with cvxpy (CLARABEL).

    Parameters
    ----------
    x:
        Data ``[N, d]`` with ``N ≤ 60`` (the SDP has an ``(N + d)``-square PSD constraint).
    lam:
        λ > 0.
    relaxation:
        ``"dnn"`` (``Q ⪰ 0`` and ``Q ≥ 0`` entrywise: doubly nonnegative, contains the
        completely positive cone) or ``"psd"`` (``Q ⪰ 0`` only: codes of either sign).
    has_bias:
        Optimise ``b`` jointly (else ``b = 0``).

    Returns
    -------
    GramResult
        The relaxation's value per point, its Gram matrix and bias.
    """
    import cvxpy as cp

    lam = check_lambda(lam)
    if relaxation not in ("dnn", "psd"):
        raise DictoptInputError(f"relaxation: expected 'dnn' or 'psd', got {relaxation!r}")
    X = to_tensor(x, "x", dtype=torch.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DictoptInputError(f"x: expected a non-empty 2-D array [N, d], got {tuple(X.shape)}")
    n, d = X.shape
    if n > MAX_GRAM_N:
        raise DictoptInputError(
            f"x: N = {n} > {MAX_GRAM_N}; the Gram SDP is exploratory and limited to small N "
            "(use wide_limit_bound for the same value at any N)"
        )
    Xn = X.numpy()
    Q = cp.Variable((n, n), PSD=True)
    b = cp.Variable(d) if has_bias else None
    Y = Xn - np.ones((n, 1)) @ cp.reshape(b, (1, d), order="C") if has_bias else Xn
    F = 0.5 * lam * (cp.matrix_frac(Y, Q + lam * np.eye(n)) + cp.sum(Q))
    cons = [Q >= 0] if relaxation == "dnn" else []
    prob = cp.Problem(cp.Minimize(F / n), cons)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if Q.value is None:
        raise RuntimeError(f"cvxpy/CLARABEL failed on the Gram relaxation: {prob.status}")
    bias = b.value if has_bias else np.zeros(d)
    return GramResult(float(prob.value), Q.value, bias, relaxation, str(prob.status))


def compare_with_bound(x: Any, lam: float) -> dict[str, float]:
    """Solve the DNN and PSD relaxations and the bound; return the numbers the report needs.

    Parameters
    ----------
    x:
        Data ``[N, d]`` (small: the SDP is ``N × N``).
    lam:
        λ.

    Returns
    -------
    dict[str, float]
        The DNN and PSD values and the bound.
    """
    bound = wide_limit_bound(x, lam)
    dnn = gram_relaxation(x, lam, relaxation="dnn")
    psd = gram_relaxation(x, lam, relaxation="psd")
    return {
        "l_inf": bound.value,
        "dnn": dnn.value,
        "psd": psd.value,
        "dnn_rel_gap": (bound.value - dnn.value) / abs(bound.value),
        "dnn_objective_at_limit": gram_objective(dnn.Q, x, dnn.bias, lam),
    }
