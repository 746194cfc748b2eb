"""Mergeable per-chunk statistics of the two streaming passes (THEORY §2, C1–C5).

Pass 1 (:class:`PassOneStats`) sees every chunk once with its codes and residuals and keeps
only quantities whose size does not depend on N: sums over points (``Σ a_kn``, ``Σ a_kn²``,
``Σ a_kn r_n``, ``Σ r_n``), extremes (``min/max a_kn``, the largest KKT violation per atom)
and, per atom, the ``m`` largest codes with the support of those points (top buffer).
Pass 2 (:class:`PassTwoStats`) computes exact conditional extremes ``H_ij``/``L_ij`` only
for the pairs the buffers could not decide (see
:mod:`dictopt.check.pairs`). Every statistic has ``merge`` so that chunk statistics from
different processes combine exactly (sums add, extremes take max/min, buffers re-select).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from dictopt.check.columns import relu_column_stats, topk_columns
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

    def update(
        self,
        codes_NK: torch.Tensor,
        start: int,
        tau: float,
        active: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Add a chunk of codes whose first row has global index ``start``.

        Once the buffer is full and its ``m``-th values exceed ``τ``, only active entries can
        enter it, so ``active = (rows, cols, vals)`` (the chunk's entries ``> τ``, row-major as
        ``nonzero`` lists them) replaces the dense ``topk`` over the chunk; it also gives the
        supports of the buffered rows.
        """
        c = codes_NK.shape[0]
        k = min(self.m, c)
        full = self.vals.shape[0] == self.m
        if active is not None and self.largest and full and bool((self.vals[-1] >= tau).all()):
            rows, cols, vals = active
            keep = vals.to(F64) > self.vals[-1][cols]
            if bool(keep.any()):
                self._merge_sparse(rows[keep] + start, cols[keep], vals[keep].to(F64))
        else:
            vals, idx = topk_columns(codes_NK, k, largest=self.largest)
            self._merge(vals.to(F64), idx + start)
        # supports of the chunk's rows that made it into the buffer
        local = self.ids - start
        mask = (local >= 0) & (local < c)
        rows = sort_unique(local[mask])
        if rows.numel() and active is not None:
            # the active list is row-major, so its entries on these rows come in the order a
            # scan of ``codes_NK[rows]`` gives, without copying those rows (at large K they
            # are most of the chunk: K·m buffer slots over its rows)
            a_rows, a_cols, a_vals = active
            on = member(a_rows, rows)
            self._add_rows(a_rows[on] + start, a_cols[on], a_vals[on].to(F64))
        elif rows.numel():
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

    def _merge_sparse(self, gid: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        """Merge candidate entries ``(gid, col, val)`` into a full buffer."""
        m, K = self.vals.shape
        cols = torch.arange(K, device=col.device).repeat(m)
        allc = torch.cat([cols, col])
        allv = torch.cat([self.vals.flatten(), val])
        alli = torch.cat([self.ids.flatten(), gid])
        # sort by column, then by value descending (numpy lexsort: stable and fast on CPU)
        order = torch.from_numpy(
            np.lexsort((-allv.cpu().numpy(), allc.cpu().numpy()))
        ).to(allc.device)
        counts = torch.bincount(allc, minlength=K)
        starts = counts.cumsum(0) - counts
        pos = (starts[None, :] + torch.arange(m, device=col.device)[:, None]).flatten()
        sel = order[pos]
        self.vals = allv[sel].reshape(m, K)
        self.ids = alli[sel].reshape(m, K)

    def _add_rows(self, rid: torch.Tensor, col: torch.Tensor, val: torch.Tensor) -> None:
        self.row_id = torch.cat([self.row_id, rid])
        self.row_col = torch.cat([self.row_col, col])
        self.row_val = torch.cat([self.row_val, val])

    def _prune(self) -> None:
        keep = member(self.row_id, sort_unique(self.ids.flatten()))
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


def sort_unique(t: torch.Tensor) -> torch.Tensor:
    """Sorted unique values (numpy on CPU: torch's threaded sort is very slow when the CPU is
    shared).

    Parameters
    ----------
    t:
        A 1-D tensor.

    Returns
    -------
    torch.Tensor
        Its sorted unique values, on its device.
    """
    if t.device.type == "cpu":
        v = np.sort(t.numpy())
        if v.size:
            v = v[np.concatenate([[True], v[1:] != v[:-1]])]
        return torch.from_numpy(v)
    return t.unique()


def argsort_stable(t: torch.Tensor) -> torch.Tensor:
    """Stable argsort (numpy on CPU, see :func:`sort_unique`).

    Parameters
    ----------
    t:
        The 1-D values to order.

    Returns
    -------
    torch.Tensor
        The stable sorting permutation (int64).
    """
    if t.device.type == "cpu":
        return torch.from_numpy(np.argsort(t.numpy(), kind="stable"))
    return torch.argsort(t, stable=True)


def _csr(
    crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """A CSR matrix built from already valid indices (no invariant checks, no beta warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size, check_invariants=False)


def density(a: torch.Tensor, tau: float) -> float:
    """Fraction of the entries of ``a`` above ``tau`` (an exact count: no float copy of ``a``).

    Parameters
    ----------
    a:
        Codes of any shape.
    tau:
        The threshold.

    Returns
    -------
    float
        ``|{a > τ}| / a.numel()`` (0 for an empty ``a``).
    """
    return int(torch.count_nonzero(a > tau)) / max(a.numel(), 1)


def member(a: torch.Tensor, sorted_b: torch.Tensor) -> torch.Tensor:
    """``a ∈ b`` elementwise for a sorted 1-D ``b`` (binary search; faster than ``isin``).

    Parameters
    ----------
    a:
        Values to look up.
    sorted_b:
        Sorted 1-D values.

    Returns
    -------
    torch.Tensor
        Boolean, the shape of ``a``.
    """
    if sorted_b.numel() == 0:
        return torch.zeros_like(a, dtype=torch.bool)
    pos = torch.searchsorted(sorted_b, a).clamp(max=sorted_b.numel() - 1)
    return sorted_b[pos] == a


def _unique_first(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique keys and, for each, the index of one occurrence."""
    if key.numel() == 0:
        return key, key.clone()
    order = argsort_stable(key)
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
        active: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        """Add one chunk: data, its codes (canonical), the dictionary, the row offset.

        Dense ``[c, K]`` work is kept to the two products that cannot be avoided (the codes
        and ``g = R Dᵀ``) and a few fused reductions; everything about *active* codes is done
        on the sparse list of active entries (``c · L0`` of them). ``active`` is that list,
        ``(codes_NK > tau).nonzero(as_tuple=True)``, when the caller has it already.
        """
        a = codes_NK
        c, K = a.shape
        rows, cols = (a > tau).nonzero(as_tuple=True) if active is None else active
        vals = a[rows, cols]
        if sparse:
            crow = torch.zeros(c + 1, dtype=torch.long, device=a.device)
            crow[1:] = torch.bincount(rows, minlength=c).cumsum(0)
            a_csr = _csr(crow, cols, vals, (c, K))
            recon = a_csr @ atoms_KD + bias_D
        else:
            recon = a @ atoms_KD + bias_D
        r = x_ND - recon
        self.n += c
        # inactive codes (≤ τ) still count in sums: add them only when τ > 0
        v64 = vals.to(F64)
        if tau > 0:
            self.sum_a += a.sum(0).to(F64)
            self.sum_a2 += (a * a).sum(0).to(F64)
        else:
            self.sum_a += torch.bincount(cols, weights=v64, minlength=K)
            self.sum_a2 += torch.bincount(cols, weights=v64 * v64, minlength=K)
        self.n_active += torch.bincount(cols, minlength=K).to(F64)
        if sparse:  # Σ_n a_kn r_n as CSR(aᵀ) @ r
            by_col = argsort_stable(cols)
            ccol = torch.zeros(K + 1, dtype=torch.long, device=a.device)
            ccol[1:] = torch.bincount(cols, minlength=K).cumsum(0)
            at_csr = _csr(ccol, rows[by_col], vals[by_col], (K, c))
            self.G_sum += (at_csr @ r).to(F64)
        else:
            self.G_sum += (a.t() @ r).to(F64)
        r64 = r.to(F64)
        self.r_sum += r64.sum(0)
        sq = (r64 * r64).sum(1)
        self.half_sq += 0.5 * float(sq.sum())
        self.l1 += float(a.sum()) if tau > 0 else float(v64.sum())
        self.ev.update(x_ND, recon)
        if self.lam is not None:
            self._add_kkt(a, r, atoms_KD, rows, cols, v64, tau)
            self._add_capacity(sq)
        self._add_extremes(a, start, tau, rows, cols, vals)

    def _add_kkt(self, a: torch.Tensor, r: torch.Tensor, atoms_KD: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor, v64: torch.Tensor, tau: float) -> None:
        """C1 of one chunk: largest KKT violation, slope and exact gain of the code steps."""
        K = a.shape[1]
        lam = self.lam
        g = r @ atoms_KD.t()  # g_kn = d_k · r_n  (THEORY C1)
        ex = (g[rows, cols] - lam).to(F64)
        # inactive entries: violation v = max(g − λ, 0); the optimal step on a_kn alone is
        # δ = v, with first-order gain δ(g − λ) = v² and exact gain v² − v²/2.
        # The slope is the derivative at t = 0 of the gain of δ(t) = max(t(g − λ), −a):
        # (g − λ)² on entries with a > 0 (the clip −a only acts at finite t), v² on
        # inactive ones (proofs/c1_code_kkt.md).
        if tau > 0:
            g_small = g[(a > 0) & (a <= tau)]  # dust entries 0 < a ≤ τ, used below
        # v = relu(g − λ), in place (g is not needed any more): its column maxima and norms
        v_max, v_norm = relu_column_stats(g, lam)
        self.kkt_max = torch.maximum(self.kkt_max, v_max.to(F64))
        v2 = v_norm.to(F64) ** 2
        # active entries: violation |g − λ|, step δ = max(g − λ, −a); replace their
        # inactive-formula contribution (relu ≤ |·|, so the max above stays correct).
        delta = torch.maximum(ex, -v64)
        wrong = torch.relu(ex) ** 2
        self.kkt_max = torch.maximum(
            self.kkt_max,
            torch.zeros_like(self.kkt_max).scatter_reduce_(0, cols, ex.abs(), "amax"),
        )
        self.c1_slope += v2 + torch.bincount(cols, weights=ex * ex - wrong, minlength=K)
        self.c1_gain += 0.5 * v2 + torch.bincount(
            cols, weights=delta * ex - 0.5 * delta * delta - 0.5 * wrong, minlength=K
        )
        if tau > 0:  # entries with 0 < a ≤ τ: δ = max(g − λ, −a), not relu(g − λ)
            small = (a > 0) & (a <= tau)
            if bool(small.any()):
                rr, cc = small.nonzero(as_tuple=True)
                e2 = (g_small - lam).to(F64)
                d2 = torch.maximum(e2, -a[rr, cc].to(F64))
                w2 = torch.relu(e2) ** 2  # what the dense formula counted
                self.c1_slope += torch.bincount(cc, weights=e2 * e2 - w2, minlength=K)
                self.c1_gain += torch.bincount(
                    cc, weights=d2 * e2 - 0.5 * d2 * d2 - 0.5 * w2, minlength=K
                )

    def _add_capacity(self, sq: torch.Tensor) -> None:
        """Capacity (THEORY §3): points with ``‖r_n‖ > λ`` and their gains."""
        lam = self.lam
        norm = sq.sqrt()
        over = norm > lam
        self.n_over += int(over.sum())
        gain = 0.5 * (norm[over] - lam) ** 2
        if gain.numel():
            self.over_sum += float(gain.sum())
            self.over_max = max(self.over_max, float(gain.max()))

    def _add_extremes(self, a: torch.Tensor, start: int, tau: float, rows: torch.Tensor,
                      cols: torch.Tensor, vals: torch.Tensor) -> None:
        """Top buffers, per-atom minima (C4) and maxima of one chunk."""
        c, K = a.shape
        self.top.update(a, start, tau, active=(rows, cols, vals) if tau == 0 else None)
        # min_n a_kn matters only for atoms active on every row of the chunk (C4)
        chunk_min = torch.zeros(K, dtype=F64, device=a.device)
        allon = (torch.bincount(cols, minlength=K) == c).nonzero().flatten()
        if allon.numel():
            chunk_min[allon] = a[:, allon].amin(0).to(F64)
        if tau > 0:
            chunk_min = a.amin(0).to(F64)
        self.min_a = torch.minimum(self.min_a, chunk_min)
        self.max_a = self.top.vals[0].clone()

    def merge(self, o: PassOneStats) -> None:
        """Absorb the statistics of other chunks (e.g. another process)."""
        self.n += o.n
        for name in ("sum_a", "sum_a2", "n_active", "G_sum", "r_sum", "c1_gain", "c1_slope"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.min_a = torch.minimum(self.min_a, o.min_a)
        self.kkt_max = torch.maximum(self.kkt_max, o.kkt_max)
        self.half_sq += o.half_sq
        self.l1 += o.l1
        self.ev.merge(o.ev)
        self.n_over += o.n_over
        self.over_sum += o.over_sum
        self.over_max = max(self.over_max, o.over_max)
        self.top.merge(o.top)
        self.max_a = self.top.vals[0].clone()

    # -- derived ----------------------------------------------------------------------------
    @property
    def mean_a(self) -> torch.Tensor:
        """``ā_k`` (mean over all points)."""
        return self.sum_a / self.n

    @property
    def G(self) -> torch.Tensor:
        """``G_k = (1/N) Σ_n a_kn r_n`` ``[K, d]``."""
        if self.G_sum is None:
            raise RuntimeError("PassOneStats.G: the gradients were released (release_gradients)")
        return self.G_sum / self.n

    def release_gradients(self) -> None:
        """Free ``G_sum`` once C2 has read it (:func:`~dictopt.check.conditions.atom_conditions`).

        It is the one ``[K, d]`` float64 array of the statistics (1.1 GiB at K = 65,536,
        d = 2,304), and nothing after the conditions reads it, so holding it through the
        planning, pass 2 and the report only raised the check's peak memory (issue #17).
        Afterwards ``G`` raises and the statistics can no longer be updated or merged.
        """
        self.G_sum = None  # type: ignore[assignment]

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
        block_elements: int = 1 << 20,
    ) -> None:
        self.pi, self.pj = pi, pj
        self.H = H0.clone()
        self.L = L0.clone()
        P = pi.numel()
        self.coact = torch.zeros(P, dtype=F64, device=pi.device)
        self.t_up = torch.full((P,), torch.inf, dtype=F64, device=pi.device)
        self.t_lo = torch.full((P,), torch.inf, dtype=F64, device=pi.device)
        # Pairs are processed in blocks whose [rows, pairs] temporaries hold at most this many
        # elements, so pass 2's transient memory depends neither on N nor on the pair count.
        self.block_elements = block_elements
        self._groups: list[tuple[int, torch.Tensor]] | None = None  # see _pairs_by_first_atom

    def update(self, codes_NK: torch.Tensor, tau: float, *, sparse: bool | None = None) -> None:
        """Add a chunk (computed in the codes' dtype; extremes are stored in float64).

        ``sparse`` (default: automatic) visits, for each atom ``i``, only the rows where
        ``a_i > 0``: with ``τ = 0`` the other rows have ``a_i = 0`` and their contribution to
        every statistic follows from counts alone, so the cost falls from ``rows × pairs`` to
        about ``rows × L0 × pairs / K``. Both paths give identical results.
        """
        a = codes_NK
        if a.shape[0] == 0 or self.pi.numel() == 0:
            return
        if sparse is None:
            sparse = tau == 0 and density(a, 0.0) < 0.25 and bool((a >= 0).all())
        elif sparse and not (tau == 0 and bool((a >= 0).all())):
            raise ValueError("the sparse pass-2 update needs tau = 0 and nonnegative codes")
        if sparse:
            self._update_sparse(a)
        else:
            self._update_dense(a, tau)

    def _update_dense(self, a: torch.Tensor, tau: float) -> None:
        """Every row against every pair."""
        dt = a.dtype
        block = max(1, self.block_elements // max(1, a.shape[0]))
        for lo in range(0, self.pi.numel(), block):
            sl = slice(lo, lo + block)
            ai, aj = a[:, self.pi[sl]], a[:, self.pj[sl]]
            off = aj <= tau
            H = torch.maximum(self.H[sl], ai.masked_fill(~off, -torch.inf).amax(0).to(F64))
            L = torch.minimum(self.L[sl], ai.masked_fill(~off, torch.inf).amin(0).to(F64))
            self.H[sl], self.L[sl] = H, L
            act_i = ai > tau
            self.coact[sl] += (act_i & ~off).sum(0).to(F64)
            self._step_bounds(sl, ai, aj, off, H.to(dt), L.to(dt))

    def _step_bounds(
        self,
        sl: slice | torch.Tensor,
        ai: torch.Tensor,
        aj: torch.Tensor,
        off: torch.Tensor,
        Hn: torch.Tensor,
        Ln: torch.Tensor,
    ) -> None:
        """Largest C5 certificate steps keeping ``a_j ≥ 0`` on these rows (running min)."""
        up = ~off & (ai > Hn)
        self.t_up[sl] = torch.minimum(
            self.t_up[sl],
            (aj / (ai - Hn).clamp(min=1e-30)).masked_fill(~up, torch.inf).amin(0).to(F64),
        )
        dn = ~off & (ai < Ln)
        self.t_lo[sl] = torch.minimum(
            self.t_lo[sl],
            (aj / (Ln - ai).clamp(min=1e-30)).masked_fill(~dn, torch.inf).amin(0).to(F64),
        )

    def _pairs_by_first_atom(self) -> list[tuple[int, torch.Tensor]]:
        """``(i, indices of the pairs (i, ·))`` for every first atom ``i`` (computed once)."""
        if self._groups is None:
            order = argsort_stable(self.pi)
            atoms, counts = torch.unique_consecutive(self.pi[order], return_counts=True)
            self._groups = list(
                zip(atoms.tolist(), torch.split(order, counts.tolist()), strict=True)
            )
        return self._groups

    def _update_sparse(self, a: torch.Tensor) -> None:
        """τ = 0: for each atom ``i``, only the rows of its support ``A_i = {a_i > 0}``.

        On the other rows ``a_i = 0``, so they add ``0`` to ``H``/``L`` exactly when some row
        outside ``A_i`` has ``a_j = 0`` (a count), nothing to the co-activity, and nothing to
        the step bounds unless ``H < 0`` (no inactive ``j`` seen yet) or ``L > 0``; those
        rare pairs are redone densely.
        """
        n, dt = a.shape[0], a.dtype
        # the support of every atom at once, column by column in ascending row order (one
        # sweep of the codes instead of a strided column scan per atom)
        r_act, c_act = (a > 0).nonzero(as_tuple=True)
        by_col = argsort_stable(c_act)
        rows_by_col = r_act[by_col]
        n_act = torch.bincount(c_act, minlength=a.shape[1])  # [K]
        col_start = n_act.cumsum(0) - n_act
        del r_act, c_act, by_col
        redo = []
        for i, group in self._pairs_by_first_atom():
            lo = int(col_start[i])
            rows = rows_by_col[lo : lo + int(n_act[i])]
            a_rows = a.index_select(0, rows)  # the support of atom i, all atoms
            ai = a_rows[:, i : i + 1]
            block = max(1, self.block_elements // max(1, rows.numel()))
            for blo in range(0, group.numel(), block):
                sl = group[blo : blo + block]
                js = self.pj[sl]
                aj = a_rows.index_select(1, js)
                off = aj <= 0
                coact = (~off).sum(0)
                # rows outside A_i with a_j = 0: |{a_j = 0}| − |A_i ∩ {a_j = 0}|
                zero_i_off_j = (n - n_act[js]) - (rows.numel() - coact) > 0
                H_c = torch.where(zero_i_off_j, 0.0, -torch.inf).to(F64)
                L_c = torch.where(zero_i_off_j, 0.0, torch.inf).to(F64)
                if rows.numel():
                    H_c = torch.maximum(H_c, ai.masked_fill(~off, -torch.inf).amax(0).to(F64))
                    L_c = torch.minimum(L_c, ai.masked_fill(~off, torch.inf).amin(0).to(F64))
                H = torch.maximum(self.H[sl], H_c)
                L = torch.minimum(self.L[sl], L_c)
                self.H[sl], self.L[sl] = H, L
                self.coact[sl] += coact.to(F64)
                dense = ~(H >= 0) | (L > 0)  # rows with a_i = 0 may bound the steps
                if rows.numel():
                    keep = ~dense
                    self._step_bounds(
                        sl[keep], ai, aj[:, keep], off[:, keep], H[keep].to(dt), L[keep].to(dt)
                    )
                redo.append(sl[dense])
        redo_pairs = torch.cat(redo) if redo else self.pi.new_empty(0)
        if redo_pairs.numel():
            block = max(1, self.block_elements // n)
            for blo in range(0, redo_pairs.numel(), block):
                sl = redo_pairs[blo : blo + block]
                ai, aj = a[:, self.pi[sl]], a[:, self.pj[sl]]
                self._step_bounds(sl, ai, aj, aj <= 0, self.H[sl].to(dt), self.L[sl].to(dt))

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
