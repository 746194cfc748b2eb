"""Mergeable per-chunk statistics of the two streaming passes (THEORY §2, C1–C5).

Pass 1 (:class:`PassOneStats`) sees every chunk once with its codes and residuals and keeps
only quantities whose size does not depend on N: sums over points (``Σ a_kn``, ``Σ a_kn²``,
``Σ a_kn r_n``, ``Σ r_n``), extremes (``min/max a_kn``, the largest KKT violation per atom)
and, per atom, the ``m`` largest and ``m`` smallest codes with the support of those points
(top/bottom buffers). Pass 2 (:class:`PassTwoStats`) computes exact conditional extremes
``H_ij``/``L_ij`` only for the pairs the buffers could not decide (see
:mod:`dictopt.check.pairs`). Every statistic has ``merge`` so that chunk statistics from
different processes combine exactly (sums add, extremes take max/min, buffers re-select).
"""

from __future__ import annotations

import torch

from dictopt.problem import ExplainedVariance

F64 = torch.float64


class TopBuffer:
    """Per atom, the ``m`` largest (``largest=True``) or smallest codes and their points.

    ``vals [m', K]`` sorted (descending for largest), ``ids [m', K]`` global row indices,
    ``m' = min(m, rows seen)``. The supports of the buffered points are kept as COO pairs
    ``(row id, active atom, value)`` so that pair statistics can be read off later.
    """

    def __init__(self, m: int, K: int, *, largest: bool, device: torch.device) -> None:
        self.m, self.K, self.largest = m, K, largest
        self.vals = torch.empty(0, K, dtype=F64, device=device)
        self.ids = torch.empty(0, K, dtype=torch.long, device=device)
        self.row_id = torch.empty(0, dtype=torch.long, device=device)
        self.row_col = torch.empty(0, dtype=torch.long, device=device)
        self.row_val = torch.empty(0, dtype=F64, device=device)

    def update(self, codes_NK: torch.Tensor, start: int, tau: float) -> None:
        """Add a chunk of codes whose first row has global index ``start``."""
        c = codes_NK.shape[0]
        k = min(self.m, c)
        vals, idx = codes_NK.to(F64).topk(k, dim=0, largest=self.largest, sorted=True)
        self._merge(vals, idx + start)
        # supports of the chunk's rows that made it into the buffer
        local = self.ids - start
        mask = (local >= 0) & (local < c)
        rows = local[mask].unique()
        if rows.numel():
            sub = codes_NK[rows]
            r, col = (sub > tau).nonzero(as_tuple=True)
            self._add_rows(rows[r] + start, col, sub[r, col].to(F64))
        self._prune()

    def merge(self, other: TopBuffer) -> None:
        """Absorb another buffer (another process's chunks)."""
        self._merge(other.vals, other.ids)
        self._add_rows(other.row_id, other.row_col, other.row_val)
        self._prune()

    def _merge(self, vals: torch.Tensor, ids: torch.Tensor) -> None:
        allv = torch.cat([self.vals, vals], dim=0)
        alli = torch.cat([self.ids, ids], dim=0)
        k = min(self.m, allv.shape[0])
        v, pos = allv.topk(k, dim=0, largest=self.largest, sorted=True)
        self.vals, self.ids = v, alli.gather(0, pos)

    def _add_rows(self, rid: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        self.row_id = torch.cat([self.row_id, rid])
        self.row_col = torch.cat([self.row_col, col])
        self.row_val = torch.cat([self.row_val, val])

    def _prune(self) -> None:
        keep = torch.isin(self.row_id, self.ids.unique())
        rid, col, val = self.row_id[keep], self.row_col[keep], self.row_val[keep]
        # drop duplicates (a row added twice through merges), sort by row id for lookups
        key = rid * self.K + col
        key, first = _unique_first(key)
        self.row_id, self.row_col, self.row_val = rid[first], col[first], val[first]

    def supports(self, gids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Active atoms of the buffered rows ``gids [Q]``: pairs ``(query index, atom)``."""
        starts = torch.searchsorted(self.row_id, gids)
        ends = torch.searchsorted(self.row_id, gids, right=True)
        counts = ends - starts
        q = torch.repeat_interleave(torch.arange(gids.numel(), device=gids.device), counts)
        offs = torch.arange(q.numel(), device=gids.device) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        pos = torch.repeat_interleave(starts, counts) + offs
        return q, self.row_col[pos]


def _unique_first(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys and, for each, the index of one occurrence."""
    if key.numel() == 0:
        return key, key.clone()
    order = torch.argsort(key, stable=True)
    sk = key[order]
    new = torch.ones_like(sk, dtype=torch.bool)
    new[1:] = sk[1:] != sk[:-1]
    return sk[new], order[new]


class PassOneStats:
    """Everything pass 1 accumulates; ``merge`` combines two of them exactly."""

    def __init__(self, K: int, d: int, lam: float | None, m: int, device: torch.device) -> None:
        self.K, self.d, self.lam, self.m = K, d, lam, m
        z = torch.zeros(K, dtype=F64, device=device)
        self.n = 0
        self.sum_a = z.clone()
        self.sum_a2 = z.clone()
        self.min_a = torch.full((K,), torch.inf, dtype=F64, device=device)
        self.max_a = torch.full((K,), -torch.inf, dtype=F64, device=device)
        self.n_active = z.clone()
        self.G_sum = torch.zeros(K, d, dtype=F64, device=device)
        self.r_sum = torch.zeros(d, dtype=F64, device=device)
        self.half_sq = 0.0
        self.l1 = 0.0
        self.ev = ExplainedVariance(d)
        # C1: largest absolute KKT violation per atom, and the exact loss decrease (summed
        # over points) of the optimal coordinate step on atom k's codes (THEORY C1).
        self.kkt_max = z.clone()
        self.c1_gain = z.clone()
        self.c1_slope = z.clone()
        # capacity (THEORY §3): points with ‖r_n‖ > λ
        self.n_over = 0
        self.over_sum = 0.0
        self.over_max = 0.0
        self.top = TopBuffer(m, K, largest=True, device=device)
        self.bottom = TopBuffer(m, K, largest=False, device=device)

    def update(
        self,
        x_ND: torch.Tensor,
        codes_NK: torch.Tensor,
        atoms_KD: torch.Tensor,
        bias_D: torch.Tensor,
        start: int,
        tau: float,
        *,
        sparse: bool = False,
    ) -> None:
        """Add one chunk: data, its codes (canonical), the dictionary, the row offset."""
        a = codes_NK
        if sparse:
            a_sp = a.to_sparse()
            recon = torch.sparse.mm(a_sp, atoms_KD) + bias_D
        else:
            recon = a @ atoms_KD + bias_D
        r = x_ND - recon
        self.n += a.shape[0]
        a64 = a.to(F64)
        self.sum_a += a64.sum(0)
        self.sum_a2 += (a64 * a64).sum(0)
        self.min_a = torch.minimum(self.min_a, a64.amin(0))
        self.max_a = torch.maximum(self.max_a, a64.amax(0))
        active = a > tau
        self.n_active += active.sum(0).to(F64)
        if sparse:
            self.G_sum += torch.sparse.mm(a_sp.t(), r).to(F64)
        else:
            self.G_sum += (a.t() @ r).to(F64)
        r64 = r.to(F64)
        self.r_sum += r64.sum(0)
        sq = (r64 * r64).sum(1)
        self.half_sq += 0.5 * float(sq.sum())
        self.l1 += float(a64.sum())
        self.ev.update(x_ND, recon)
        if self.lam is not None:
            lam = self.lam
            g = r @ atoms_KD.t()  # g_kn = d_k · r_n  (THEORY C1)
            excess = g - lam
            viol = torch.where(active, excess.abs(), excess.clamp(min=0))
            self.kkt_max = torch.maximum(self.kkt_max, viol.amax(0).to(F64))
            # optimal step on a_kn alone: δ = max(g − λ, −a); exact decrease δ(g−λ) − δ²/2
            delta = torch.maximum(excess, -a)
            self.c1_slope += (delta * excess).sum(0).to(F64)
            self.c1_gain += (delta * excess - 0.5 * delta * delta).sum(0).to(F64)
            norm = sq.sqrt()
            over = norm > lam
            self.n_over += int(over.sum())
            gain = 0.5 * (norm[over] - lam) ** 2
            if gain.numel():
                self.over_sum += float(gain.sum())
                self.over_max = max(self.over_max, float(gain.max()))
        self.top.update(a, start, tau)
        self.bottom.update(a, start, tau)

    def merge(self, o: PassOneStats) -> None:
        """Absorb the statistics of other chunks (e.g. another process)."""
        self.n += o.n
        for name in ("sum_a", "sum_a2", "n_active", "G_sum", "r_sum", "c1_gain", "c1_slope"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.min_a = torch.minimum(self.min_a, o.min_a)
        self.max_a = torch.maximum(self.max_a, o.max_a)
        self.kkt_max = torch.maximum(self.kkt_max, o.kkt_max)
        self.half_sq += o.half_sq
        self.l1 += o.l1
        self.ev.merge(o.ev)
        self.n_over += o.n_over
        self.over_sum += o.over_sum
        self.over_max = max(self.over_max, o.over_max)
        self.top.merge(o.top)
        self.bottom.merge(o.bottom)

    # -- derived ----------------------------------------------------------------------------
    @property
    def mean_a(self) -> torch.Tensor:
        """``ā_k`` (mean over all points)."""
        return self.sum_a / self.n

    @property
    def G(self) -> torch.Tensor:
        """``G_k = (1/N) Σ_n a_kn r_n`` ``[K, d]``."""
        return self.G_sum / self.n

    @property
    def r_mean(self) -> torch.Tensor:
        return self.r_sum / self.n


class PassTwoStats:
    """Exact conditional extremes for a list of ordered pairs ``(i, j)``, streamed.

    For each pair: ``H = max{a_i : a_j ≤ τ}``, ``L = min{a_i : a_j ≤ τ}``, the number of points
    where both are active, and the largest steps that keep ``a_j`` nonnegative under the C5
    certificates (see :mod:`dictopt.check.certificates`). Step bounds are computed against
    the running ``H``/``L``, which is conservative (smaller steps) and therefore safe.
    """

    def __init__(
        self,
        pi: torch.Tensor,
        pj: torch.Tensor,
        H0: torch.Tensor,
        L0: torch.Tensor,
        block: int = 4096,
    ) -> None:
        self.pi, self.pj = pi, pj
        self.H = H0.clone()
        self.L = L0.clone()
        P = pi.numel()
        self.coact = torch.zeros(P, dtype=F64, device=pi.device)
        self.t_up = torch.full((P,), torch.inf, dtype=F64, device=pi.device)
        self.t_lo = torch.full((P,), torch.inf, dtype=F64, device=pi.device)
        self.block = block

    def update(self, codes_NK: torch.Tensor, tau: float) -> None:
        a = codes_NK.to(F64)
        for lo in range(0, self.pi.numel(), self.block):
            sl = slice(lo, lo + self.block)
            ai, aj = a[:, self.pi[sl]], a[:, self.pj[sl]]
            off = aj <= tau
            H = torch.maximum(self.H[sl], torch.where(off, ai, -torch.inf).amax(0))
            L = torch.minimum(self.L[sl], torch.where(off, ai, torch.inf).amin(0))
            self.H[sl], self.L[sl] = H, L
            on = ~off
            self.coact[sl] += (on & (ai > tau)).sum(0).to(F64)
            up = on & (ai > H)
            self.t_up[sl] = torch.minimum(
                self.t_up[sl], torch.where(up, aj / (ai - H).clamp(min=1e-300), torch.inf).amin(0)
            )
            dn = on & (ai < L)
            self.t_lo[sl] = torch.minimum(
                self.t_lo[sl], torch.where(dn, aj / (L - ai).clamp(min=1e-300), torch.inf).amin(0)
            )

    def merge(self, o: PassTwoStats) -> None:
        """Absorb another process's statistics for the same pair list.

        Extremes and counts merge exactly; the step bounds stay conservative (each side was
        computed against a running extreme that is never beyond the merged one).
        """
        self.H = torch.maximum(self.H, o.H)
        self.L = torch.minimum(self.L, o.L)
        self.coact += o.coact
        self.t_up = torch.minimum(self.t_up, o.t_up)
        self.t_lo = torch.minimum(self.t_lo, o.t_lo)
