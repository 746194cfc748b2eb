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

from collections.abc import Iterator
from typing import NamedTuple

import torch

from dictopt.check.stats import argsort_stable

F64 = torch.float64


class SweepEntries(NamedTuple):
    """Selected entries of the cosine matrix, sorted by ``i·K + j`` (row-major) unless asked
    otherwise (``sweep_blocks(..., ordered=False)``)."""

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
    # in slices: a float64 copy of the whole dictionary is 1.2 GB at K = 65,536, d = 2,304
    # (a row's norm does not depend on the other rows)
    norm = torch.cat([a.to(F64).norm(dim=1) for a in atoms_KD.split(1024)]) if K else \
        atoms_KD.to(F64).norm(dim=1)
    top = float(norm.max()) if K else 0.0
    return 2 * gamma * norm * top * (1 + 1e-6)


def sweep_entries(
    atoms_KD: torch.Tensor, block: int, low_K: torch.Tensor, high_K: torch.Tensor
) -> SweepEntries:
    """Every entry ``(i, j)`` (``i = j`` included) with ``c_ij ≥ low_i`` or ``c_ij ≤ high_i``,
    each unordered pair's product formed once (all of :func:`sweep_blocks` at once).

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
    parts = list(sweep_blocks(atoms_KD, block, low_K, high_K))
    return SweepEntries(*(torch.cat([e[f] for e in parts]) for f in range(3)))


def sweep_blocks(
    atoms_KD: torch.Tensor,
    block: int,
    low_K: torch.Tensor,
    high_K: torch.Tensor,
    first: torch.Tensor | None = None,
    ordered: bool = True,
) -> Iterator[SweepEntries]:
    """The entries of :func:`sweep_entries`, one block of rows ``lo : lo + block`` at a time,
    in order: block ``b``'s entries are complete once its products with the atoms from ``lo``
    onwards are formed (the columns before ``lo`` were read from earlier blocks' products), so
    a caller may stop after any block without forming the rest.

    Parameters
    ----------
    atoms_KD, block, low_K, high_K:
        As :func:`sweep_entries`.
    first:
        The first block's ``[block, K]`` products when the caller has formed them (any
        evaluation: the planner's own row block); ``None``: formed here.
    ordered:
        Sort each block's entries row-major (``False``: the same entries in an unspecified
        order, without the sort of every entry: the planner orders the few it reports).

    Yields
    ------
    SweepEntries
        The selected entries of one block's rows, row-major (``ordered``).
    """
    K = atoms_KD.shape[0]
    n_blocks = -(-K // block)
    later: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = [
        [] for _ in range(n_blocks)]
    for b, lo in enumerate(range(0, K, block)):
        hi = min(lo + block, K)
        # [B, K − lo]: rows lo:hi, columns lo:K
        P = first if b == 0 and first is not None else atoms_KD[lo:hi] @ atoms_KD[lo:].t()
        # the diagonal block holds both orientations
        low_B, high_B = low_K[lo:hi, None], high_K[lo:hi, None]
        G = P[:, : hi - lo]
        r, c = ((G >= low_B) | (G <= high_B)).nonzero(as_tuple=True)
        mine = [*later[b], (r + lo, c + lo, G[r, c])]
        later[b] = []
        if hi < K:
            Q = P[:, hi - lo :]  # rows lo:hi against columns hi:K, and transposed
            # scan only the rows (columns) whose extremes reach their window
            # (amax and amin: the same values as aminmax, which is several times slower)
            q_min, q_max = Q.amin(dim=1), Q.amax(dim=1)
            rows = ((q_max >= low_B[:, 0]) | (q_min <= high_B[:, 0])).nonzero().flatten()
            if rows.numel():
                S = Q[rows]
                r, c = ((S >= low_B[rows]) | (S <= high_B[rows])).nonzero(as_tuple=True)
                mine.append((rows[r] + lo, c + hi, S[r, c]))
            q_min, q_max = Q.amin(dim=0), Q.amax(dim=0)
            cols = ((q_max >= low_K[hi:]) | (q_min <= high_K[hi:])).nonzero().flatten()
            if cols.numel():
                S = Q[:, cols]
                low_C, high_C = low_K[hi:][cols], high_K[hi:][cols]
                r, c = ((S >= low_C[None, :]) | (S <= high_C[None, :])).nonzero(as_tuple=True)
                gi = cols[c] + hi  # rows of later blocks, each read in its block's turn
                v = S[r, c]
                # grouped by the block they belong to, in one stable sort (a mask per target
                # block rescanned every entry once per block: quadratic in the blocks)
                to = gi // block
                order = argsort_stable(to)
                counts = torch.bincount(to, minlength=n_blocks)
                targets = counts.nonzero().flatten().tolist()
                sizes = counts[targets].tolist()
                parts = zip(targets, gi[order].split(sizes), (r[order] + lo).split(sizes),
                            v[order].split(sizes), strict=True)
                for t, g, rr, vv in parts:
                    later[t].append((g, rr, vv))
            del Q
        del P
        i, j, v = (torch.cat([e[f] for e in mine]) for f in range(3))
        if not ordered:
            yield SweepEntries(i, j, v)
            continue
        order = torch.argsort(i * K + j)  # keys are distinct: any sort gives this order
        yield SweepEntries(i[order], j[order], v[order])
