"""The explicit dictionary that attains the wide-limit bound ``L_∞`` (THEORY.md §3).

With ``b`` the minimiser of ``f(b) = (1/N) Σ_n h_λ(‖x_n − b‖)``, ``y_n = x_n − b`` and
``t_n = ‖y_n‖``: every point outside the λ-ball (``t_n > λ``) gets an atom ``u_n = y_n / t_n``
(points on the same ray from ``b`` share one) with code ``t_n − λ``; points inside get no code.
Per point the loss is then ``½λ² + λ(t_n − λ) = h_λ(t_n)`` outside and ``½t_n²`` inside, so
the canonical loss equals ``L_∞`` exactly, and since ``L(D, b, A) ≥ f(b) ≥ L_∞`` for every
dictionary, this is a *global* minimiser of the problem with ``K`` = number of rays atoms.

Its codes are the optimal lasso codes (KKT, THEORY C1): the residual is ``r_n = λ u_n`` outside
(so ``d_k · r_n = λ`` on the owned atom and ``λ u_k·u_n ≤ λ`` elsewhere) and ``r_n = y_n`` with
``‖y_n‖ ≤ λ`` inside. C2 holds because ``Σ_n a_kn r_n`` is a multiple of ``u_k``; C3 is the
stationarity of ``b``; C4 and C5 hold because a global minimum satisfies every necessary
condition (their certificates are exact and keep the loss ≥ ``L_∞``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, check_lambda, to_tensor
from dictopt.wide.bound import WideBound, wide_limit_bound


class LimitDictionary(NamedTuple):
    """The wide-limit dictionary, its codes and the bound it attains."""

    dictionary: Dictionary
    """Atoms = one per data ray outside the λ-ball around ``bias``; bias = the bound's bias."""
    codes: torch.Tensor
    """``[N, K]`` canonical codes: ``max(u_k · y_n − λ, 0)`` on the owned atom, 0 elsewhere."""
    owner: torch.Tensor
    """``[N]`` index of the atom each point uses (−1 inside the λ-ball)."""
    bound: WideBound


def ray_groups(
    directions_MD: torch.Tensor, *, ray_tol: float = 1e-9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedily merge unit vectors into rays: ``(representatives [R, d], label [M])``.

    Vector ``m`` joins the first representative ``r`` with ``u_m · u_r ≥ 1 − ray_tol``.

    Parameters
    ----------
    directions_MD:
        Unit vectors.
    ray_tol:
        Cosine above which a vector joins a ray.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        Representatives ``[R, d]`` and each vector's ray ``[M]``.
    """
    reps: list[torch.Tensor] = []
    label = torch.empty(directions_MD.shape[0], dtype=torch.long)
    rep_mat = directions_MD.new_zeros((0, directions_MD.shape[1]))
    for m in range(directions_MD.shape[0]):
        u = directions_MD[m]
        if rep_mat.shape[0]:
            cos = rep_mat @ u
            best = int(cos.argmax())
            if float(cos[best]) >= 1.0 - ray_tol:
                label[m] = best
                continue
        label[m] = len(reps)
        reps.append(u)
        rep_mat = torch.stack(reps)
    return rep_mat, label


def limit_dictionary(
    x: Any,
    lam: float,
    *,
    bound: WideBound | None = None,
    ray_tol: float = 1e-9,
    method: str = "fast",
) -> LimitDictionary:
    """The explicit dictionary attaining ``L_∞`` (one atom per data ray outside the λ-ball).

    Parameters
    ----------
    x:
        Data ``[N, d]`` (in memory: the dictionary has up to N atoms).
    lam:
        λ > 0.
    bound:
        A precomputed :func:`~dictopt.wide.bound.wide_limit_bound` result for the same data and
        λ (computed with ``method`` otherwise).
    ray_tol:
        Points whose directions from ``b`` have cosine ≥ ``1 − ray_tol`` share an atom.
    method:
        Bound solver when ``bound`` is not given.

    Returns
    -------
    LimitDictionary
        ``dictionary`` (``meta["solver"] = "wide-limit"``), ``codes``, ``owner``, ``bound``.
        With no point outside the λ-ball the optimum is ``b`` alone and there is no atom: this
        raises, since a :class:`Dictionary` needs K ≥ 1.
    """
    lam = check_lambda(lam)
    X = to_tensor(x, "x", dtype=torch.float64)
    if bound is None:
        bound = wide_limit_bound(X, lam, method=method)
    elif abs(bound.lam - lam) > 1e-12 * lam:
        raise DictoptInputError(f"bound: computed for λ = {bound.lam}, not {lam}")
    b = bound.bias.to(torch.float64)
    y = X - b
    t = y.norm(dim=1)
    out = t > lam
    if not bool(out.any()):
        raise DictoptInputError(
            f"lam: every point lies within λ = {lam} of the bias; the wide limit needs no atom "
            f"(L_∞ = {bound.value:.6g} is attained by the bias alone)"
        )
    idx = out.nonzero().flatten()
    atoms, label = ray_groups(y[idx] / t[idx, None], ray_tol=ray_tol)
    owner = torch.full((X.shape[0],), -1, dtype=torch.long)
    owner[idx] = label
    codes = torch.zeros(X.shape[0], atoms.shape[0], dtype=torch.float64)
    # The one-atom lasso code max(u_k·y_n − λ, 0); equal to t_n − λ on the representative ray.
    codes[idx, label] = ((y[idx] * atoms[label]).sum(dim=1) - lam).clamp_min(0.0)
    dictionary = Dictionary(
        atoms=atoms,
        bias=b,
        lam=lam,
        meta={"solver": "wide-limit", "l_inf": bound.value, "n_rays": int(atoms.shape[0])},
    )
    return LimitDictionary(dictionary, codes, owner, bound)
