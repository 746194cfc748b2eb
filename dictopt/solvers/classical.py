"""Classical dictionary learning for the canonical problem (THEORY §1), two ways.

``classical``: our alternating minimisation, every step exact, so the objective never increases.

1. **Codes** — the exact nonnegative lasso (:func:`dictopt.solvers.coding.solve_codes`,
   warm-started from the previous codes, stopping on C1's KKT residual).
2. **Atoms** — block-coordinate descent on the unit sphere. With the codes and the other atoms
   fixed, the loss in ``d_k`` is ``const − (1/N) d_k · u_k`` with
   ``u_k = Σ_n a_kn (r_n + a_kn d_k)`` (``r_n`` the current residual), so the exact minimiser
   over ``‖d_k‖ = 1`` is ``d_k = u_k / ‖u_k‖``. Atoms are updated one after another, keeping
   ``E = AᵀR`` current with a rank-one update (cost independent of N).
   An *unused* atom (``a_kn = 0`` for every n) does not enter the loss; it is re-initialised
   along the residual of the worst-reconstructed point not yet taken, ``r_n / ‖r_n‖``, when
   ``‖r_n‖ > λ`` (only then can a new atom there lower the loss, THEORY §3). This leaves the
   loss unchanged and lets the next code step use the atom.
3. **Bias** — ``b = mean_n (x_n − Σ_k a_kn d_k)``, the exact minimiser.

**Warm phase** (large data sets only, ``warm_rows``): before the exact alternation, the same
alternation runs on a random subsample with *inexact* codes — a few active-set steps from the
previous codes (:func:`~dictopt.solvers.coding.improve_codes`), which never raise the objective
— so the costly early iterations, where atoms are still data points and supports are large,
are cheap. It stops when the subsample's loss decreases by less than ``1e-3`` relatively, or
after ``warm_iters`` iterations. The exact phase then starts from its atoms on all the data;
``history`` records the exact phase only, so it stays non-increasing.

Stopping rule: the first-order conditions at ``(D, b, A)`` right after the code step —
C1 ``kkt ≤ code_tol`` (relative to λ), C2 ``max_k ‖(I − d_k d_kᵀ) G_k‖ / λ ≤ grad_tol`` with
``G_k = (1/N) Σ_n a_kn r_n`` and C3 ``‖(1/N) Σ_n r_n‖ / λ ≤ grad_tol`` (both gradients of L
divided by λ: dimensionless, the unit C1 uses) — or a relative objective decrease below
``ftol`` (stalled; then ``converged`` reports whether the conditions hold), or ``max_iter``.

The data are loaded into memory (``source.to_tensor()``): classical solvers are for data sets
that fit in memory; use an SAE solver for streams.

``sklearn``: a wrapper over scikit-learn's (MiniBatch)DictionaryLearning with positive codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from dictopt.data.sources import as_source
from dictopt.problem import Dictionary
from dictopt.solvers.coding import improve_codes, solve_codes
from dictopt.solvers.registry import register_solver
from dictopt.validation import (
    DictoptInputError,
    check_lambda,
    check_matrix,
    check_positive_int,
    to_tensor,
)

log = logging.getLogger(__name__)


class Residuals(NamedTuple):
    """First-order residuals at ``(D, b, A)`` (THEORY C1–C3), all relative to λ."""

    loss: float
    c1: float
    """``max violation / λ`` of the code KKT conditions."""
    c2: float
    """``max_k ‖(I − d_k d_kᵀ) G_k‖ / λ``, ``G_k = (1/N) Σ_n a_kn r_n``."""
    c3: float
    """``‖(1/N) Σ_n r_n‖ / λ``."""


def load_data(source: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All rows of ``source`` in memory (classical solvers need the whole data set).

    Parameters
    ----------
    source:
        Array, tensor, path or ActivationSource.
    dtype:
        dtype of the result.

    Returns
    -------
    torch.Tensor
        ``[N, d]``.
    """
    return as_source(source).to_tensor().to(dtype)


def check_fit_args(K: Any, lam: Any) -> tuple[int, float]:
    """``K ≥ 1`` and ``λ > 0`` or a named error.

    Parameters
    ----------
    K:
        Number of atoms.
    lam:
        λ.

    Returns
    -------
    tuple[int, float]
        ``(K, λ)`` validated.
    """
    if lam is None:
        raise DictoptInputError("lam: classical dictionary learning needs λ > 0")
    return check_positive_int(K, "K"), check_lambda(lam)


def initial_atoms(x_ND: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """``K`` distinct centred data points, normalised (random directions where a point is at
    the mean or there are fewer points than atoms).

    Parameters
    ----------
    x_ND:
        Data.
    K:
        Number of atoms.
    seed:
        Seed of the choice.

    Returns
    -------
    torch.Tensor
        ``[K, d]`` unit atoms.
    """
    g = torch.Generator().manual_seed(seed)
    xc = x_ND - x_ND.mean(dim=0)
    take = torch.randperm(x_ND.shape[0], generator=g)[:K]
    atoms = torch.randn(K, x_ND.shape[1], generator=g, dtype=x_ND.dtype)
    picked = xc[take]
    usable = picked.norm(dim=1) > 1e-12 * (1 + float(xc.norm(dim=1).max()))
    atoms[: len(take)][usable] = picked[usable]
    return atoms / atoms.norm(dim=1, keepdim=True)


def first_order_residuals(
    x: torch.Tensor, D: torch.Tensor, b: torch.Tensor, A: torch.Tensor, lam: float, c1: float
) -> Residuals:
    """Loss and C2/C3 residuals at ``(D, b, A)`` (C1 is passed in from the code solver).

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    D:
        Unit atoms ``[K, d]``.
    b:
        Bias ``[d]``.
    A:
        Codes ``[N, K]``.
    lam:
        λ.
    c1:
        The code solver's KKT residual.

    Returns
    -------
    Residuals
        Loss and C1–C3 residuals relative to λ.
    """
    R = x - b - A @ D
    N = x.shape[0]
    loss = float((0.5 * (R * R).sum() + lam * A.sum()) / N)
    G_KD = A.T @ R / N
    perp = G_KD - (G_KD * D).sum(dim=1, keepdim=True) * D
    return Residuals(loss, c1, float(perp.norm(dim=1).max()) / lam, float(R.mean(0).norm()) / lam)


def atom_step(
    x: torch.Tensor, D: torch.Tensor, b: torch.Tensor, A: torch.Tensor, lam: float
) -> tuple[torch.Tensor, int]:
    """Exact block-coordinate minimisation over each unit atom in turn; returns
    ``(new atoms, number of unused atoms re-initialised)``.

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    D:
        Unit atoms ``[K, d]``.
    b:
        Bias ``[d]``.
    A:
        Codes ``[N, K]``.
    lam:
        λ.

    Returns
    -------
    tuple[torch.Tensor, int]
        New atoms and how many unused atoms were re-initialised.
    """
    D = D.clone()
    R = x - b - A @ D
    C_KK = A.T @ A
    E_KD = A.T @ R  # Σ_n a_kn r_n, kept current as atoms change
    used = C_KK.diagonal() > 0
    for k in torch.where(used)[0].tolist():
        u = E_KD[k] + C_KK[k, k] * D[k]
        norm = float(u.norm())
        if norm == 0.0:
            continue  # the loss does not depend on d_k: keep it
        delta = u / norm - D[k]
        E_KD -= C_KK[:, k : k + 1] * delta
        D[k] += delta
        D[k] /= D[k].norm()  # exact unit norm despite rounding
    unused = torch.where(~used)[0]
    if unused.numel():
        R = x - b - A @ D
        rnorm = R.norm(dim=1)
        worst = torch.argsort(rnorm, descending=True)[: unused.numel()]
        worst = worst[rnorm[worst] > lam]
        for k, n in zip(unused.tolist(), worst.tolist(), strict=False):
            D[k] = R[n] / rnorm[n]
        return D, int(worst.numel())
    return D, 0


WARM_CODE_STEPS = 2
"""Active-set steps per code step of the warm phase: a re-solve on the current supports and
one round of adding atoms. On 20k × 64, K = 256 this reached a given objective 2–3× sooner
than 3 or 4 steps (sparser codes while the atoms still move a lot) and 1 step stalls."""

WARM_MIN_ROWS = 10_000
"""Below this many rows ``warm_rows="auto"`` runs no warm phase. Deliberately high: at 4,000
rows the warm phase still reached sklearn's objectives 8–14× sooner, but small problems (the
demo, the notebooks) keep the exact-only path their published results come from."""


def warm_rows_for(N: int, K: int, warm_rows: Any) -> int:
    """Rows of the warm phase: ``"auto"`` is ``min(N // 2, 40 K)`` when ``N ≥ 10,000``, else 0
    (none); an int is used as given (capped at N); None or 0 means none.

    Parameters
    ----------
    N:
        Number of rows.
    K:
        Number of atoms.
    warm_rows:
        ``"auto"``, an int, ``None`` or 0.

    Returns
    -------
    int
        Rows of the warm phase (0: none).
    """
    if warm_rows is None:
        return 0
    if warm_rows == "auto":
        return min(N // 2, 40 * K) if N >= WARM_MIN_ROWS else 0
    if isinstance(warm_rows, bool) or not isinstance(warm_rows, int) or warm_rows < 0:
        raise DictoptInputError(
            f"warm_rows: expected 'auto', None or an int ≥ 0, got {warm_rows!r}"
        )
    return min(warm_rows, N)


def warm_phase(
    x: torch.Tensor,
    D: torch.Tensor,
    b: torch.Tensor,
    lam: float,
    *,
    rows: int,
    max_iter: int,
    code_steps: int,
    seed: int,
    fit_bias: bool,
    on_update: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Alternation on ``rows`` random rows with inexact codes (module docstring); returns the
    atoms, the bias and a summary for ``meta``. Each code step and each atom step lowers the
    subsample's loss at its codes, so ``losses`` never increase.

    Parameters
    ----------
    x:
        Data ``[N, d]``.
    D:
        Initial atoms.
    b:
        Initial bias.
    lam:
        λ.
    rows:
        Rows used.
    max_iter:
        Bound on iterations.
    code_steps:
        Active-set steps per code update.
    seed:
        Seed of the rows.
    fit_bias:
        Learn the bias.
    on_update:
        Called after every atom step.
    progress:
        Show a progress bar.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, dict[str, Any]]
        Atoms, bias and the phase's summary.
    """
    g = torch.Generator().manual_seed(seed + 1)
    xs = x[torch.randperm(x.shape[0], generator=g)[:rows].to(x.device)]
    A, losses = None, []
    bar = tqdm(total=max_iter, desc=f"classical warm phase ({rows} rows)", disable=not progress,
               leave=False)
    for _ in range(max_iter):
        A = improve_codes(D, xs, lam, init=A, steps=code_steps, bias=b)
        D, _ = atom_step(xs, D, b, A, lam)
        R = xs - A @ D
        if fit_bias:
            b = R.mean(dim=0)
        R -= b
        if on_update is not None:
            on_update("warm", D, b)
        losses.append(float((0.5 * (R * R).sum() + lam * A.sum()) / rows))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.6g}")
        if len(losses) > 1 and losses[-2] - losses[-1] <= 1e-3 * abs(losses[-2]):
            break
    bar.close()
    return D, b, {"rows": rows, "iterations": len(losses), "losses": losses}


def fit_classical(
    source: Any,
    *,
    K: int,
    lam: float,
    seed: int = 0,
    max_iter: int = 1000,
    tol: float = 1e-13,
    grad_tol: float = 1e-7,
    code_tol: float = 1e-10,
    init: Any | None = None,
    progress: bool = True,
    device: str | None = None,
    fit_bias: bool = True,
    callback: Callable[[int, float], bool] | None = None,
    warm_rows: int | str | None = "auto",
    warm_iters: int = 30,
    on_update: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
) -> Dictionary:
    """Alternating exact minimisation of the canonical objective (module docstring).

    Parameters
    ----------
    source : array ``[N, d]``, path or ActivationSource (loaded into memory).
    K : number of atoms (≥ 1).
    lam : λ > 0 (THEORY §1 convention).
    seed : seed of the initial atoms (K distinct data points, centred and normalised).
    max_iter : bound on outer iterations.
    tol : ``ftol`` — stop when the relative objective decrease of one iteration is below it.
    grad_tol : stop when C2 and C3 residuals (relative to λ) are below it and C1 ≤ code_tol.
    code_tol : KKT tolerance of every code step (relative to λ).
    init : optional initial atoms ``[K, d]`` or a :class:`Dictionary` (then its bias too).
    progress : tqdm bar showing the loss and residuals.
    device : torch device for the computation (default CPU).
    fit_bias : learn the bias (default). ``False`` solves the problem without a bias (THEORY §1:
        ``b = 0`` throughout, C3 is not a condition; the Dictionary has ``has_bias=False``).
    callback : called after every code step with ``(iteration, loss)`` (the loss just appended
        to ``history``); returning True stops there (e.g. a time-to-objective benchmark).
    warm_rows : rows of the inexact warm phase (module docstring). ``"auto"`` (default):
        ``min(N // 2, 40 K)`` when ``N ≥ 10,000`` and no ``init`` is given, else none; an int
        forces that many; None or 0 turns it off.
    warm_iters : bound on the warm phase's iterations.
    on_update : called after every atom (and bias) step, warm phase included, with
        ``(phase, atoms, bias)``, ``phase`` being ``"warm"`` or ``"exact"`` (e.g. to record a
        learning curve; the tensors are the solver's own: copy them to keep them).

    Returns
    -------
    Dictionary
        Unit atoms, bias, λ; ``meta`` holds solver, hyperparameters, ``history`` (loss after
        every code step; non-increasing), ``n_iter``, ``converged``, final ``c1``/``c2``/``c3``.
    """
    K, lam = check_fit_args(K, lam)
    max_iter = check_positive_int(max_iter, "max_iter")
    for name, value in (("tol", tol), ("grad_tol", grad_tol), ("code_tol", code_tol)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 \
                or not np.isfinite(value):
            raise DictoptInputError(f"{name}: must be a finite number ≥ 0, got {value!r}")
    x = load_data(source).to(device or "cpu")
    N = x.shape[0]
    D, b = _start(x, K, init, seed, fit_bias)
    warm = {"rows": 0}
    # "auto" uses a given start as it is.
    rows = 0 if warm_rows == "auto" and init is not None else warm_rows_for(N, K, warm_rows)
    if rows:
        warm_iters = check_positive_int(warm_iters, "warm_iters")
        D, b, warm = warm_phase(x, D, b, lam, rows=rows, max_iter=warm_iters,
                                code_steps=WARM_CODE_STEPS, seed=seed, fit_bias=fit_bias,
                                on_update=on_update, progress=progress)
    D, b, run = _alternate(x, D, b, lam, max_iter=max_iter, tol=tol, grad_tol=grad_tol,
                           code_tol=code_tol, fit_bias=fit_bias, callback=callback,
                           on_update=on_update, progress=progress)
    res = run["residuals"]
    if not run["converged"]:
        log.warning(
            "classical: stopped after %d iterations without meeting the first-order tolerances "
            "(C1 %.2g, C2 %.2g, C3 %.2g relative to λ)", run["n_iter"], res.c1, res.c2, res.c3
        )
    meta = {"solver": "classical", "K": K, "lam": lam, "seed": seed, "max_iter": max_iter,
            "tol": tol, "grad_tol": grad_tol, "code_tol": code_tol, "history": run["history"],
            "n_iter": run["n_iter"], "converged": run["converged"], "c1": res.c1, "c2": res.c2,
            "c3": res.c3, "n_reinit": run["n_reinit"], "fit_bias": fit_bias, "warm_start": warm}
    return Dictionary(atoms=D.cpu(), bias=b.cpu(), lam=lam, meta=meta, has_bias=fit_bias)


def _start(x: torch.Tensor, K: int, init: Any, seed: int,
           fit_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial unit atoms and bias: from ``init`` (atoms or a Dictionary) or data points."""
    if isinstance(init, Dictionary):
        D, b = init.atoms.to(x), init.bias.to(x)
    elif init is not None:
        D = check_matrix(to_tensor(init, "init", dtype=x.dtype), "init",
                         width=x.shape[1]).to(x.device)
        D = D / D.norm(dim=1, keepdim=True)
        b = x.mean(dim=0)
    else:
        D, b = initial_atoms(x.cpu(), K, seed).to(x.device), x.mean(dim=0)
    if not fit_bias:
        b = torch.zeros_like(b)
    if D.shape[0] != K:
        raise DictoptInputError(f"init: has {D.shape[0]} atoms but K = {K}")
    return D, b


def _alternate(
    x: torch.Tensor, D: torch.Tensor, b: torch.Tensor, lam: float, *, max_iter: int,
    tol: float, grad_tol: float, code_tol: float, fit_bias: bool,
    callback: Callable[[int, float], bool] | None,
    on_update: Callable[[str, torch.Tensor, torch.Tensor], None] | None, progress: bool,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The exact phase: exact codes, then an atom step and the bias, until the first-order
    tolerances hold, the objective stalls or ``callback`` says stop."""
    A = None
    history: list[float] = []
    n_reinit, converged, n_iter = 0, False, 0
    bar = tqdm(total=max_iter, desc="classical", disable=not progress, leave=False)
    try:
        for it in range(1, max_iter + 1):
            n_iter = it
            codes = solve_codes(D, x, lam, bias=b, init=A, tol=code_tol)
            A = codes.codes
            res = first_order_residuals(x, D, b, A, lam, codes.kkt_residual)
            history.append(res.loss)
            bar.update(1)
            bar.set_postfix(loss=f"{res.loss:.8g}", c2=f"{res.c2:.1e}", c3=f"{res.c3:.1e}")
            if not fit_bias:
                res = res._replace(c3=0.0)  # no bias: C3 is not a condition
            converged = res.c1 <= code_tol and max(res.c2, res.c3) <= grad_tol
            if converged or (callback is not None and callback(it, res.loss)):
                break
            if len(history) > 1 and history[-2] - history[-1] <= tol * abs(history[-2]):
                break
            D, k_new = atom_step(x, D, b, A, lam)
            n_reinit += k_new
            if fit_bias:
                b = (x - A @ D).mean(dim=0)
            if on_update is not None:
                on_update("exact", D, b)
    finally:
        bar.close()
    return D, b, {"history": history, "n_iter": n_iter, "converged": converged,
                  "n_reinit": n_reinit, "residuals": res}


@register_solver("classical", "alternating exact minimisation (exact lasso codes, sphere BCD)")
def _fit_classical_registered(
    source: Any, *, K: int, lam: float, seed: int = 0, progress: bool = True, **options: Any
) -> Dictionary:
    return fit_classical(source, K=K, lam=lam, seed=seed, progress=progress, **options)


# The command line checks --set keys and kinds against the real signature.
_fit_classical_registered.__wrapped__ = fit_classical  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# scikit-learn.
# --------------------------------------------------------------------------------------------


def fit_sklearn(
    source: Any,
    *,
    K: int,
    lam: float,
    seed: int = 0,
    progress: bool = False,
    minibatch: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-8,
    batch_size: int = 256,
) -> Dictionary:
    """scikit-learn's dictionary learning with nonnegative codes, as a canonical Dictionary.

    sklearn minimises ``½‖X − UV‖²_F + α‖U‖₁,₁`` (a sum over samples) with ``‖V_k‖ ≤ 1``;
    dividing by N gives THEORY §1's loss, so ``α = λ`` (its ``lasso_cd`` coder solves
    ``½‖x − uV‖² + α‖u‖₁`` per sample; a test checks this through C1). sklearn has no bias:
    the data are centred and the bias is the data mean (a fixed, not a learned bias, so C3
    holds only in the mean-of-residuals sense the centring gives). Atoms come back with norm
    ≤ 1; they are normalised (an atom that is used has norm 1 at sklearn's optimum anyway) and
    an atom of norm 0 is replaced by a random unit vector. The Dictionary has no encoder: its
    codes are the optimal lasso codes for the normalised atoms.

    Parameters
    ----------
    source, K, lam, seed:
        Data (loaded into memory), number of atoms, λ of the canonical objective, seed.
    progress:
        scikit-learn's ``verbose``.
    minibatch:
        Use ``MiniBatchDictionaryLearning`` (``max_iter`` = epochs) instead of the batch one.
    max_iter, tol, batch_size:
        Passed to scikit-learn.

    Returns
    -------
    Dictionary
        Canonical (unit atoms, bias = data mean, λ).
    """
    from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning

    K, lam = check_fit_args(K, lam)
    x = load_data(source).numpy()
    mean = x.mean(axis=0)
    common = dict(
        n_components=K, alpha=lam, fit_algorithm="cd", transform_algorithm="lasso_cd",
        transform_alpha=lam, positive_code=True, random_state=seed, max_iter=max_iter,
        verbose=bool(progress),
    )
    if minibatch:
        est = MiniBatchDictionaryLearning(batch_size=batch_size, tol=tol, **common)
    else:
        est = DictionaryLearning(tol=tol, **common)
    est.fit(x - mean)
    V, norms, dead = _unit_components(est.components_, seed)
    meta = {
        "solver": "sklearn", "K": K, "lam": lam, "alpha": lam, "seed": seed,
        "minibatch": bool(minibatch), "max_iter": max_iter, "tol": tol,
        "n_iter": int(est.n_iter_), "atom_norms_min": float(norms.min()),
        "n_dead_replaced": int(dead.sum()), "bias": "data mean (sklearn centres the data)",
    }
    return Dictionary(atoms=V / norms[:, None], bias=mean, lam=lam, meta=meta)


def _unit_components(components: Any, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's atoms with zero atoms replaced by random ones; their norms; which were
    replaced."""
    V = np.array(components, dtype=np.float64)
    norms = np.linalg.norm(V, axis=1)
    dead = norms <= 1e-12
    if dead.any():
        rng = np.random.default_rng(seed)
        V[dead] = rng.standard_normal((int(dead.sum()), V.shape[1]))
        norms[dead] = np.linalg.norm(V[dead], axis=1)
    return V, norms, dead


@register_solver("sklearn", "scikit-learn (MiniBatch)DictionaryLearning, positive codes")
def _fit_sklearn_registered(
    source: Any, *, K: int, lam: float, seed: int = 0, progress: bool = False, **options: Any
) -> Dictionary:
    return fit_sklearn(source, K=K, lam=lam, seed=seed, progress=progress, **options)


_fit_sklearn_registered.__wrapped__ = fit_sklearn  # type: ignore[attr-defined]
