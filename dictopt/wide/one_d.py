"""The one-dimensional model (THEORY C6 and §3): data varying along one direction.

If every point is ``x_n = c + p_n w`` (unit ``w``, ``c ⟂ w``), then for any bias ``b``,
``‖x_n − b‖ ≥ |p_n − b·w|`` with equality when ``b`` lies on the line, so

    L_∞ = min_β (1/N) Σ_n h_λ(|p_n − β|),   b* = c + β* w,

where ``β*`` is the **Huber location estimate** of the projections with threshold λ. The limit
dictionary has exactly two rays from ``b*``: ``+w`` (points with ``p_n > β* + λ``, code
``p_n − β* − λ``) and ``−w`` (points with ``p_n < β* − λ``). Two atoms attain the lower bound of
every width, so **the global optimum at K = 2 is the antipodal pair** ``±w`` with the bias at
the Huber location; the atoms' densities (fraction of points on which each is active) are
``P(p > β* + λ)`` and ``P(p < β* − λ)``. Both atoms are dense when the spread of ``p`` is large
compared with λ: they are C6 pairs, predicted, not violations.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dictopt.problem import Dictionary, objective
from dictopt.validation import DictoptInputError, check_lambda, to_tensor
from dictopt.wide.bound import wide_limit_bound
from dictopt.wide.limit_dictionary import limit_dictionary


def huber_location(p: Any, lam: float, *, tol: float = 1e-14) -> float:
    """The Huber location estimate: ``argmin_β Σ_n h_λ(|p_n − β|)`` (threshold λ).

    Solved by bisection on the monotone estimating equation ``Σ_n clip(p_n − β, −λ, λ) = 0``
    (an implementation independent of the Newton solver, for cross-checks). When the root set
    is an interval (possible only if no point lies within λ of it) its midpoint is returned.

    Parameters
    ----------
    p:
        Projections ``[N]``.
    lam:
        λ.
    tol:
        Bisection tolerance.

    Returns
    -------
    float
        The location ``β``.
    """
    lam = check_lambda(lam)
    v = to_tensor(p, "p", dtype=torch.float64).reshape(-1)
    if v.numel() == 0:
        raise DictoptInputError("p: no data (N = 0)")

    def psi_sum(beta: float) -> float:
        return float((v - beta).clamp(-lam, lam).sum())

    lo, hi = float(v.min()), float(v.max())  # psi_sum(lo) ≥ 0 ≥ psi_sum(hi)
    # Leftmost and rightmost roots (the sum is nonincreasing in β).
    a_lo, a_hi = lo, hi
    b_lo, b_hi = lo, hi
    for _ in range(200):
        if a_hi - a_lo <= tol * (1 + abs(a_lo)) and b_hi - b_lo <= tol * (1 + abs(b_lo)):
            break
        m = 0.5 * (a_lo + a_hi)
        if psi_sum(m) > 0:
            a_lo = m
        else:
            a_hi = m
        m = 0.5 * (b_lo + b_hi)
        if psi_sum(m) >= 0:
            b_lo = m
        else:
            b_hi = m
    return 0.5 * (0.5 * (a_lo + a_hi) + 0.5 * (b_lo + b_hi))


class OneDPrediction(NamedTuple):
    """What the theory predicts for data along ``direction``."""

    direction: torch.Tensor
    """Unit ``w`` (``[d]``)."""
    location: float
    """``β*``: Huber location of the projections ``p_n = x_n·w``."""
    bias: torch.Tensor
    """Optimal bias from the wide-limit bound (``[d]``)."""
    l_inf: float
    atoms: torch.Tensor
    """Atoms of the limit dictionary (``[2, d]`` for exactly 1-D data)."""
    n_rays: int
    """Number of limit atoms (2 for exactly one-dimensional data)."""
    pair_cosine: float
    """Cosine between the two limit atoms (−1: antipodal; NaN unless there are exactly 2)."""
    density_plus: float
    """Fraction of points with ``p_n > β* + λ`` (active on ``+w``)."""
    density_minus: float
    """Fraction of points with ``p_n < β* − λ`` (active on ``−w``)."""


def principal_direction(x: Any) -> torch.Tensor:
    """Top principal direction of the centred data (sign: positive largest coordinate).

    Parameters
    ----------
    x:
        Data ``[N, d]``.

    Returns
    -------
    torch.Tensor
        ``[d]`` unit vector.
    """
    X = to_tensor(x, "x", dtype=torch.float64)
    Xc = X - X.mean(dim=0)
    _, _, Vh = torch.linalg.svd(Xc, full_matrices=False)
    w = Vh[0]
    return w if float(w[w.abs().argmax()]) > 0 else -w


def predict_one_d(x: Any, lam: float, direction: Any | None = None) -> OneDPrediction:
    """Predictions of the 1-D model for data ``x [N, d]`` along ``direction`` (default: the top
    principal direction). For data with other components (sparse features) the location and
    densities describe the projection only; the bound and atoms are those of the full data.

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    lam:
        λ.
    direction:
        The line (default: the top principal direction).

    Returns
    -------
    OneDPrediction
        The predicted pair, densities, bias location and loss.
    """
    lam = check_lambda(lam)
    X = to_tensor(x, "x", dtype=torch.float64)
    w = principal_direction(X) if direction is None else to_tensor(direction, "direction",
                                                                   dtype=torch.float64)
    w = w.reshape(-1)
    if w.shape[0] != X.shape[1]:
        raise DictoptInputError(f"direction: expected length {X.shape[1]}, got {w.shape[0]}")
    w = w / w.norm()
    p = X @ w
    beta = huber_location(p, lam)
    bound = wide_limit_bound(X, lam)
    ld = limit_dictionary(X, lam, bound=bound)
    atoms = ld.dictionary.atoms
    cos = float(atoms[0] @ atoms[1]) if atoms.shape[0] == 2 else float("nan")
    return OneDPrediction(
        direction=w,
        location=beta,
        bias=bound.bias,
        l_inf=bound.value,
        atoms=atoms,
        n_rays=int(atoms.shape[0]),
        pair_cosine=cos,
        density_plus=float((p > beta + lam).double().mean()),
        density_minus=float((p < beta - lam).double().mean()),
    )


class PairFound(NamedTuple):
    """How a learned dictionary represents the dense direction."""

    cos_plus: float
    """Best cosine of any atom with ``+w``."""
    cos_minus: float
    """Best cosine of any atom with ``−w``."""
    antipodal: bool
    """Both above ``threshold``."""
    density_plus: float
    """Fraction of points on which the ``+w`` atom is active (NaN when not found)."""
    density_minus: float
    bias_location: float
    """``b·w`` of the learned bias (compare with the Huber location)."""


def find_antipodal_pair(
    dictionary: Dictionary, x: Any, direction: Any, *, codes: Any | None = None,
    threshold: float = 0.99,
) -> PairFound:
    """Locate the atoms along ``±direction`` in a learned dictionary and their densities.

    ``codes`` are canonical codes ``[N, K]`` (default: the dictionary's own encoder, or the
    optimal lasso codes when it has none).

    Parameters
    ----------
    dictionary:
        A learned dictionary.
    x:
        Data ``[N, d]``.
    direction:
        The line.
    codes:
        Canonical codes (default: the dictionary's own).
    threshold:
        Cosine an atom needs with ``±direction``.

    Returns
    -------
    PairFound
        The two atoms (or ``None``) and their densities.
    """
    X = dictionary.prepare_batch(x).to(torch.float64)
    w = to_tensor(direction, "direction", dtype=torch.float64).reshape(-1)
    w = w / w.norm()
    A = dictionary.encode(X) if codes is None else to_tensor(codes, "codes", dtype=torch.float64)
    cos = dictionary.atoms.to(torch.float64) @ w
    kp, km = int(cos.argmax()), int(cos.argmin())
    cp_, cm_ = float(cos[kp]), -float(cos[km])
    found = cp_ >= threshold and cm_ >= threshold
    nan = float("nan")
    return PairFound(
        cos_plus=cp_,
        cos_minus=cm_,
        antipodal=found,
        density_plus=float((A[:, kp] > 0).double().mean()) if cp_ >= threshold else nan,
        density_minus=float((A[:, km] > 0).double().mean()) if cm_ >= threshold else nan,
        bias_location=float(dictionary.bias.to(torch.float64) @ w),
    )


#: Per-architecture options for K = 2 (TopK-style SAEs need k ≤ K).
SAE_ONE_D_OPTIONS: dict[str, dict[str, Any]] = {
    "relu": {},
    "topk": {"k": 1},
    "batchtopk": {"k": 1.0},
    "matryoshka": {"k": 1.0},
    "jumprelu": {},
    "mp": {"k": 1},
}


class SaeOneDRow(NamedTuple):
    """One SAE trained on 1-D data: what it found against the prediction."""

    architecture: str
    seed: int
    pair: PairFound
    loss_own: float
    """Canonical loss with the SAE's own codes, at the model's λ."""


def sae_on_one_d(
    x: Any,
    lam: float,
    direction: Any,
    *,
    architectures: list[str] | None = None,
    K: int = 2,
    seeds: list[int] | None = None,
    threshold: float = 0.99,
    **train_options: Any,
) -> list[SaeOneDRow]:
    """Train SAEs (branch ``sae``: :func:`dictopt.solvers.train.fit_sae`) on 1-D data and
    report whether each finds the antipodal pair (``threshold`` on both cosines).

    Only ``relu`` is trained with λ; the others ignore it (they have no L1 objective) and are
    scored with the canonical loss at λ using their own codes.

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    lam:
        λ.
    direction:
        The line.
    architectures:
        SAE architectures (default: the registered ones that fit).
    K:
        Latents.
    seeds:
        Seeds.
    threshold:
        Cosine for finding the pair.
    **train_options:
        Passed to the trainer.

    Returns
    -------
    list[SaeOneDRow]
        One row per architecture and seed.
    """
    import warnings

    from dictopt.solvers.train import fit_sae

    lam = check_lambda(lam)
    X = to_tensor(x, "x", dtype=torch.float64)
    rows: list[SaeOneDRow] = []
    for arch in architectures or list(SAE_ONE_D_OPTIONS):
        opts = {**SAE_ONE_D_OPTIONS.get(arch, {}), **train_options}
        for seed in seeds or [0]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "λ is ignored" for non-L1 SAEs
                dic = fit_sae(arch, X.float(), K=K, lam=lam, seed=seed, progress=False, **opts)
            dic = dic.to(torch.float64)
            A = dic.encode(X)
            pair = find_antipodal_pair(dic, X, direction, codes=A, threshold=threshold)
            rows.append(SaeOneDRow(arch, seed, pair, objective(dic.with_lam(lam), X, A).loss))
    return rows
