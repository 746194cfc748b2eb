"""Conditions C1–C4 from pass-1 statistics, and the C5 pair classification (THEORY §2)."""

from __future__ import annotations

import math

import torch

from dictopt.check.blocks import DENSE_ELEMENTS
from dictopt.check.moves import AlwaysOnShift, BiasShift, CodeStep, Rotate, Scale
from dictopt.check.report import Violation
from dictopt.check.stats import PassOneStats
from dictopt.check.tolerances import Tolerances

F64 = torch.float64


def atom_floor(mean_a: torch.Tensor, tol: Tolerances) -> float:
    """The absolute floor of relative tolerances (so dead atoms do not divide by zero).

    Parameters
    ----------
    mean_a:
        ``[K]`` mean codes ``ā``.
    tol:
        Tolerances (``floor_rel``).

    Returns
    -------
    float
        ``floor_rel × max_k ā_k`` (1e-300 at least).
    """
    return tol.floor_rel * float(mean_a.max()) if mean_a.numel() else 0.0


def c2_model(G_k: torch.Tensor, d_k: torch.Tensor, q2: float, u: torch.Tensor, t: float) -> float:
    """Exact ΔL of :class:`Rotate` with codes fixed: ``−G·δ + ½ (1/N Σ a²) ‖δ‖²``.

    Parameters
    ----------
    G_k:
        ``[d]`` the atom's gradient ``(1/N) Σ_n a_kn r_n``.
    d_k:
        ``[d]`` the atom.
    q2:
        ``(1/N) Σ_n a_kn²``.
    u:
        ``[d]`` unit rotation direction ⊥ ``d_k``.
    t:
        The step.

    Returns
    -------
    float
        The exact loss change (negative: a decrease).
    """
    delta = (d_k + t * u) / math.sqrt(1 + t * t) - d_k
    return float(-(G_k @ delta) + 0.5 * q2 * (delta @ delta))


def atom_conditions(
    st: PassOneStats, atoms_KD: torch.Tensor, lam: float, tau: float, has_bias: bool,
    tol: Tolerances,
) -> tuple[list[Violation], dict[str, torch.Tensor]]:
    """C1, C2 (tangential and radial), C3, C4. Returns violations and per-atom columns.

    Parameters
    ----------
    st:
        Pass 1's statistics.
    atoms_KD:
        The unit atoms.
    lam:
        λ.
    tau:
        Inactivity threshold.
    has_bias:
        Whether the bias is free (C3, C4 need it).
    tol:
        Tolerances.

    Returns
    -------
    tuple[list[Violation], dict[str, torch.Tensor]]
        The violations with certificates and ``[K]`` columns ``kkt_violation``,
        ``stationarity_tangential``, ``stationarity_radial``.
    """
    n = st.n
    abar = st.mean_a
    q2 = st.sum_a2 / n
    floor = atom_floor(abar, tol)
    out: list[Violation] = []

    # C1: KKT of the nonnegative lasso, per atom (THEORY C1).
    kkt_rel = st.kkt_max / lam
    for k in (kkt_rel > tol.kkt_rel).nonzero().flatten().tolist():
        slope = float(st.c1_slope[k]) / n
        out.append(Violation(
            "C1", k, None, "code_kkt", slope, 1.0, slope, float(st.c1_gain[k]) / n,
            detail={"kkt_violation": float(kkt_rel[k])}, move=CodeStep(1.0, k=k),
        ))

    # C2: G_k = λ ā_k d_k, split into tangential and radial parts.
    tol2 = tol.stat_rel * lam * torch.clamp(abar, min=floor)
    radial, tang, directions = _c2_split(st, atoms_KD, tol2)
    rad = radial - lam * abar
    for k, u in directions:
        # d' = cos φ d + sin φ u gives ΔL(φ) = γ'(1 − cos φ) − p sin φ with p = ‖perp‖,
        # γ' = d·G + (1/N)Σa²; minimised at φ* = atan2(p, γ') (capped below π/2, t = tan φ).
        p, gp = float(tang[k]), float(radial[k] + q2[k])
        phi = min(math.atan2(p, gp), 1.5)
        t = math.tan(phi)
        out.append(Violation(
            "C2", k, None, "rotation", p, t, t * p, p * math.sin(phi) - gp * (1 - math.cos(phi)),
            detail={"tangential": p}, move=Rotate(t, k=k, u=u),
        ))
    for k in (rad.abs() > tol2).nonzero().flatten().tolist():
        rho, qk = float(rad[k]), float(q2[k])
        s = max(rho / qk, -1.0) if qk > 0 else 0.0
        out.append(Violation(
            # slope = dΔ/ds = ρ, signed like the step s: slope·s > 0 is the first-order decrease
            "C2", k, None, "code_scale", rho, s, s * rho, s * rho - 0.5 * s * s * qk,
            detail={"radial": rho}, move=Scale(s, k=k),
        ))

    if has_bias:  # C3: mean residual; C4: always-on atoms (both need a free bias)
        out += _bias_conditions(st, lam, tau, abar, tol)
    cols = {"kkt_violation": kkt_rel, "stationarity_tangential": tang, "stationarity_radial": rad}
    return out, cols


def _c2_split(
    st: PassOneStats, atoms_KD: torch.Tensor, tol2: torch.Tensor,
    budget: int = DENSE_ELEMENTS // 4,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """C2's split of each gradient ``G_k`` into its radial and tangential parts, a block of
    atoms at a time.

    The whole split at once formed five ``[K, d]`` float64 arrays (the atoms, ``G``, ``G·D``,
    ``radial·D``, the perpendicular parts: 4.5 GiB at K = 65,536, d = 2,304, the check's peak
    there once the planner's gathers were blocked; issue #17). Every quantity is per atom (one
    row's elementwise operations and reductions), so blocks of rows give the same bits.

    Parameters
    ----------
    st:
        Pass 1's statistics (``G_sum``, ``n``).
    atoms_KD:
        The unit atoms.
    tol2:
        ``[K]`` the tangential tolerance.
    budget:
        Largest number of elements of one ``[block, d]`` temporary (five are alive at once:
        32 MiB of float64 each by default).

    Returns
    -------
    tuple
        ``radial = G_k·d_k`` ``[K]``, ``tang = ‖G_k − radial_k d_k‖`` ``[K]`` and, for each
        atom with ``tang > tol2`` in ascending order, ``(k, u_k)`` with ``u_k`` the unit
        perpendicular part (the rotation's direction).
    """
    K, d = atoms_KD.shape
    step = max(1, budget // max(d, 1))
    radial = torch.empty(K, dtype=F64, device=atoms_KD.device)
    tang = torch.empty(K, dtype=F64, device=atoms_KD.device)
    directions: list[tuple[int, torch.Tensor]] = []
    for lo in range(0, K, step):
        hi = min(K, lo + step)
        G = st.G_sum[lo:hi] / st.n  # as ``st.G`` gives these rows
        D = atoms_KD[lo:hi].to(F64)
        r = (G * D).sum(1)
        perp = G - r[:, None] * D
        t = perp.norm(dim=1)
        radial[lo:hi], tang[lo:hi] = r, t
        for k in (t > tol2[lo:hi]).nonzero().flatten().tolist():
            directions.append((lo + k, perp[k] / t[k]))
    return radial, tang, directions


def _bias_conditions(
    st: PassOneStats, lam: float, tau: float, abar: torch.Tensor, tol: Tolerances
) -> list[Violation]:
    """C3 (mean residual) and C4 (always-on atoms), with their certificates."""
    out: list[Violation] = []
    rbar = st.r_mean
    nr = float(rbar.norm())
    if nr > tol.stat_rel * lam:
        # b + t r̄: ΔL(t) = (−t + t²/2) ‖r̄‖², so the slope per unit t is ‖r̄‖²
        out.append(Violation(
            "C3", None, None, "bias", nr * nr, 1.0, nr * nr, 0.5 * nr * nr,
            detail={"bias_residual": nr}, move=BiasShift(1.0, r_mean=rbar),
        ))
    min_a = st.min_a
    on = min_a > torch.clamp(tol.pair_rel * abar, min=tau)
    for k in on.nonzero().flatten().tolist():
        m = float(min_a[k])
        out.append(Violation(
            "C4", k, None, "always_on", lam * m, 1.0, lam * m, lam * m,
            detail={"min_code": m}, move=AlwaysOnShift(1.0, k=k, m=m),
        ))
    return out
