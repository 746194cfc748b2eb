"""Metrics comparing a learned dictionary with ground truth, each defined once.

Explained variance lives in :mod:`dictopt.problem` (:func:`~dictopt.problem.explained_variance`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from dictopt.validation import DictoptInputError, check_matrix, to_tensor


class AtomRecovery(NamedTuple):
    """How well learned atoms recover true atoms (cosine similarity of rows)."""

    fraction: float
    """Fraction of true atoms whose best-matching learned atom has cosine ≥ ``threshold``."""
    best_cosine: torch.Tensor
    """``[K_true]`` best cosine of each true atom with any learned atom."""
    best_match: torch.Tensor
    """``[K_true]`` index of that learned atom."""
    split_counts: torch.Tensor
    """``[K_true]`` number of learned atoms with cosine ≥ ``threshold`` to the true atom
    (> 1 means the feature is split across several atoms)."""
    threshold: float


def cosine_matrix(a_KD: Any, b_JD: Any) -> torch.Tensor:
    """``[K, J]`` cosine similarities between the rows of two matrices (zero rows → error)."""
    a = check_matrix(to_tensor(a_KD, "first atoms", dtype=torch.float64), "first atoms")
    b = check_matrix(
        to_tensor(b_JD, "second atoms", dtype=torch.float64), "second atoms", width=a.shape[1]
    )
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    if bool((na == 0).any()) or bool((nb == 0).any()):
        raise DictoptInputError("cosine_matrix: zero rows have no direction")
    return (a / na) @ (b / nb).T


def atom_recovery(learned_KD: Any, true_JD: Any, threshold: float = 0.99) -> AtomRecovery:
    """Match every true atom to its best learned atom by cosine (signs matter: atoms are
    directions of nonnegative codes)."""
    if not -1.0 <= threshold <= 1.0:
        raise DictoptInputError(f"threshold: must lie in [-1, 1], got {threshold}")
    cos_KJ = cosine_matrix(learned_KD, true_JD)
    best, idx = cos_KJ.max(dim=0)
    return AtomRecovery(
        fraction=float((best >= threshold).double().mean()),
        best_cosine=best,
        best_match=idx,
        split_counts=(cos_KJ >= threshold).sum(dim=0),
        threshold=threshold,
    )
