"""Per-row loss changes ``δ_n(t) = ℓ_n(M_t) − ℓ_n`` of every certificate at several steps
(THEORY §5), and the move that re-codes the rows a hierarchy rotation would make negative.

``ℓ_n = ½‖r_n‖² + λ Σ_k a_kn`` is one row's share of the canonical loss. Every move of
:mod:`dictopt.check.moves` changes the reconstruction of a row by a few atoms, so ``δ_n`` is a
closed form in the row's codes and a few projections ``r_n·v``: this module evaluates it for
a whole chunk and a grid of steps ``[G]`` at once (``[n, G]``), in float64. Codes that a finite
step would make negative on rows the certificate was not fitted on are clipped at 0 (the
reconstruction change this causes is part of ``δ_n``); :class:`RecodeToward` also re-solves
the rotated atom's code on those rows (one exact coordinate minimisation), so a
near-hierarchy's certificate pays for its exception rows instead of being blocked by them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dictopt.check.moves import (
    AlwaysOnShift,
    BiasShift,
    Changes,
    ChunkState,
    CodeStep,
    Move,
    Rotate,
    Scale,
    Toward,
)

F64 = torch.float64


@dataclass
class RecodeToward(Toward):
    """A C5 pair rotation (:class:`Toward` with one ``i = J[0]`` rotated toward ``k = j``)
    that stays valid on every row: where the new code of ``j`` would be negative it is set to
    0 and the rotated atom's code is re-solved on that row,
    ``a_i ← max(a_i + r'·d_i' − λ, 0)`` (the exact minimiser along that coordinate).

    On rows where ``a_j − s a_i + t κ ≥ 0`` it is the reconstruction-preserving certificate of
    THEORY C5; elsewhere its loss change is measured, not assumed (THEORY §5,
    near-hierarchies).
    """

    def changes(self, chunk: ChunkState) -> Changes:
        ch = super().changes(chunk)
        lam = chunk.lam
        new_i, new_k = ch.codes[:, 0], ch.codes[:, 1]
        e = torch.clamp(-new_k, min=0)
        d_i, d_k = ch.atoms[0], ch.atoms[1]
        # residual after the (reconstruction-preserving) move and the clip: r − e d_k
        r1 = chunk.r - e[:, None] * d_k
        di = torch.where(e > 0, torch.clamp(r1 @ d_i - lam, min=-new_i), torch.zeros_like(e))
        codes = torch.stack([new_i + di, new_k + e], 1)
        return Changes(ch.idx, codes, ch.atoms, ch.dbias)


def row_deltas(move: Move, state: ChunkState, steps: torch.Tensor) -> torch.Tensor:
    """``[n, G]`` per-row loss change of ``move`` at each step of ``steps [G]``.

    Parameters
    ----------
    move:
        Any certificate of :mod:`dictopt.check.moves` (its own ``step`` is ignored).
    state:
        The chunk at the current point (data, codes, atoms, bias, residuals, λ).
    steps:
        ``[G]`` the steps ``t`` to evaluate.

    Returns
    -------
    torch.Tensor
        float64 ``[n, G]``.
    """
    t = steps.to(F64)[None, :]
    lam = state.lam
    r = state.r.to(F64)
    atoms = state.atoms.to(F64)
    codes = state.codes
    if isinstance(move, CodeStep):
        g = (r @ atoms[move.k])[:, None]
        a = codes[:, move.k].to(F64)[:, None]
        return _code_change(torch.maximum(t * (g - lam), -a), g, lam)
    if isinstance(move, Scale):
        g = (r @ atoms[move.k])[:, None]
        a = codes[:, move.k].to(F64)[:, None]
        return _code_change(torch.maximum(t * a, -a), g, lam)
    if isinstance(move, Rotate):
        d = atoms[move.k]
        u = move.u.to(F64)
        new = (d[None, :] + t.T * u[None, :]) / torch.sqrt(1 + t.T**2)  # [G, d]
        diff = new - d[None, :]
        a = codes[:, move.k].to(F64)[:, None]
        return -a * (r @ diff.T) + 0.5 * a * a * (diff * diff).sum(1)[None, :]
    if isinstance(move, BiasShift):
        rb = move.r_mean.to(F64)
        return -t * (r @ rb)[:, None] + 0.5 * t * t * float(rb @ rb)
    if isinstance(move, AlwaysOnShift):
        g = (r @ atoms[move.k])[:, None]
        a = codes[:, move.k].to(F64)[:, None]
        s = t * move.m
        e = torch.clamp(s - a, min=0)
        return -e * g + 0.5 * e * e - lam * torch.minimum(s, a)
    if isinstance(move, Toward):
        return _toward_deltas(move, r, atoms, codes, lam, t)
    raise TypeError(f"no per-row loss change for {type(move).__name__}")


def _code_change(da: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """One code changes by ``da`` along a unit atom with ``g = r·d``."""
    return -da * g + 0.5 * da * da + lam * da


def _toward_deltas(
    move: Toward, r: torch.Tensor, atoms: torch.Tensor, codes: torch.Tensor, lam: float,
    t: torch.Tensor,
) -> torch.Tensor:
    """:class:`Toward` (clipped) and :class:`RecodeToward` at the steps ``t [1, G]``."""
    J, k = move.J.tolist(), move.k
    q = move.q.to(F64)
    d_k = atoms[k]
    aJ = codes[:, J].to(F64)  # [n, C]
    a_k = codes[:, k].to(F64)[:, None]
    g_k = (r @ d_k)[:, None]
    s = t.T * q[None, :]  # [G, C]
    v = atoms[J][None, :, :] + s[:, :, None] * d_k[None, None, :]  # [G, C, d]
    nrm = v.norm(dim=2)  # [G, C]
    l1_J = aJ @ (nrm - 1).T  # [n, G]
    new_k = a_k - aJ @ s.T + t * move.kappa
    e = torch.clamp(-new_k, min=0)
    delta = -e * g_k + 0.5 * e * e + lam * (l1_J + new_k + e - a_k)
    if isinstance(move, RecodeToward):
        # re-solve the rotated atom's code where the clip acted (one coordinate, exact)
        unit = v[:, 0, :] / torch.where(nrm[:, :1] > 0, nrm[:, :1], torch.ones_like(nrm[:, :1]))
        rho = r @ unit.T - e * (unit @ d_k)[None, :]  # r'·d_i' on each row, [n, G]
        a_new = aJ[:, :1] * nrm[:, 0][None, :]
        di = torch.where(e > 0, torch.clamp(rho - lam, min=-a_new), torch.zeros_like(e))
        delta = delta - di * rho + 0.5 * di * di + lam * di
    return delta
