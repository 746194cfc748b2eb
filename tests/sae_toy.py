"""Small synthetic data for the SAE tests (independent sparse features; a planted hierarchy).

Stand-ins for ``dictopt.data.worlds`` with known ground truth, small enough for CPU tests.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Toy(NamedTuple):
    x: np.ndarray
    """[N, d] data."""
    atoms: np.ndarray
    """[K_true, d] unit rows."""
    codes: np.ndarray
    """[N, K_true] nonnegative true codes."""
    edges: list[tuple[int, int]]
    """(child, parent) pairs (hierarchy only)."""


def unit_rows(rng: np.random.Generator, k: int, d: int) -> np.ndarray:
    a = rng.standard_normal((k, d))
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def independent(
    *, n: int = 8192, d: int = 16, k_true: int = 24, p: float = 0.08, seed: int = 0,
    bias: bool = True,
) -> Toy:
    """Each true feature fires independently with probability ``p``, magnitude U(0.5, 1.5)."""
    rng = np.random.default_rng(seed)
    atoms = unit_rows(rng, k_true, d)
    on = rng.random((n, k_true)) < p
    codes = on * rng.uniform(0.5, 1.5, (n, k_true))
    b = rng.standard_normal(d) * 0.5 if bias else np.zeros(d)
    return Toy(codes @ atoms + b, atoms, codes, [])


def hierarchy(
    *, n: int = 8192, d: int = 24, n_parents: int = 6, children: int = 2, p_parent: float = 0.15,
    seed: int = 0,
) -> Toy:
    """Parents fire independently; when a parent fires exactly one of its children fires too."""
    rng = np.random.default_rng(seed)
    k_true = n_parents * (1 + children)
    atoms = unit_rows(rng, k_true, d)
    codes = np.zeros((n, k_true))
    edges = []
    for p in range(n_parents):
        kids = [n_parents + p * children + c for c in range(children)]
        edges += [(c, p) for c in kids]
        on = rng.random(n) < p_parent
        codes[on, p] = rng.uniform(0.5, 1.5, on.sum())
        pick = rng.integers(0, children, n)
        for c, kid in enumerate(kids):
            mask = on & (pick == c)
            codes[mask, kid] = rng.uniform(0.5, 1.5, mask.sum())
    return Toy(codes @ atoms, atoms, codes, edges)


def recovery(true_KD: np.ndarray, learned_KD: np.ndarray, threshold: float = 0.95) -> float:
    """Fraction of true atoms whose best learned atom has cosine ≥ ``threshold``."""
    t = true_KD / np.linalg.norm(true_KD, axis=1, keepdims=True)
    learned = learned_KD / np.linalg.norm(learned_KD, axis=1, keepdims=True)
    return float(((t @ learned.T).max(axis=1) >= threshold).mean())
