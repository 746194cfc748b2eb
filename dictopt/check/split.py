"""The held-out split of THEORY §5: each row goes to the statistics part or the validation
part by a hash of its *global* row index, so the split is the same however the stream is
chunked or partitioned (one process, Dask) and does not follow any order in the data."""

from __future__ import annotations

import numpy as np
import torch

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def row_uniform(rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """A uniform number in ``[0, 1)`` per global row index (SplitMix64 of ``row + seed``).

    Parameters
    ----------
    rows:
        Global row indices (any integer array).
    seed:
        Changes the split (the same ``seed`` always gives the same split).

    Returns
    -------
    np.ndarray
        float64, same shape as ``rows``.
    """
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def validation_mask(
    start: int, n: int, fraction: float, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``[n]`` bool: which rows ``start .. start + n − 1`` belong to the validation part.

    Parameters
    ----------
    start, n:
        The chunk's first global row index and its number of rows.
    fraction:
        Expected share of validation rows, in ``(0, 1)``.
    seed:
        Split seed.

    Returns
    -------
    torch.Tensor
    """
    u = row_uniform(np.arange(start, start + n, dtype=np.int64), seed)
    return torch.from_numpy(u < fraction).to(device)
