"""Per-atom reductions of a chunk's dense ``[rows, K]`` products, a block of rows at a time.

Pass 1 forms ``g = R Dᵀ`` (``[rows, K]``, as large as the codes) and reads two column
reductions of ``relu(g − λ)``: the largest entry and the Euclidean norm of each column. Torch
reduces a column of a row-major array with a strided walk down it (one cache line per entry);
at K = 32,768 that took a tenth of the whole check. Here ``g`` is swept once, a block of rows
that fits the cache at a time: the shift, the clamp and the column maxima per block, and the
squares added to one accumulator row by row, in row order. Torch's single-threaded
``vector_norm(dim=0)`` adds the squares in that same order in the array's dtype, so the norms
are the same bits (``tests/test_columns.py`` compares them). (With several threads, torch
splits a column longer than its grain size, 32,768 rows, between threads; the norms here are
then still those of the single-threaded reduction, whatever the threads.)
"""

from __future__ import annotations

import numpy as np
import torch

ROW_BLOCK_ELEMENTS = 1 << 18
"""Elements of one block of rows (1 MiB of float32): it stays in the cache across its sweeps."""


def relu_column_stats(
    g_NK: torch.Tensor, lam: float, *, block_elements: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Column maxima and Euclidean norms of ``relu(g − λ)``; ``g`` is overwritten.

    Parameters
    ----------
    g_NK:
        A dense ``[rows, K]`` array (``rows ≥ 1``); it is used as scratch.
    lam:
        The shift ``λ``.
    block_elements:
        Elements per block of rows (default :data:`ROW_BLOCK_ELEMENTS`). A chunk that fits
        one block, or an array not on the CPU, is reduced by torch at once (``amax(0)``,
        ``vector_norm(dim=0)``), as before.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``(max_K, norm_K)`` in ``g``'s dtype, equal to
        ``v.amax(0)`` and ``torch.linalg.vector_norm(v, dim=0)`` for ``v = relu(g − λ)``
        (single-threaded torch: sequential accumulation in row order).
    """
    rows, K = g_NK.shape
    block_elements = ROW_BLOCK_ELEMENTS if block_elements is None else block_elements
    if rows * K <= block_elements or g_NK.device.type != "cpu":
        v = g_NK.sub_(lam).clamp_(min=0)
        return v.amax(0), torch.linalg.vector_norm(v, dim=0)
    step = max(1, block_elements // max(K, 1))
    top_K = torch.full((K,), -torch.inf, dtype=g_NK.dtype)
    acc_K = torch.zeros(K, dtype=g_NK.dtype)
    for blk in g_NK.split(step):
        v = blk.sub_(lam).clamp_(min=0)
        torch.maximum(top_K, v.amax(0), out=top_K)
        v.mul_(v)
        for sq in v:
            acc_K.add_(sq)
    # the reduction's last step: the square root, correctly rounded in the array's dtype
    # (numpy's; torch's vectorised square root may differ from it in the last bit)
    return top_K, torch.from_numpy(np.sqrt(acc_K.numpy()))


COLUMN_BLOCK_ELEMENTS = 1 << 19
"""Elements of one contiguous block of columns for :func:`topk_columns` (2 MiB of float32)."""


def topk_columns(
    a_NK: torch.Tensor, k: int, *, largest: bool, block_elements: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a.topk(k, dim=0, largest=largest, sorted=True)``, a contiguous block of columns at a
    time.

    Torch selects each column's ``k`` entries from a strided walk down the column (one page per
    entry at large ``K``). Each column's selection depends only on that column's values in
    order, so selecting within a contiguous copy of a block of columns gives the same values
    and the same indices, ties included, with the walk inside the cache.

    Parameters
    ----------
    a_NK:
        A ``[rows, K]`` array with ``rows ≥ k``.
    k:
        Entries per column.
    largest:
        The largest (else the smallest) entries.
    block_elements:
        Elements per block (default :data:`COLUMN_BLOCK_ELEMENTS`); an array that fits one
        block, or one not on the CPU, is passed to ``topk`` whole.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        ``(values [k, K], indices [k, K])``, exactly as ``topk`` returns them.
    """
    rows, K = a_NK.shape
    block_elements = COLUMN_BLOCK_ELEMENTS if block_elements is None else block_elements
    if rows * K <= block_elements or a_NK.device.type != "cpu":
        return a_NK.topk(k, dim=0, largest=largest, sorted=True)
    width = max(1, block_elements // max(rows, 1))
    found = [blk.contiguous().topk(k, dim=0, largest=largest, sorted=True)
             for blk in a_NK.split(width, dim=1)]
    return torch.cat([v for v, _ in found], 1), torch.cat([i for _, i in found], 1)
