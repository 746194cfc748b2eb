"""Robust pair statistics (THEORY §5, near-hierarchies): quantiles of ``a_i`` over the rows
where atom ``j`` is inactive, from exact, mergeable top-``m`` buffers.

For an ordered pair ``(i, j)`` let ``I_j = {n : a_jn ≤ τ}`` and ``n_j = |I_j|``. The quantile
``H^q_ij`` is the smallest value such that at most ``⌊q n_j⌋`` rows of ``I_j`` have
``a_in > H^q_ij``: the ``(⌊q n_j⌋ + 1)``-th largest ``a_in`` over ``I_j`` (``H^0 = H_ij``). The
buffer keeps the ``m`` largest such values, so ``H^q`` is exact whenever ``⌊q n_j⌋ < m``; the
count of rows above a fixed threshold ``θ_ij`` is an exact sum. Both merge across chunks and
processes (buffers re-select, counts add), so the result does not depend on the chunking.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


class PairTopM:
    """Per tracked pair, the ``m`` largest ``a_i`` where ``a_j ≤ τ``, ``n_j`` and the count
    above ``θ_ij`` (all mergeable).

    Parameters
    ----------
    pi, pj:
        ``[P]`` the pairs ``(i, j)``.
    theta:
        ``[P]`` thresholds whose exceedances are counted (exactly).
    m:
        Buffer length.
    """

    def __init__(self, pi: torch.Tensor, pj: torch.Tensor, theta: torch.Tensor, m: int) -> None:
        self.pi, self.pj, self.theta, self.m = pi, pj, theta.to(F64), m
        P = pi.numel()
        self.top = torch.full((0, P), -math.inf, dtype=F64)
        self.n_inactive = torch.zeros(P, dtype=F64)
        self.above = torch.zeros(P, dtype=F64)

    def update(self, codes_NK: torch.Tensor, tau: float) -> None:
        """Add the codes of some rows (any subset of the stream, in any order)."""
        if self.pi.numel() == 0 or codes_NK.shape[0] == 0:
            return
        ai = codes_NK[:, self.pi].to(F64)
        inactive = codes_NK[:, self.pj] <= tau
        self.n_inactive += inactive.sum(0).to(F64)
        self.above += (inactive & (ai > self.theta)).sum(0).to(F64)
        vals = torch.where(inactive, ai, torch.full_like(ai, -math.inf))
        self._select(vals)

    def merge(self, other: PairTopM) -> PairTopM:
        """Absorb another buffer over other rows (returns ``self``)."""
        self.n_inactive += other.n_inactive
        self.above += other.above
        self._select(other.top)
        return self

    def _select(self, vals: torch.Tensor) -> None:
        allv = torch.cat([self.top, vals.to(F64)], 0)
        k = min(self.m, allv.shape[0])
        self.top = allv.topk(k, dim=0, largest=True, sorted=True).values

    def quantile(self, q: float) -> torch.Tensor:
        """``[P]`` ``H^q_ij``; NaN where ``⌊q n_j⌋ ≥ m`` (more exceptions than the buffer
        holds) or ``n_j = 0``. Exact otherwise (0 when fewer than ``⌊q n_j⌋ + 1`` values are
        positive, as codes are nonnegative)."""
        r = torch.floor(q * self.n_inactive).to(torch.long)
        out = torch.full_like(self.n_inactive, math.nan)
        ok = (r < self.top.shape[0]) & (self.n_inactive > 0) & (r < self.n_inactive)
        if bool(ok.any()):
            cols = ok.nonzero().flatten()
            v = self.top[r[cols], cols]
            out[cols] = torch.clamp(v, min=0.0)
        return out

    def exception_fraction(self) -> torch.Tensor:
        """``[P]`` share of the rows of ``I_j`` with ``a_i > θ_ij`` (NaN when ``n_j = 0``)."""
        return torch.where(self.n_inactive > 0, self.above / self.n_inactive.clamp(min=1),
                           torch.full_like(self.above, math.nan))
