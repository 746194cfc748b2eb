"""Synthetic worlds with a known generating dictionary.

Every world here draws its atoms from the ``atoms`` stream, its codes from the ``codes`` stream
and Gaussian noise of standard deviation ``noise`` per coordinate from the ``noise`` stream, and
builds ``x = codes @ atoms + bias + noise``. Magnitudes of firing features are ``uniform`` on
[0.5, 1.5] or ``exponential`` (1 + Exp(1)); ``bias_norm`` sets the norm of a bias in a uniformly
random direction (0: no bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dictopt.data.worlds._core import (
    MAGNITUDES,
    Streams,
    World,
    assemble,
    choice,
    count,
    magnitudes,
    probability,
    random_bias,
    real,
    register_world,
    unit_rows,
)
from dictopt.validation import DictoptInputError

_COMMON_DOCS = {
    "n": "number of data points N",
    "d": "data dimension",
    "magnitude": "firing magnitudes: 'uniform' on [0.5, 1.5] or 'exponential' (1 + Exp(1))",
    "bias_norm": "norm of the bias (random direction); 0 for no bias",
    "noise": "standard deviation of Gaussian noise per coordinate (0: x is exact)",
}


def _docs(**extra: str) -> dict[str, str]:
    return {**_COMMON_DOCS, **extra}


def _orthogonal_unit(rng: np.random.Generator, to_KD: np.ndarray) -> np.ndarray:
    """For each unit row ``p``, a random unit vector orthogonal to it."""
    g = rng.standard_normal(to_KD.shape)
    g -= (g * to_KD).sum(axis=1, keepdims=True) * to_KD
    return unit_rows(g)


def random_atoms(
    rng: np.random.Generator, K: int, d: int, max_coherence: float = 1.0, *, tries: int = 200
) -> np.ndarray:
    """``K`` uniformly random unit atoms, with ``max |d_i·d_j| ≤ max_coherence`` if below 1.

    Coherence control is greedy rejection sampling (each new atom is drawn until it is within
    ``max_coherence`` of all previous ones); it fails with a clear error when the target is too
    small for ``K`` and ``d`` (the Welch bound ``sqrt((K-d)/(d(K-1)))`` is a hard floor, and
    greedy sampling stays well above it).
    """
    if max_coherence >= 1.0:
        return unit_rows(rng.standard_normal((K, d)))
    atoms = np.empty((K, d))
    batch = 64
    for k in range(K):
        for _ in range(tries):
            cand = unit_rows(rng.standard_normal((batch, d)))
            if k == 0:
                atoms[0] = cand[0]
                break
            ok = np.abs(cand @ atoms[:k].T).max(axis=1) <= max_coherence
            if ok.any():
                atoms[k] = cand[int(np.argmax(ok))]
                break
        else:
            raise DictoptInputError(
                f"max_coherence: could not place atom {k} of {K} in d={d} with coherence "
                f"≤ {max_coherence} after {tries * batch} draws; use a larger value"
            )
    return atoms


# --------------------------------------------------------------------------------------------
# independent
# --------------------------------------------------------------------------------------------


@register_world(
    "independent",
    "K > d independent sparse nonnegative features in superposition (random unit atoms)",
    defaults={
        "n": 5000,
        "d": 64,
        "k": 128,
        "p": 0.05,
        "max_coherence": 1.0,
        "magnitude": "uniform",
        "bias_norm": 0.0,
        "noise": 0.0,
    },
    param_docs=_docs(
        k="number of ground-truth features K_true",
        p="probability that each feature fires, independently per point and feature",
        max_coherence="largest allowed |d_i·d_j| between atoms (1: no control)",
    ),
)
def independent(params: dict[str, Any], rng: Streams) -> World:
    """Each of ``k`` features fires independently with probability ``p`` on each point.

    No edges, no groups. Atoms are uniformly random unit vectors (optionally with bounded
    coherence). With ``k > d`` the features are in superposition.
    """
    n, d, k = count(params, "n"), count(params, "d"), count(params, "k")
    p = probability(params, "p")
    mu = real(params, "max_coherence", low=0.0, high=1.0, low_open=True)
    kind = choice(params, "magnitude", MAGNITUDES)
    bias_norm = real(params, "bias_norm", low=0.0)
    noise = real(params, "noise", low=0.0)

    atoms = random_atoms(rng.atoms, k, d, mu)
    bias = random_bias(rng.atoms, d, bias_norm)
    active = rng.codes.random((n, k)) < p
    codes = np.where(active, magnitudes(rng.codes, (n, k), kind), 0.0)
    return assemble(atoms, codes, bias, noise, rng.noise)


# --------------------------------------------------------------------------------------------
# hierarchy
# --------------------------------------------------------------------------------------------


@register_world(
    "hierarchy",
    "trees of depth >= 2: roots fire independently, at most one child fires with its parent",
    defaults={
        "n": 5000,
        "d": 64,
        "n_roots": 8,
        "branching": 3,
        "depth": 2,
        "p_root": 0.1,
        "p_child": 0.8,
        "child_corr": 0.0,
        "magnitude": "uniform",
        "bias_norm": 0.0,
        "noise": 0.0,
    },
    param_docs=_docs(
        n_roots="number of trees (top-level features)",
        branching="children per non-leaf feature",
        depth="levels per tree (2: parents and children; 3: with grandchildren)",
        p_root="probability that a root fires, independently per point and root",
        p_child="probability that one child fires given its parent fires (the child is "
        "chosen uniformly among the siblings)",
        child_corr="cosine between each child atom and its parent atom (exact)",
    ),
)
def hierarchy(params: dict[str, Any], rng: Streams) -> World:
    """Trees of features: children fire only with their parent, siblings are exclusive.

    Atoms are numbered level by level: the ``n_roots`` roots first, then their children (the
    ``branching`` children of root 0, then those of root 1, ...), then grandchildren.
    ``edges`` holds every ``(child, parent)`` pair; ``groups`` holds each set of siblings
    (mutually exclusive). Roots are uniformly random unit atoms; each child atom is
    ``c·parent + sqrt(1 - c²)·w`` with ``w`` a random unit vector orthogonal to the parent, so
    its cosine with the parent is exactly ``c = child_corr``.

    For the pair (i = child, j = parent) the child's support lies inside the parent's, so
    ``H_ij = max{a_child : parent inactive} = 0``: a strict hierarchy, which violates THEORY C5.
    """
    n, d = count(params, "n"), count(params, "d", minimum=2)
    R, b = count(params, "n_roots"), count(params, "branching")
    depth = count(params, "depth", minimum=2)
    p_root, p_child = probability(params, "p_root"), probability(params, "p_child")
    c = real(params, "child_corr", low=-1.0, high=1.0, low_open=True, high_open=True)
    kind = choice(params, "magnitude", MAGNITUDES)
    bias_norm = real(params, "bias_norm", low=0.0)
    noise = real(params, "noise", low=0.0)

    sizes = [R * b**level for level in range(depth)]
    K = sum(sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    atoms = np.empty((K, d))
    atoms[:R] = unit_rows(rng.atoms.standard_normal((R, d)))
    edges: list[tuple[int, int]] = []
    groups: list[list[int]] = []
    for level in range(1, depth):
        lo, hi = int(offsets[level]), int(offsets[level + 1])
        parents = int(offsets[level - 1]) + np.arange(hi - lo) // b
        atoms[lo:hi] = c * atoms[parents] + np.sqrt(1 - c * c) * _orthogonal_unit(
            rng.atoms, atoms[parents]
        )
        edges += [(lo + j, int(parents[j])) for j in range(hi - lo)]
        groups += [list(range(s, s + b)) for s in range(lo, hi, b)]
    bias = random_bias(rng.atoms, d, bias_norm)

    active = np.zeros((n, K), dtype=bool)
    active[:, :R] = rng.codes.random((n, R)) < p_root
    rows = np.arange(n)[:, None]
    for level in range(1, depth):
        plo, phi = int(offsets[level - 1]), int(offsets[level])
        m = phi - plo
        u = rng.codes.random((n, m))
        fires = active[:, plo:phi] & (u < p_child)
        # which child fires: u is uniform on [0, p_child) given it fires.
        scaled = np.divide(u, p_child, out=np.zeros_like(u), where=fires)
        which = np.minimum((scaled * b).astype(np.int64), b - 1)
        child = int(offsets[level]) + np.arange(m)[None, :] * b + which
        r, col = np.nonzero(fires)
        active[rows[r, 0], child[r, col]] = True
    codes = np.where(active, magnitudes(rng.codes, (n, K), kind), 0.0)
    return assemble(atoms, codes, bias, noise, rng.noise, edges=edges, groups=groups)
