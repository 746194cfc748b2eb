"""A compact, in-memory evaluation of conditions C1–C5 (THEORY.md §2) for the wide experiments.

The full, streamed checker with certificates is :mod:`dictopt.check`; this module only needs the
numbers the wide-limit experiments report (is the limit dictionary a stationary point? how many
C5 pairs does a learned dictionary violate?) on data that fit in memory, and has no dependency
on the checker so that the wide experiments work without it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, to_tensor


class ConditionSummary(NamedTuple):
    """Residuals of C1–C5 for one dictionary, data set and codes (all relative, 0 = exact)."""

    c1: float
    """Max KKT violation ``/ λ`` (``|g−λ|`` on active entries, ``(g−λ)₊`` on inactive ones)."""
    c2: float
    """Max over atoms of ``‖(I − d_k d_kᵀ) G_k‖ / λ``, ``G_k = (1/N) Σ_n a_kn r_n``."""
    c3: float
    """``‖(1/N) Σ_n r_n‖ / λ``."""
    c4: int
    """Number of atoms active on every point (``min_n a_kn > τ``)."""
    c5: int
    """Number of ordered pairs ``(i, j)`` violating ``L_ij ≤ (1 − c_ij) ā_i ≤ H_ij``."""
    c5_worst: float
    """Largest C5 violation, relative to the largest mean code (0 when none)."""


def c5_violations(
    atoms_KD: torch.Tensor, codes_NK: torch.Tensor, *, tau: float = 0.0, rtol: float = 1e-7
) -> tuple[int, float]:
    """Count ordered pairs violating C5 and the worst violation (relative to ``max_k ā_k``).

    A pair with no point where ``a_j ≤ τ`` has no constraint (``j`` is always on: that is C4).
    ``rtol`` absorbs solver noise: a violation counts when it exceeds ``rtol · max_k ā_k``.
    """
    K = atoms_KD.shape[0]
    abar = codes_NK.mean(dim=0)
    scale = float(abar.max()) if K else 0.0
    if scale <= 0:
        return 0, 0.0
    C = atoms_KD @ atoms_KD.T
    count, worst = 0, 0.0
    for j in range(K):
        inactive = codes_NK[:, j] <= tau
        if not bool(inactive.any()):
            continue
        sub = codes_NK[inactive]  # [M, K]
        H = sub.max(dim=0).values
        L = sub.min(dim=0).values
        target = (1.0 - C[:, j]) * abar
        excess = torch.maximum(target - H, L - target)
        excess[j] = 0.0
        bad = excess > rtol * scale
        count += int(bad.sum())
        worst = max(worst, float(excess.max()) / scale)
    return count, max(worst, 0.0)


def first_order_summary(
    dictionary: Dictionary, x: Any, codes: Any, *, tau: float = 0.0, rtol: float = 1e-7
) -> ConditionSummary:
    """Evaluate C1–C5 for ``dictionary`` on data ``x [N, d]`` with canonical codes ``[N, K]``."""
    if dictionary.lam is None:
        raise DictoptInputError("dictionary: λ is needed to evaluate the conditions")
    lam = dictionary.lam
    X = dictionary.prepare_batch(x)
    A = to_tensor(codes, "codes", dtype=dictionary.dtype)
    if A.shape != (X.shape[0], dictionary.K):
        raise DictoptInputError(
            f"codes: expected shape ({X.shape[0]}, {dictionary.K}), got {tuple(A.shape)}"
        )
    D = dictionary.atoms
    R = X - dictionary.decode(A)
    g = R @ D.T
    active = A > tau
    c1 = float(torch.where(active, (g - lam).abs(), (g - lam).clamp_min(0)).max()) / lam
    G = A.T @ R / X.shape[0]  # [K, d]
    perp = G - (G * D).sum(dim=1, keepdim=True) * D
    c2 = float(perp.norm(dim=1).max()) / lam
    c3 = float(R.mean(dim=0).norm()) / lam
    c4 = int((A.min(dim=0).values > tau).sum()) if dictionary.has_bias else 0
    c5, worst = c5_violations(D, A, tau=tau, rtol=rtol)
    return ConditionSummary(c1, c2, c3, c4, c5, worst)
