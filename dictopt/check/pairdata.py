"""Pair statistics for the hull plot: one streamed pass for any number of atom pairs.

For each ordered pair ``(i, j)`` :func:`pair_data` keeps the C5 edge extremes ``L_ij, H_ij``
(``a_i`` where ``j`` is inactive) and ``L_ji, H_ji``, the points attaining them, activity and
co-activity counts and a reservoir subsample of the points ``(a_i, a_j)``, as a
:class:`~dictopt.check.executor.StreamPass` (:class:`PairPass`) that any executor runs. The
statistics merge exactly, and the reservoir keys are a hash of ``(seed, row index)``, so the
result does not depend on how the rows are chunked or partitioned. The plots only draw it
(:mod:`dictopt.plots.hull`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from dictopt.check.executor import Executor, LocalExecutor
from dictopt.coders import Coder, chunk_codes, make_coder
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, check_width

F64 = torch.float64
INF = math.inf
SIGN = torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, 1.0], dtype=F64)
"""The six tracked extremes per pair are maxima of ``SIGN × value``: ``lo_i, hi_i`` (``j``
inactive), ``lo_j, hi_j`` (``i`` inactive), ``max a_i``, ``max a_j``."""


class PairData(NamedTuple):
    """Everything the hull plot of the pair ``(i, j)`` needs, in raw (canonical) code units."""

    i: int
    j: int
    n: int
    """Number of points streamed."""
    cos: float
    """``c_ij = d_i · d_j``."""
    tau: float
    """Inactivity threshold: ``a ≤ τ`` is inactive."""
    mean_i: float
    mean_j: float
    active_i: int
    active_j: int
    coactive: int
    """Points where both atoms are active."""
    n_off_j: int
    """Points where ``j`` is inactive (the edge carrying the hull of ``a_i``)."""
    n_off_i: int
    lo_i: float
    """``L_ij``: min of ``a_i`` where ``j`` is inactive (NaN when ``j`` is never inactive)."""
    hi_i: float
    """``H_ij``: max of ``a_i`` where ``j`` is inactive."""
    lo_j: float
    """``L_ji``: min of ``a_j`` where ``i`` is inactive."""
    hi_j: float
    """``H_ji``."""
    extremes: np.ndarray
    """``[6, 2]`` raw points ``(a_i, a_j)`` attaining ``lo_i, hi_i, lo_j, hi_j, max a_i,
    max a_j`` (rows are NaN where undefined)."""
    sample: np.ndarray | None
    """``[s, 2]`` uniform reservoir subsample of raw ``(a_i, a_j)`` (None when not kept)."""

    def normalised(self, values: np.ndarray | float, atom: str = "i") -> Any:
        """``a / ā − 1`` for atom ``"i"`` or ``"j"`` (NaN when the atom is dead)."""
        mean = self.mean_i if atom == "i" else self.mean_j
        if mean <= 0:
            return np.asarray(values, dtype=float) * np.nan
        return np.asarray(values, dtype=float) / mean - 1.0


def check_pairs(pairs: Sequence[tuple[int, int]], K: int) -> list[tuple[int, int]]:
    """Validated ordered pairs of distinct atoms.

    Parameters
    ----------
    pairs:
        ``(i, j)`` tuples.
    K:
        Number of atoms.

    Returns
    -------
    list[tuple[int, int]]
    """
    out = []
    for p in pairs:
        if len(p) != 2:
            raise DictoptInputError(f"pairs: expected (i, j) tuples, got {p!r}")
        i, j = int(p[0]), int(p[1])
        if not (0 <= i < K and 0 <= j < K) or i == j:
            raise DictoptInputError(f"pairs: ({i}, {j}) is not a pair of distinct atoms < K={K}")
        out.append((i, j))
    return out


def row_keys(seed: int, start: int, n: int) -> torch.Tensor:
    """Uniform reservoir keys in ``[0, 1)`` of rows ``start … start + n − 1``.

    Parameters
    ----------
    seed:
        Seed of the reservoir.
    start, n:
        The first global row and the number of rows.

    Returns
    -------
    torch.Tensor
        ``[n]`` float64 keys: the SplitMix64 hash of ``(seed, row)``, so a row's key does not
        depend on how the rows are chunked or partitioned.
    """
    with np.errstate(over="ignore"):
        z = np.arange(start, start + n, dtype=np.uint64)
        z = z + np.uint64(((seed + 1) * 0x9E3779B97F4A7C15) % (1 << 64))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) / float(1 << 53))


@dataclass
class PairState:
    """Mergeable pair statistics of some rows (see :class:`PairPass`)."""

    n: int
    total: torch.Tensor
    """``[U]`` sums of the codes of the atoms in some pair."""
    active: torch.Tensor
    coact: torch.Tensor
    """``[P]`` co-activity counts."""
    off_j: torch.Tensor
    off_i: torch.Tensor
    best: torch.Tensor
    """``[P, 6]`` ``SIGN × extreme`` (maximised)."""
    points: torch.Tensor
    """``[P, 6, 2]`` the points attaining them."""
    keys: torch.Tensor
    """``[s]`` reservoir keys of the kept rows."""
    kept: torch.Tensor
    """``[s, S]`` their codes of the sampled atoms."""
    cap: int
    """Reservoir size: only the ``cap`` smallest keys are kept."""


class PairPass:
    """:func:`pair_data`'s statistics as a :class:`~dictopt.check.executor.StreamPass`.

    Parameters
    ----------
    dictionary:
        The canonical dictionary.
    coder:
        Its codes (:func:`dictopt.coders.make_coder`).
    pairs:
        Validated ordered pairs.
    tau:
        Inactivity threshold.
    sample:
        Reservoir size.
    sampled:
        Pairs that keep a subsample.
    seed:
        Seed of the reservoir keys.
    columns:
        ``encode_columns`` of an encoder whose latents are independent, or ``None``.
    """

    desc = "pair data"
    fixes_first_chunk = False

    def __init__(self, dictionary: Dictionary, coder: Coder, pairs: list[tuple[int, int]],
                 tau: float, sample: int, sampled: list[tuple[int, int]], seed: int,
                 columns: Any = None) -> None:
        self.dictionary, self.coder, self.pairs = dictionary, coder, pairs
        self.tau, self.sample, self.seed, self.columns = tau, sample, seed, columns
        self.union = sorted({k for p in pairs for k in p})
        col = {k: c for c, k in enumerate(self.union)}
        self.pi = torch.tensor([col[i] for i, _ in pairs], dtype=torch.long)
        self.pj = torch.tensor([col[j] for _, j in pairs], dtype=torch.long)
        self.sampled = set(sampled)
        self.sampled_atoms = sorted({k for p in sampled for k in p} & set(self.union))
        self.s_cols = torch.tensor([col[k] for k in self.sampled_atoms], dtype=torch.long)

    def first_chunk(self, x: torch.Tensor, start: int) -> PairPass:
        """Nothing is fixed on the first chunk."""
        return self

    def start(self) -> PairState:
        """No rows yet."""
        U, P = len(self.union), len(self.pairs)
        zeros = torch.zeros(P, dtype=torch.long)
        return PairState(
            0, torch.zeros(U, dtype=F64), torch.zeros(U, dtype=torch.long), zeros,
            zeros.clone(), zeros.clone(), torch.full((P, 6), -INF, dtype=F64),
            torch.full((P, 6, 2), math.nan, dtype=F64), torch.empty(0, dtype=F64),
            torch.empty(0, len(self.sampled_atoms), dtype=F64), self.sample,
        )

    def _codes(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """``[n, U]`` float64 codes of the atoms in some pair, on the CPU."""
        dic = self.dictionary
        x = x.to(dic.device)
        if self.columns is None:
            a = chunk_codes(self.coder, x, start, dic.K, dic.dtype)
            return a[:, self.union].to(device="cpu", dtype=F64)
        U = torch.tensor(self.union, dtype=torch.long, device=dic.device)
        A = self.columns(x, U).to(F64) * dic.code_scale[U].to(F64)
        if bool((A < -1e-9).any()) or not bool(torch.isfinite(A).all()):
            raise DictoptInputError(
                f"codes: encode_columns returned negative or non-finite codes (rows {start}+)"
            )
        return A.clamp(min=0).cpu()

    def update(self, state: PairState, x: torch.Tensor, start: int) -> PairState:
        """Add one chunk's codes."""
        A = self._codes(x, start)
        on = A > self.tau
        ai, aj, on_i, on_j = A[:, self.pi], A[:, self.pj], on[:, self.pi], on[:, self.pj]
        part = PairState(
            A.shape[0], A.sum(0), on.sum(0), (on_i & on_j).sum(0), (~on_j).sum(0),
            (~on_i).sum(0), *_extremes(ai, aj, on_i, on_j), *self._reservoir(A, start),
            self.sample,
        )
        return self.merge(state, part)

    def _reservoir(self, A: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not (self.sample and self.sampled_atoms):
            return torch.empty(0, dtype=F64), torch.empty(0, len(self.sampled_atoms), dtype=F64)
        keys = row_keys(self.seed, start, A.shape[0])
        kept = A[:, self.s_cols]
        if keys.numel() > self.sample:
            keep = torch.topk(keys, self.sample, largest=False).indices
            keys, kept = keys[keep], kept[keep]
        return keys, kept

    @staticmethod
    def merge(a: PairState, b: PairState) -> PairState:
        """``a`` with ``b`` (later rows) merged in; ties keep ``a``'s points."""
        better = b.best > a.best
        points = torch.where(better[..., None], b.points, a.points)
        keys, kept = torch.cat([a.keys, b.keys]), torch.cat([a.kept, b.kept])
        if keys.numel() > a.cap:
            keep = torch.topk(keys, a.cap, largest=False).indices
            keys, kept = keys[keep], kept[keep]
        return PairState(
            a.n + b.n, a.total + b.total, a.active + b.active, a.coact + b.coact,
            a.off_j + b.off_j, a.off_i + b.off_i, torch.maximum(a.best, b.best), points,
            keys, kept, a.cap,
        )


def _extremes(ai: torch.Tensor, aj: torch.Tensor, on_i: torch.Tensor,
              on_j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P, 6]`` signed extremes of one chunk and ``[P, 6, 2]`` the (first) points attaining
    them (``−inf`` and NaN where the edge is empty)."""
    P = ai.shape[1]
    best = torch.full((P, 6), -INF, dtype=F64)
    points = torch.full((P, 6, 2), math.nan, dtype=F64)
    if ai.shape[0] == 0:
        return best, points
    masks = (~on_j, ~on_j, ~on_i, ~on_i, None, None)
    vals = (ai, ai, aj, aj, ai, aj)
    cols = torch.arange(P)
    for e in range(6):
        v = vals[e] * SIGN[e]
        if masks[e] is not None:
            v = torch.where(masks[e], v, torch.full_like(v, -INF))
        top, rows = v.max(dim=0)
        found = top > -INF
        best[found, e] = top[found]
        points[found, e, 0] = ai[rows[found], cols[found]]
        points[found, e, 1] = aj[rows[found], cols[found]]
    return best, points


def pair_data(
    dictionary: Dictionary,
    source: Any,
    pairs: Sequence[tuple[int, int]],
    *,
    codes: Any = "own",
    tau: float = 0.0,
    sample: int = 20_000,
    sample_pairs: Sequence[tuple[int, int]] | None = None,
    seed: int = 0,
    progress: bool = False,
    executor: Executor | None = None,
) -> list[PairData]:
    """Stream ``source`` once and collect :class:`PairData` for each pair.

    Parameters
    ----------
    dictionary:
        The canonical dictionary (atoms give ``c_ij``; its encoder gives the codes).
    source:
        Activations (array, ``.npy``, shard folder or source).
    pairs:
        Ordered pairs ``(i, j)``; the data cover both orders.
    codes:
        ``"own"``, ``"optimal"``, a callable or given codes ``[N, K]`` (as for ``check``).
    tau:
        Inactivity threshold (use the report's ``summary["tau"]``).
    sample:
        Reservoir size (points kept for the scatter; the extremes are kept exactly anyway).
    sample_pairs:
        Pairs that keep a subsample (default: all). Others only get exact statistics, which
        keeps memory small when many pairs are scanned for the co-occurrence scatter.
    seed:
        Seed of the reservoir.
    progress:
        Show a progress bar.
    executor:
        Runs the pass (default: :class:`~dictopt.check.executor.LocalExecutor`).

    An encoder with a method ``encode_columns(x, idx) -> raw codes [N, len(idx)]`` (exact for
    encoders whose latents are computed independently, like ReLU and JumpReLU SAEs) is asked
    only for the atoms of ``pairs`` when ``codes="own"``, which makes the pass ``O(N d P)``
    instead of ``O(N d K)``.

    Returns
    -------
    list[PairData]
        In the order of ``pairs``. Memory: ``O(P + sample × atoms)``, independent of N.
    """
    pairs = check_pairs(pairs, dictionary.K)
    if not pairs:
        return []
    if sample < 0:
        raise DictoptInputError(f"sample: must be ≥ 0, got {sample}")
    _, coder = make_coder(dictionary, codes)
    sampled = pairs if sample_pairs is None else check_pairs(sample_pairs, dictionary.K)
    columns = None
    if isinstance(codes, str) and codes == "own" and dictionary.encoder is not None:
        columns = getattr(dictionary.encoder, "encode_columns", None)
    job = PairPass(dictionary, coder, pairs, tau, sample, sampled, seed, columns)
    executor = executor if executor is not None else LocalExecutor()
    with executor.session():
        stream = executor.open(source, dtype=dictionary.dtype, chunk_size=None)
        check_width(stream.d, dictionary.d, getattr(stream, "n", None))
        state = executor.run(job, stream, progress=progress)
    if state.n == 0:
        raise DictoptInputError("activations: no data (0 rows)")
    return _finish(job, state)


def _finish(job: PairPass, state: PairState) -> list[PairData]:
    """One :class:`PairData` per pair from the merged statistics."""
    n = state.n
    mean = state.total / n
    atoms = job.dictionary.atoms.to(F64)
    col = {k: c for c, k in enumerate(job.union)}
    s_pos = {k: c for c, k in enumerate(job.sampled_atoms)}
    keys, kept = state.keys, state.kept
    if job.sample and keys.numel():  # the sample: the rows with the smallest keys, by key
        order = torch.topk(keys, min(job.sample, keys.numel()), largest=False).indices
        kept = kept[order]
    out = []
    for p, (i, j) in enumerate(job.pairs):
        ext = state.best[p] * SIGN  # back to values (−inf·sign where undefined)
        vals = [float(v) if math.isfinite(float(v)) else math.nan for v in ext]
        smp = None
        if job.sample and (i, j) in job.sampled:
            smp = torch.stack([kept[:, s_pos[i]], kept[:, s_pos[j]]], dim=1).numpy().copy()
        out.append(PairData(
            i=i, j=j, n=n, cos=float(atoms[i] @ atoms[j]), tau=float(job.tau),
            mean_i=float(mean[col[i]]), mean_j=float(mean[col[j]]),
            active_i=int(state.active[col[i]]), active_j=int(state.active[col[j]]),
            coactive=int(state.coact[p]), n_off_j=int(state.off_j[p]),
            n_off_i=int(state.off_i[p]), lo_i=vals[0], hi_i=vals[1], lo_j=vals[2],
            hi_j=vals[3], extremes=state.points[p].numpy().copy(), sample=smp,
        ))
    return out
