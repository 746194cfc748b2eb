"""Width sweeps: classical dictionaries of growing width against the wide-limit bound ``L_∞``.

For each width ``K`` and seed a dictionary is learned (solver ``classical`` by default) and
scored with the canonical objective under its *optimal* codes. Since every nonnegative code
gives a loss ``≥ f(b) ≥ L_∞`` (THEORY §3), ``L_∞ ≤ L*(K) ≤ found loss`` for every run; the
gap ``best − L_∞`` should shrink with ``K`` and vanish once every data ray outside the λ-ball
owns an atom. For widths at least the number of limit rays the sweep also runs the solver
initialised at the explicit limit dictionary (padded with random atoms), which must stay at
``L_∞`` up to solver tolerance.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dictopt.data.evaluate import evaluate
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, check_lambda, check_positive_int, to_tensor
from dictopt.wide.bound import WideBound, wide_limit_bound
from dictopt.wide.limit_dictionary import limit_dictionary

log = logging.getLogger(__name__)

FitFn = Callable[..., Dictionary]


@dataclass
class WidthRow:
    """Everything recorded for one width."""

    K: int
    losses: list[float]
    """Canonical loss (optimal codes) of each seed's dictionary, in seed order."""
    best: float
    median: float
    gap: float
    """``best − L_∞`` (≥ 0 up to rounding)."""
    rel_gap: float
    """``gap / L_∞``."""
    ray_ownership: float
    """Fraction of limit rays (data rays outside the λ-ball around the bound's bias) with a
    learned atom of cosine ≥ ``ray_cos`` (best seed)."""
    split_counts: list[int] | None
    """Per ground-truth feature: learned atoms with cosine ≥ ``split_cos`` (best seed)."""
    c5_violations: int | None
    """C5 pair violations of the best seed's dictionary under optimal codes."""
    limit_init_loss: float | None = None
    """Loss when the solver starts at the limit dictionary (``K ≥`` number of limit rays)."""
    attained: bool = False
    """Whether some run reached ``L_∞`` within ``attain_rtol``."""


@dataclass
class SweepResult:
    """A width sweep: the bound and one :class:`WidthRow` per width."""

    l_inf: float
    bias: list[float]
    lam: float
    n: int
    d: int
    n_outside: int
    n_rays: int
    residual: float
    seeds: list[int]
    solver: str
    rows: list[WidthRow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, folder: str | Path) -> Path:
        """Write ``folder/wide.json`` (folder created if needed); returns the file path."""
        from dictopt.atomic import write_text

        return write_text(Path(folder) / "wide.json",
                          json.dumps(self.to_dict(), indent=2, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor | np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def check_widths(widths: Sequence[int], n: int | None = None) -> list[int]:
    """Widths must be strictly increasing integers ≥ 1 and (when N is known) at most N.

    Beyond ``K = N`` no new ray can be served: the limit is attained by ``K ≥`` the number of
    points outside the λ-ball ``≤ N``, so wider dictionaries only add idle atoms.

    Parameters
    ----------
    widths:
        Widths ``K``.
    n:
        Number of points, if known.

    Returns
    -------
    list[int]
        The widths.
    """
    ws = [check_positive_int(k, "widths") for k in widths]
    if not ws:
        raise DictoptInputError("widths: need at least one width")
    for a, b in zip(ws, ws[1:], strict=False):
        if b <= a:
            raise DictoptInputError(f"widths: must be strictly increasing, got {ws}")
    if n is not None and ws[-1] > n:
        raise DictoptInputError(
            f"widths: K = {ws[-1]} exceeds N = {n}; the wide limit is attained at K = number of "
            "points outside the λ-ball ≤ N, so wider dictionaries are not meaningful here"
        )
    return ws


def _pad_init(limit_atoms: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """Limit atoms plus ``K − R`` random unit atoms."""
    R, d = limit_atoms.shape
    g = torch.Generator().manual_seed(seed)
    extra = torch.randn(K - R, d, generator=g, dtype=torch.float64)
    extra = extra / extra.norm(dim=1, keepdim=True)
    return torch.cat([limit_atoms, extra])


def default_fit() -> FitFn:
    """The registered ``classical`` solver (branch ``coding``).

    Returns
    -------
    FitFn
        The ``classical`` solver's fit.
    """
    from dictopt.solvers.registry import get_solver

    return get_solver("classical").fit


def sweep(
    data: Any,
    widths: Sequence[int],
    seeds: Sequence[int],
    lam: float,
    *,
    truth: Any | None = None,
    fit: FitFn | None = None,
    fit_options: dict[str, Any] | None = None,
    limit_init: bool = True,
    ray_cos: float = 0.9999,
    split_cos: float = 0.9,
    attain_rtol: float = 1e-6,
    progress: bool = False,
) -> SweepResult:
    """Train dictionaries at each width and compare them with the wide-limit bound.

    Parameters
    ----------
    data:
        Data ``[N, d]`` (array/tensor); held in memory (the sweep is for small experiments).
    widths:
        Strictly increasing widths ``K`` (each ≤ N).
    seeds:
        Seeds; one fit per (width, seed).
    lam:
        λ > 0.
    truth:
        Optional ground-truth atoms ``[K_true, d]`` for the splitting counts.
    fit:
        ``fit(source, *, K, lam, seed, progress, **options) -> Dictionary`` (default: the
        registered ``classical`` solver). It must accept ``init`` (a :class:`Dictionary`) when
        ``limit_init`` is on.
    fit_options:
        Extra keyword arguments for ``fit``.
    limit_init:
        For widths ≥ the number of limit rays, also fit from the limit dictionary.
    ray_cos, split_cos:
        Cosine thresholds for ray ownership and for counting atoms aligned with a true feature.
    attain_rtol, progress:
        ``attained`` when ``loss − L_∞ ≤ attain_rtol · L_∞``; a progress bar over the fits.

    Returns
    -------
    SweepResult
        The bound, and per width the losses, gaps, ray ownership, splits and C5 counts.
    """
    lam = check_lambda(lam)
    X, ws, seed_list, true_atoms = _sweep_inputs(data, widths, seeds, truth)
    n, d = X.shape
    fit = fit or default_fit()
    options = dict(fit_options or {})
    bound: WideBound = wide_limit_bound(X, lam)
    rays = limit_dictionary(X, lam, bound=bound).dictionary.atoms if bound.n_outside else None
    n_rays = 0 if rays is None else int(rays.shape[0])
    result = SweepResult(
        l_inf=bound.value,
        bias=bound.bias.tolist(),
        lam=lam,
        n=n,
        d=d,
        n_outside=bound.n_outside,
        n_rays=n_rays,
        residual=bound.residual,
        seeds=seed_list,
        solver=getattr(fit, "__name__", "fit"),
        meta={"ray_cos": ray_cos, "split_cos": split_cos, "attain_rtol": attain_rtol},
    )
    bar = tqdm(total=len(ws) * len(seed_list), desc="wide sweep", disable=not progress,
               leave=False)
    try:
        for K in ws:
            row = _width_row(X, K, seed_list, lam, fit, options, bound, rays, true_atoms,
                             result.meta, limit_init, bar)
            result.rows.append(row)
            log.info("K=%d best %.6g (gap %.3g)", K, row.best, row.gap)
    finally:
        bar.close()
    return result


def _sweep_inputs(
    data: Any, widths: Sequence[int], seeds: Sequence[int], truth: Any | None
) -> tuple[torch.Tensor, list[int], list[int], torch.Tensor | None]:
    """The data (float64), widths, seeds and true atoms, validated."""
    X = to_tensor(data, "data", dtype=torch.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DictoptInputError(
            f"data: expected a non-empty 2-D array [N, d], got shape {tuple(X.shape)}"
        )
    n, d = X.shape
    ws = check_widths(widths, n)
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise DictoptInputError("seeds: need at least one seed")
    true_atoms = None
    if truth is not None:
        true_atoms = to_tensor(truth, "truth", dtype=torch.float64)
        if true_atoms.ndim != 2 or true_atoms.shape[1] != d:
            raise DictoptInputError(f"truth: expected [K_true, {d}], got {tuple(true_atoms.shape)}")
    return X, ws, seed_list, true_atoms


def _width_row(
    X: torch.Tensor, K: int, seed_list: list[int], lam: float, fit: FitFn,
    options: dict[str, Any], bound: WideBound, rays: torch.Tensor | None,
    true_atoms: torch.Tensor | None, meta: dict[str, Any], limit_init: bool, bar: Any,
) -> WidthRow:
    """Fit every seed at width ``K`` (and from the limit dictionary) and compare."""
    dicts, losses = [], []
    for seed in seed_list:
        dic = fit(X, K=K, lam=lam, seed=seed, progress=False, **options)
        dicts.append(dic)
        losses.append(_loss(dic, X))
        bar.update(1)
    best_i = int(np.argmin(losses))
    best = losses[best_i]
    row = WidthRow(
        K=K,
        losses=losses,
        best=best,
        median=float(statistics.median(losses)),
        gap=best - bound.value,
        rel_gap=(best - bound.value) / bound.value if bound.value > 0 else math.nan,
        ray_ownership=_ownership(dicts[best_i].atoms, rays, meta["ray_cos"]),
        split_counts=_splits(dicts[best_i].atoms, true_atoms, meta["split_cos"]),
        c5_violations=None,
    )
    row.c5_violations = _c5(dicts[best_i], X)
    n_rays = 0 if rays is None else int(rays.shape[0])
    if limit_init and rays is not None and K >= n_rays:
        init = Dictionary(
            atoms=_pad_init(rays, K, seed_list[0]), bias=bound.bias.clone(), lam=lam
        )
        dic = fit(X, K=K, lam=lam, seed=seed_list[0], progress=False, init=init, **options)
        row.limit_init_loss = _loss(dic, X)
    runs = losses + ([row.limit_init_loss] if row.limit_init_loss is not None else [])
    row.attained = min(runs) - bound.value <= meta["attain_rtol"] * abs(bound.value)
    return row


def _loss(dictionary: Dictionary, X: torch.Tensor) -> float:
    return float(evaluate(dictionary.to(torch.float64), X, codes="optimal").loss)


def _ownership(atoms: torch.Tensor, rays: torch.Tensor | None, ray_cos: float) -> float:
    if rays is None:
        return 1.0
    cos = rays @ atoms.to(torch.float64).T
    return float((cos.max(dim=1).values >= ray_cos).double().mean())


def _splits(atoms: torch.Tensor, truth: torch.Tensor | None, split_cos: float) -> list[int] | None:
    if truth is None:
        return None
    from dictopt.metrics import atom_recovery

    return atom_recovery(atoms.to(torch.float64), truth, threshold=split_cos).split_counts.tolist()


def _c5(dictionary: Dictionary, X: torch.Tensor) -> int:
    """C5 violations of the checker (:mod:`dictopt.check`) under optimal codes."""
    from dictopt.check import check

    d64 = dictionary.to(torch.float64)
    report = check(d64, X, codes="optimal", hull=False)
    return int(report.summary["counts"]["C5"])
