"""Codes computed once per check: pass 1 stores each chunk's codes, pass 2 reads them.

The exact coder (:func:`dictopt.solvers.coding.solve_codes`) is by far the most expensive part
of a check with ``codes="optimal"``, and both passes need the same codes of the same chunks.
With own codes at a wide SAE the encoder is the cost (one ``[n, d] × [d, K]`` matmul a chunk)
and its codes are sparse, so they are held too, under a smaller budget
(:data:`OWN_CODE_CACHE_BYTES`).
The codes are held sparse (row, column, value: 16 bytes per nonzero, exact values, so pass 2
sees the very codes pass 1 saw), keyed by the chunk's first row, while they fit
``budget_bytes``; chunks beyond the budget are solved again in pass 2, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

#: Default memory for held codes (bytes).
CODE_CACHE_BYTES = 1 << 30

#: Memory for held *own* codes (bytes): re-encoding costs one matmul, so less is held.
OWN_CODE_CACHE_BYTES = 1 << 28

#: Elements of the codes scanned for nonzeros at once in :meth:`CodeCache.put`.
NONZERO_BLOCK_ELEMENTS = 1 << 24


class _Sparse(NamedTuple):
    """One chunk's nonzero codes."""

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    K: int


@dataclass
class CodeCache:
    """Sparse codes of streamed chunks, keyed by the chunk's first row."""

    budget_bytes: int = CODE_CACHE_BYTES
    """Stop holding new chunks past this many bytes."""
    used_bytes: int = 0
    hits: int = 0
    chunks: dict[tuple[int, int], _Sparse] = field(default_factory=dict)

    def get(self, start: int, n: int) -> torch.Tensor | None:
        """The dense codes ``[n, K]`` of the chunk of ``n`` rows from ``start``, if held.

        Parameters
        ----------
        start, n:
            The chunk's first row and its number of rows.

        Returns
        -------
        torch.Tensor or None
        """
        held = self.chunks.get((start, n))
        if held is None:
            return None
        self.hits += 1
        out = torch.zeros(n, held.K, dtype=held.values.dtype, device=held.values.device)
        out[held.rows.long(), held.cols.long()] = held.values
        return out

    def put(
        self,
        start: int,
        codes: torch.Tensor,
        nonzero: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Hold a chunk's codes ``[n, K]`` if they fit the budget.

        Parameters
        ----------
        start:
            The chunk's first row.
        codes:
            Its codes (dense).
        nonzero:
            ``(rows, cols)`` of its nonzero entries, row-major (as ``nonzero`` lists them),
            when the caller has them already; otherwise they are found here.
        """
        if (start, codes.shape[0]) in self.chunks:
            return
        if nonzero is not None:
            rows, cols = nonzero
        else:
            # the nonzeros a block of rows at a time: a ``[n, K]`` mask at once would add a
            # quarter of the codes' own size to the peak at large K
            step = max(1, NONZERO_BLOCK_ELEMENTS // max(codes.shape[1], 1))
            found = [(blk != 0).nonzero() for blk in codes.split(step)]
            rows = torch.cat([f[:, 0] + b * step for b, f in enumerate(found)])
            cols = torch.cat([f[:, 1] for f in found])
        size = rows.numel() * (8 + codes.element_size())
        if self.used_bytes + size > self.budget_bytes:
            return
        self.used_bytes += size
        self.chunks[(start, codes.shape[0])] = _Sparse(
            rows.to(torch.int32), cols.to(torch.int32), codes[rows, cols], codes.shape[1]
        )

    def clear(self) -> None:
        """Drop every held chunk."""
        self.chunks.clear()
        self.used_bytes = 0
