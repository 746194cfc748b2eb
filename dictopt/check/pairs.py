"""Which ordered pairs can violate C5, decided from the top buffers (THEORY C5).

For a pair ``(i, j)`` let ``θ_ij = (1 − c_ij) ā_i`` and, over the points where ``j`` is
inactive (``a_j ≤ τ``), ``H_ij = max a_i`` and ``L_ij = min a_i``. C5 asks
``L_ij ≤ θ_ij ≤ H_ij``. Computing every ``H_ij`` directly costs ``O(N K²)``. The buffers make
it ``O(K² + K m L0)``:

*Exactness lemma.* Let ``v_1 ≥ … ≥ v_m`` be the ``m`` largest codes of atom ``i`` (points
``n_1 … n_m``). Every point outside the buffer has ``a_i ≤ v_m``. If ``r`` is the first rank at
which ``j`` is inactive, then every point with a larger ``a_i`` has ``j`` active, so
``H_ij = v_r`` **exactly**. Only when ``j`` is active at all ``m`` buffered points is ``H_ij``
unknown (``≤ v_m``): such pairs go to pass 2, which computes ``H_ij`` exactly.

*Lower side.* ``L_ij ≤ a_in`` for any point where both are inactive, and ``a_in ≤ τ`` there.
If ``|S_i| + |S_j| < N`` such a point exists, so whenever also ``τ ≤ θ_ij`` the lower side
holds. Only pairs with ``|S_i| + |S_j| ≥ N`` (one of the two atoms is active on at least half
the points) or ``θ_ij < τ`` need ``L_ij``, computed exactly in pass 2. (Many dense atoms would
make this list long: ``K × #dense`` pairs.)

Because a point's support has ``L0`` atoms, at most ``K · L0`` pairs have ``r > 1`` and the
pairs left for pass 2 are those whose ``j`` fires at *all* of ``i``'s extreme points (parents
of ``i`` in a hierarchy, dense atoms): few, and each costs ``O(N)`` in pass 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dictopt.check.stats import TopBuffer, member, sort_unique

F64 = torch.float64


class BufferExtremes(NamedTuple):
    """Sparse description of ``H`` (or ``L``) for all ordered pairs, read from one buffer.

    For pairs not listed, the extreme is ``first[i]`` (the first buffered value of ``i``,
    because ``j`` is inactive at that point). Listed pairs ``(pi, pj)`` have value ``val``;
    ``val`` is NaN where ``j`` is active at every buffered point (unknown: pass 2).
    """

    first: torch.Tensor
    pi: torch.Tensor
    pj: torch.Tensor
    val: torch.Tensor


def buffer_extremes(buf: TopBuffer, K: int) -> BufferExtremes:
    """Apply the exactness lemma to every pair at once (sparse in the pairs it touches).

    Parameters
    ----------
    buf:
        Pass 1's top buffers.
    K:
        Number of atoms.

    Returns
    -------
    BufferExtremes
        ``H_ij`` where the buffers decide it exactly.
    """
    m = buf.vals.shape[0]
    device = buf.vals.device
    first = buf.vals[0].clone()
    # pairs (i, j) with j active at rank 0 of i
    q, col = buf.supports(buf.ids[0])
    alive = q * K + col
    alive = alive[q != col]
    keys_out: list[torch.Tensor] = []
    vals_out: list[torch.Tensor] = []
    for r in range(1, m):
        if not alive.numel():
            keys_out.append(alive)
            vals_out.append(buf.vals[r][:0])
            continue
        # only the atoms with a pair still alive need their rank-r support (after rank 1,
        # few of them): the same membership, without sorting every atom's support
        need = sort_unique(alive // K)
        q, col = buf.supports(buf.ids[r][need])
        here = sort_unique(need[q] * K + col)
        still = member(alive, here)
        gone = alive[~still]
        keys_out.append(gone)
        vals_out.append(buf.vals[r][gone // K])
        alive = alive[still]
    keys_out.append(alive)
    vals_out.append(torch.full((alive.numel(),), torch.nan, dtype=F64, device=device))
    keys = torch.cat(keys_out) if keys_out else alive
    vals = torch.cat(vals_out) if vals_out else alive.to(F64)
    return BufferExtremes(first, keys // K, keys % K, vals)


def dense_extremes(ext: BufferExtremes, rows: torch.Tensor, K: int) -> torch.Tensor:
    """The ``[len(rows), K]`` block of the extremes matrix (NaN = unknown).

    Parameters
    ----------
    ext:
        From :func:`buffer_extremes`.
    rows:
        Atom indices ``i`` of the block.
    K:
        Number of atoms.

    Returns
    -------
    torch.Tensor
        ``[len(rows), K]`` float64.
    """
    out = ext.first[rows][:, None].expand(rows.numel(), K).clone()
    pos = torch.full((K,), -1, dtype=torch.long, device=rows.device)
    pos[rows] = torch.arange(rows.numel(), device=rows.device)
    sel = pos[ext.pi] >= 0
    out[pos[ext.pi[sel]], ext.pj[sel]] = ext.val[sel]
    return out
