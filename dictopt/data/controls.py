"""Negative controls: a known optimum perturbed in a known way."""

from __future__ import annotations

import math

import torch


def rotate_atom(atoms_KD: torch.Tensor, k: int, angle: float, *, seed: int = 1) -> torch.Tensor:
    """A copy of the atoms with atom ``k`` rotated by ``angle`` radians.

    The rotation is in the plane of ``d_k`` and a random unit direction orthogonal to it (drawn
    from ``torch.Generator().manual_seed(seed)``), so the rotated atom keeps unit norm:
    ``d_k ← cos(angle) d_k + sin(angle) u``. At an optimum this breaks C2 for atom ``k`` by a
    known amount (the checker's rotated-atom control).

    Parameters
    ----------
    atoms_KD:
        Unit-norm atoms ``[K, d]``.
    k:
        The atom to rotate.
    angle:
        The angle in radians.
    seed:
        Seed of the direction ``u``.

    Returns
    -------
    torch.Tensor
        The atoms ``[K, d]``, a new tensor; only row ``k`` differs.
    """
    atoms = atoms_KD.clone()
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(atoms.shape[1], generator=g, dtype=atoms.dtype)
    u -= (u @ atoms[k]) * atoms[k]
    u /= u.norm()
    atoms[k] = math.cos(angle) * atoms[k] + math.sin(angle) * u
    return atoms
