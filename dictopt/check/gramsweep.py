"""The planner's cosines from half the products: each unordered pair of atoms once (issue #17).

:func:`sweep_entries` forms, for each block of ``block`` rows ``I``, the products of its atoms
with every atom from ``I``'s first onwards (the block-upper triangle of the Gram matrix, about
``K² d / 2`` multiply-adds instead of ``K² d``) and keeps, in both orientations, the entries
that a per-row window selects: ``c ≥ low_i`` or ``c ≤ high_i``. Nothing ``K × K`` is held.

The values are *not* the bits the row-block products ``D[rows] @ Dᵀ`` give (a BLAS may sum a
sub-block in another order), so the planner reads them as intervals: every floating-point
product of the same two atoms lies within :func:`rounding_margin` of the one computed here
(``|fl(c) − c| ≤ γ_d Σ_k |a_k b_k| ≤ γ_d ‖a‖ ‖b‖`` for any summation order, with or without
fused multiply-adds; two of them differ by at most twice that), and a rule is decided from an
interval only when both of its ends decide the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

F64 = torch.float64


class SweepEntries(NamedTuple):
    """Selected entries of the cosine matrix, sorted by ``i·K + j`` (row-major)."""

    i: torch.Tensor
    j: torch.Tensor
    value: torch.Tensor
    """In the atoms' dtype, as this sweep's product gave it."""


def rounding_margin(atoms_KD: torch.Tensor) -> torch.Tensor:
    """``δ_i ≥ |fl₁(c_ij) − fl₂(c_ij)|`` for every ``j`` and any two floating-point evaluations
    of the cosine (any order of the ``d`` products' sum) in the atoms' dtype.

    Parameters
    ----------
    atoms_KD:
        ``[K, d]`` atoms, float32 or float64.

    Returns
    -------
    torch.Tensor
        ``[K]`` float64: ``2 γ_d ‖d_i‖ max_j ‖d_j‖`` with ``γ_d = d u / (1 − d u)`` (``u`` the
        unit roundoff), enlarged by a relative ``10⁻⁶`` for the rounding of the bound itself.
    """
    K, d = atoms_KD.shape
    u = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}[atoms_KD.dtype]
    gamma = d * u / (1 - d * u)
    norm = atoms_KD.to(F64).norm(dim=1)
    top = float(norm.max()) if K else 0.0
    return 2 * gamma * norm * top * (1 + 1e-6)


def sweep_entries(
    atoms_KD: torch.Tensor, block: int, low_K: torch.Tensor, high_K: torch.Tensor
) -> SweepEntries:
    """Every entry ``(i, j)`` (``i = j`` included) with ``c_ij ≥ low_i`` or ``c_ij ≤ high_i``,
    each unordered pair's product formed once.

    Parameters
    ----------
    atoms_KD:
        ``[K, d]`` atoms.
    block:
        Rows per product (the planner's block).
    low_K, high_K:
        ``[K]`` thresholds in the atoms' dtype (``-inf`` / ``+inf`` allowed).

    Returns
    -------
    SweepEntries
        The selected entries of both orientations, row-major; ``c_ji`` is read from the same
        product as ``c_ij``.
    """
    K = atoms_KD.shape[0]
    out_i, out_j, out_v = [], [], []
    for lo in range(0, K, block):
        hi = min(lo + block, K)
        P = atoms_KD[lo:hi] @ atoms_KD[lo:].t()  # [B, K − lo]: rows lo:hi, columns lo:K
        # the diagonal block holds both orientations
        low_B, high_B = low_K[lo:hi, None], high_K[lo:hi, None]
        G = P[:, : hi - lo]
        r, c = ((G >= low_B) | (G <= high_B)).nonzero(as_tuple=True)
        out_i.append(r + lo)
        out_j.append(c + lo)
        out_v.append(G[r, c])
        if hi == K:
            break
        Q = P[:, hi - lo :]  # rows lo:hi against columns hi:K, and transposed
        # scan only the rows (columns) whose extremes reach their window
        q_min, q_max = torch.aminmax(Q, dim=1)
        rows = ((q_max >= low_B[:, 0]) | (q_min <= high_B[:, 0])).nonzero().flatten()
        if rows.numel():
            S = Q[rows]
            r, c = ((S >= low_B[rows]) | (S <= high_B[rows])).nonzero(as_tuple=True)
            out_i.append(rows[r] + lo)
            out_j.append(c + hi)
            out_v.append(S[r, c])
        q_min, q_max = torch.aminmax(Q, dim=0)
        cols = ((q_max >= low_K[hi:]) | (q_min <= high_K[hi:])).nonzero().flatten()
        if cols.numel():
            S = Q[:, cols]
            low_C, high_C = low_K[hi:][cols], high_K[hi:][cols]
            r, c = ((S >= low_C[None, :]) | (S <= high_C[None, :])).nonzero(as_tuple=True)
            out_i.append(cols[c] + hi)
            out_j.append(r + lo)
            out_v.append(S[r, c])
        del P, Q
    i, j, v = torch.cat(out_i), torch.cat(out_j), torch.cat(out_v)
    order = torch.argsort(i * K + j)  # keys are distinct: any sort is the same order
    return SweepEntries(i[order], j[order], v[order])
