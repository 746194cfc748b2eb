"""Block sizes of the checker's own dense temporaries, from a budget of elements (issue #21).

At large ``K`` one ``[rows, K]`` array of a chunk is already as large as the codes themselves
(8,192 × 32,768 float32 = 1.07 GB), so every temporary derived from the codes (a float64 copy,
a mask converted to floats, a product) is formed a block of columns at a time. A block holds at
most ``budget`` elements; when the whole chunk fits the budget the block is the whole chunk, so
small problems run exactly the computation they always ran.
"""

from __future__ import annotations

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
