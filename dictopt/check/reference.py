"""Brute-force ``O(K² N)`` reference for the conditions, straight from THEORY §2 (tests only).

Everything is computed in memory from the full code matrix, with the same tolerances as
:func:`dictopt.check.check`, so that the streaming checker can be compared with it exactly.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dictopt.check.tolerances import DEFAULT_TOLERANCES, Tolerances

F64 = torch.float64


class Reference(NamedTuple):
    """Per-atom quantities and every ordered pair's ``H``, ``L`` and verdicts."""

    mean_a: torch.Tensor
    kkt_rel: torch.Tensor
    tangential: torch.Tensor
    radial: torch.Tensor
    bias_residual: float
    min_a: torch.Tensor
    H: torch.Tensor
    L: torch.Tensor
    c1: set[int]
    c2_tangential: set[int]
    c2_radial: set[int]
    c3: bool
    c4: set[int]
    c5_upper: set[tuple[int, int]]
    c5_lower: set[tuple[int, int]]
    loss: float


def brute_force(
    x_ND: Any, codes_NK: Any, atoms_KD: Any, bias_D: Any, lam: float, tau: float,
    *, has_bias: bool = True, tol: Tolerances = DEFAULT_TOLERANCES,
) -> Reference:
    """Evaluate C1–C5 directly by their definitions (double loops over pairs and points).

    Parameters
    ----------
    x_ND, codes_NK, atoms_KD, bias_D:
        Data, canonical codes, unit atoms, bias.
    lam, tau:
        λ and the inactivity threshold.
    has_bias:
        Whether the bias is free.
    tol:
        Tolerances.

    Returns
    -------
    Reference
        Every condition's residuals and violated sets, by definition.
    """
    x = torch.as_tensor(x_ND, dtype=F64)
    A = torch.as_tensor(codes_NK, dtype=F64)
    D = torch.as_tensor(atoms_KD, dtype=F64)
    b = torch.as_tensor(bias_D, dtype=F64)
    N, K = A.shape
    R = x - A @ D - b
    g = R @ D.t()
    active = A > tau
    viol = torch.where(active, (g - lam).abs(), (g - lam).clamp(min=0))
    kkt = viol.amax(0) / lam
    abar = A.mean(0)
    floor = tol.floor_rel * float(abar.max())
    G = A.t() @ R / N
    radial_full = (G * D).sum(1)
    tang = (G - radial_full[:, None] * D).norm(dim=1)
    rad = radial_full - lam * abar
    tol2 = tol.stat_rel * lam * torch.clamp(abar, min=floor)
    rbar = R.mean(0).norm()
    min_a = A.amin(0)
    H, L, up, lo = _pairs_by_definition(A, D, abar, tau, floor, has_bias, tol)
    c4 = set()
    if has_bias:
        c4 = set((min_a > torch.clamp(tol.pair_rel * abar, min=tau)).nonzero().flatten().tolist())
    loss = float(0.5 * (R * R).sum(1).mean() + lam * A.sum(1).mean())
    return Reference(
        abar, kkt, tang, rad, float(rbar), min_a, H, L,
        set((kkt > tol.kkt_rel).nonzero().flatten().tolist()),
        set((tang > tol2).nonzero().flatten().tolist()),
        set((rad.abs() > tol2).nonzero().flatten().tolist()),
        has_bias and float(rbar) > tol.stat_rel * lam,
        c4, up, lo, loss,
    )


def _pairs_by_definition(
    A: torch.Tensor, D: torch.Tensor, abar: torch.Tensor, tau: float, floor: float,
    has_bias: bool, tol: Tolerances,
) -> tuple[torch.Tensor, torch.Tensor, set[tuple[int, int]], set[tuple[int, int]]]:
    """``H``, ``L`` and the violated upper and lower C5 pairs, by a double loop."""
    K = A.shape[1]
    H = torch.full((K, K), torch.nan, dtype=F64)
    L = torch.full((K, K), torch.nan, dtype=F64)
    up: set[tuple[int, int]] = set()
    lo: set[tuple[int, int]] = set()
    for i in range(K):
        for j in range(K):
            if i == j:
                continue
            off = A[:, j] <= tau
            if not bool(off.any()):
                continue
            H[i, j] = A[off, i].max()
            L[i, j] = A[off, i].min()
            theta = (1 - float(D[i] @ D[j])) * float(abar[i])
            t = tol.pair_rel * float(abar[i]) + floor
            if has_bias:
                if theta - float(H[i, j]) > t:
                    up.add((i, j))
                if float(L[i, j]) - theta > t:
                    lo.add((i, j))
            elif float(H[i, j]) <= 0 and theta > t:
                up.add((i, j))
    return H, L, up, lo
