"""The joint hull condition C5′ (THEORY §2): all atoms rotate toward one atom ``k`` at once.

A local minimum with a bias needs ``v_k = ((1 − c_jk) ā_j)_{j≠k}`` in the convex hull of the
code vectors ``(a_jn)_{j≠k}`` of the points where ``k`` is inactive. We solve the ℓ1 distance
LP (HiGHS)::

    min Σ (s⁺ + s⁻)   s.t.  P w + s⁺ − s⁻ = v,  1ᵀ w = 1,  w, s± ≥ 0

whose dual is ``max q·v − κ  s.t.  q·a_n ≤ κ (n inactive for k), |q| ≤ 1``: the equality
marginals are ``(q, −κ)``. A positive distance gives a separating ``q``, the direction of
the :class:`~dictopt.check.moves.Toward` move with first-order decrease ``λ t (q·v − κ)``;
``κ`` is recomputed exactly as ``max_n q·a_n`` over the inactive points.

*Restriction for large K.* With ``K > full_k`` the coordinates are restricted to
``J_k`` = the atoms that are active together with ``k`` on at least one point (they share
support). This is a projection, so a failure is a genuine, certified violation (the move only
rotates atoms of ``J_k``), but membership of the projection does not prove membership of
the full vector: a pass on the restricted problem is "no joint certificate found".
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linprog

from dictopt.check.moves import Toward, best_toward_step
from dictopt.check.report import Violation
from dictopt.check.tolerances import Tolerances

F64 = torch.float64


def hull_distance(v: np.ndarray, P: np.ndarray) -> tuple[float, np.ndarray, float]:
    """ℓ1 distance of ``v [J]`` to ``conv(rows of P [n, J])`` and the dual ``(q, κ)``."""
    n, J = P.shape
    c = np.concatenate([np.zeros(n), np.ones(2 * J)])
    A = np.zeros((J + 1, n + 2 * J))
    A[:J, :n] = P.T
    A[:J, n : n + J] = np.eye(J)
    A[:J, n + J :] = -np.eye(J)
    A[J, :n] = 1.0
    b = np.concatenate([v, [1.0]])
    res = linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    if res.status != 0:
        raise RuntimeError(f"hull LP failed: {res.message}")
    y = res.eqlin.marginals
    return float(res.fun), y[:J], float(-y[J])


def joint_hull(
    codes_NK: torch.Tensor,
    atoms_KD: torch.Tensor,
    mean_a: torch.Tensor,
    lam: float,
    tau: float,
    tol: Tolerances,
    *,
    full_k: int = 64,
    atoms: list[int] | None = None,
) -> list[Violation]:
    """Joint hull violations (with certificates) for the atoms ``atoms`` (default all)."""
    A = codes_NK.to(F64)
    D = atoms_KD.to(F64)
    K = A.shape[1]
    gram = D @ D.t()
    floor = tol.floor_rel * float(mean_a.max())
    out: list[Violation] = []
    for k in atoms if atoms is not None else range(K):
        off = A[:, k] <= tau
        if not bool(off.any()):
            continue  # atom k is always on: that is C4, not a hull question
        if K > full_k:
            on = A[~off] > tau
            J = (on.any(0)).nonzero().flatten()
            J = J[J != k]
            restricted = True
        else:
            J = torch.tensor([j for j in range(K) if j != k], dtype=torch.long)
            restricted = False
        if J.numel() == 0:
            continue
        v = ((1 - gram[J, k]) * mean_a[J]).numpy()
        P = np.unique(A[off][:, J].numpy(), axis=0)
        dist, q, _ = hull_distance(v, P)
        if dist <= tol.hull_rel * (1 + np.abs(v).sum()):
            continue
        qt = torch.from_numpy(q)
        kappa = float((A[off][:, J] @ qt).max())
        gap = float(qt @ torch.from_numpy(v)) - kappa
        if gap <= tol.pair_rel * float(mean_a.max()) + floor:
            continue
        # largest step keeping a_k ≥ 0 where k is active: a_k − t (q·a − κ) ≥ 0
        s = A[~off][:, J] @ qt - kappa
        pos = s > 0
        t_max = float((A[~off][pos, k] / s[pos]).min()) if bool(pos.any()) else 1e3
        move = Toward(0.0, k=k, J=J, q=qt, kappa=kappa)
        t = best_toward_step(move, D, mean_a, lam, t_max)
        out.append(Violation(
            "hull", None, k, "joint", lam * gap, t, lam * gap * t,
            -move.model_delta(D, mean_a, lam) if t > 0 else 0.0,
            detail={"distance": dist, "gap": gap, "atoms": int(J.numel()),
                    "restricted": restricted, "t_max": t_max},
            move=move,
        ))
    return out
