"""Block sizes of the checker's own dense temporaries, from a budget of elements (issue #21).

At large ``K`` one ``[rows, K]`` array of a chunk is already as large as the codes themselves
(8,192 × 32,768 float32 = 1.07 GB), so every temporary derived from the codes (a float64 copy,
a mask converted to floats, a product) is formed a block of columns at a time. A block holds at
most ``budget`` elements; when the whole chunk fits the budget the block is the whole chunk, so
small problems run exactly the computation they always ran.
"""

from __future__ import annotations

import torch

DENSE_ELEMENTS = 1 << 24
"""Default budget: 16 Mi elements (128 MiB of float64) per temporary block."""


def column_block(rows: int, cols: int, budget: int = DENSE_ELEMENTS) -> int:
    """Columns per block so that a ``[rows, width]`` block holds at most ``budget`` elements.

    Parameters
    ----------
    rows:
        Rows of the array (a chunk's rows), ``≥ 0``.
    cols:
        Its columns (``K``), ``≥ 0``.
    budget:
        Largest number of elements of one block, ``≥ 1``.

    Returns
    -------
    int
        ``width`` with ``1 ≤ width ≤ max(cols, 1)``: ``cols`` when ``rows · cols ≤ budget``
        (one block), else the largest width with ``rows · width ≤ budget`` (at least one
        column, the least a block can hold).
    """
    if budget < 1:
        raise ValueError(f"column_block: budget must be at least 1 element, got {budget}")
    if rows < 0 or cols < 0:
        raise ValueError(f"column_block: negative shape ({rows}, {cols})")
    if rows * cols <= budget:
        return max(cols, 1)
    return max(1, min(cols, budget // max(rows, 1)))


def pair_dots(atoms_KD: torch.Tensor, i: torch.Tensor, j: torch.Tensor,
              budget: int = DENSE_ELEMENTS // 4, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(atoms[i] * atoms[j]).sum(1)``, a block of pairs at a time (issue #17).

    Gathering both rows of every pair at once forms three ``[P, d]`` arrays: 5.4 GB for the
    196,504 known C5 violations at K = 65,536, d = 2,304 (the check's peak memory there). Each
    pair's dot product is one row's reduction, so summing blocks of rows gives the same bits.

    Parameters
    ----------
    atoms_KD:
        ``[K, d]`` atoms.
    i, j:
        ``[P]`` atom indices of the pairs.
    budget:
        Largest number of elements of one ``[block, d]`` temporary, ``≥ 1`` (three are alive
        at once: 16 MiB of float32 each by default).
    dtype:
        Compute in this dtype (each gathered block converted, as ``atoms.to(dtype)[i]`` would
        give, without a converted copy of all ``K`` atoms); ``None``: the atoms' own.

    Returns
    -------
    torch.Tensor
        ``[P]`` dot products, in ``dtype`` (default: the atoms' dtype).
    """
    if budget < 1:
        raise ValueError(f"pair_dots: budget must be at least 1 element, got {budget}")
    step = max(1, budget // max(atoms_KD.shape[1], 1))
    dt = atoms_KD.dtype if dtype is None else dtype
    return torch.cat([(atoms_KD[bi].to(dt) * atoms_KD[bj].to(dt)).sum(1)
                      for bi, bj in zip(i.split(step), j.split(step), strict=True)])
