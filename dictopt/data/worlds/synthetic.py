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

_BLOCK_ROWS = 8192

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
    # Row blocks of fixed size keep temporaries small for large n (codes are the only [n, k]
    # array); magnitudes are drawn only for the active entries.
    codes = np.zeros((n, k))
    for lo in range(0, n, _BLOCK_ROWS):
        block = codes[lo : lo + _BLOCK_ROWS]
        active = rng.codes.random(block.shape) < p
        block[active] = magnitudes(rng.codes, (int(active.sum()),), kind)
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


# --------------------------------------------------------------------------------------------
# tegum
# --------------------------------------------------------------------------------------------


def _regular_simplex(g: int) -> np.ndarray:
    """``g`` unit vectors in ``R^(g-1)`` with pairwise cosine ``-1/(g-1)`` (g ≥ 2)."""
    centred = np.eye(g) - 1.0 / g  # vertices of the standard simplex, centred
    # an orthonormal basis of the sum-zero subspace: the first g-1 left singular vectors
    basis = np.linalg.svd(centred.T)[0][:, : g - 1]
    return unit_rows(centred @ basis)


def tegum_frame(g: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``g`` unit vectors spread in ``R^m`` (rows ``[g, m]``).

    ``g ≤ m``: orthonormal (no packing needed). ``g = m + 1``: a regular simplex. ``m = 2``: a
    regular ``g``-gon. Otherwise (``m ≥ 3``, ``g > m + 1``): uniformly random unit vectors.
    """
    if m == 1 and g > 2:
        raise DictoptInputError(
            f"subspace_dim: a 1-dimensional subspace holds only 2 distinct unit atoms, "
            f"got group_size={g}"
        )
    if g <= m:
        return np.eye(m)[:g]
    if g == m + 1:
        return _regular_simplex(g)
    if m == 2:
        angles = 2 * np.pi * np.arange(g) / g
        return np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return unit_rows(rng.standard_normal((g, m)))


@register_world(
    "tegum",
    "groups of mutually exclusive features packed in their own orthogonal low-dim subspaces",
    defaults={
        "n": 5000,
        "d": 16,
        "n_groups": 4,
        "group_size": 3,
        "subspace_dim": 2,
        "p": 0.3,
        "magnitude": "uniform",
        "bias_norm": 0.0,
        "noise": 0.0,
    },
    param_docs=_docs(
        n_groups="number of groups (needs n_groups * subspace_dim ≤ d)",
        group_size="features per group (g)",
        subspace_dim="dimension m of each group's subspace (m < g packs the features)",
        p="probability that a group fires (then exactly one member, chosen uniformly)",
    ),
)
def tegum(params: dict[str, Any], rng: Streams) -> World:
    """Tegum products of small frames (Elhage et al., *Toy Models of Superposition*).

    Group ``i`` owns the ``m``-dimensional subspace spanned by columns ``i·m … i·m + m - 1`` of a
    random orthogonal matrix; the subspaces of different groups are mutually orthogonal. Its
    ``g`` atoms (numbered ``i·g … i·g + g - 1``; ``groups[i]`` lists them) are the frame of
    :func:`tegum_frame` placed in that subspace: a regular simplex for ``g = m + 1``, a regular
    polygon for ``m = 2``. On each point each group fires independently with probability
    ``p``, and then exactly one of its members fires: members are mutually exclusive.
    """
    n, d = count(params, "n"), count(params, "d")
    G, g, m = count(params, "n_groups"), count(params, "group_size"), count(params, "subspace_dim")
    p = probability(params, "p")
    kind = choice(params, "magnitude", MAGNITUDES)
    bias_norm = real(params, "bias_norm", low=0.0)
    noise = real(params, "noise", low=0.0)
    if G * m > d:
        raise DictoptInputError(
            f"d: {G} groups of subspace_dim {m} need d ≥ {G * m}, got d = {d}"
        )

    Q = np.linalg.qr(rng.atoms.standard_normal((d, d)))[0]
    atoms = np.concatenate(
        [tegum_frame(g, m, rng.atoms) @ Q[:, i * m : (i + 1) * m].T for i in range(G)]
    )
    atoms = unit_rows(atoms)
    bias = random_bias(rng.atoms, d, bias_norm)

    fires = rng.codes.random((n, G)) < p
    member = rng.codes.integers(0, g, size=(n, G))
    r, grp = np.nonzero(fires)
    active = np.zeros((n, G * g), dtype=bool)
    active[r, grp * g + member[r, grp]] = True
    codes = np.where(active, magnitudes(rng.codes, (n, G * g), kind), 0.0)
    groups = [list(range(i * g, (i + 1) * g)) for i in range(G)]
    return assemble(atoms, codes, bias, noise, rng.noise, groups=groups)


# --------------------------------------------------------------------------------------------
# correlated
# --------------------------------------------------------------------------------------------


@register_world(
    "correlated",
    "pairs of co-firing features with amplitudes (u, u + v): two bases fit the data exactly",
    defaults={
        "n": 5000,
        "d": 32,
        "n_pairs": 8,
        "p": 0.2,
        "pair_cos": 0.0,
        "v_max": 1.0,
        "magnitude": "uniform",
        "bias_norm": 0.0,
        "noise": 0.0,
    },
    param_docs=_docs(
        n_pairs="number of correlated pairs (K_true = 2 * n_pairs)",
        p="probability that a pair fires, independently per point and pair",
        pair_cos="cosine between the two atoms of a pair, in (-1, 1)",
        v_max="the second amplitude exceeds the first by v ~ Uniform[0, v_max]",
    ),
)
def correlated(params: dict[str, Any], rng: Streams) -> World:
    """Pairs of features whose amplitudes are correlated, so the same data has two bases.

    Pair ``i`` has atoms ``e1 = atoms[2i]`` and ``e2 = atoms[2i + 1]`` (cosine ``pair_cos``;
    ``groups[i] = [2i, 2i + 1]``). When the pair fires (probability ``p``) both atoms fire, with
    codes ``a1 = u`` and ``a2 = u + v``, ``u`` from ``magnitude`` and ``v ~ U[0, v_max]``
    independent. The pair contributes

        u e1 + (u + v) e2  =  (u ‖e1 + e2‖) f1  +  v f2,   f1 = (e1 + e2) / ‖e1 + e2‖,  f2 = e2,

    so the alternative basis ``(f1, f2)`` with nonnegative codes ``(u ‖e1 + e2‖, v)``
    reproduces ``x`` exactly (``extras["alt_atoms"]``, ``extras["alt_codes"]``, same
    indexing). Its L1 cost ``u sqrt(2 + 2 pair_cos) + v`` is below the truth's ``2u + v``
    whenever ``pair_cos < 1``: the generating basis is not the sparsest one. Any pair of atoms
    whose nonnegative cone contains ``f1`` and ``f2`` also reproduces the data.
    """
    n, d, P = count(params, "n"), count(params, "d", minimum=2), count(params, "n_pairs")
    p = probability(params, "p")
    c = real(params, "pair_cos", low=-1.0, high=1.0, low_open=True, high_open=True)
    v_max = real(params, "v_max", low=0.0)
    kind = choice(params, "magnitude", MAGNITUDES)
    bias_norm = real(params, "bias_norm", low=0.0)
    noise = real(params, "noise", low=0.0)

    e1 = unit_rows(rng.atoms.standard_normal((P, d)))
    e2 = c * e1 + np.sqrt(1 - c * c) * _orthogonal_unit(rng.atoms, e1)
    atoms = np.empty((2 * P, d))
    atoms[0::2], atoms[1::2] = e1, e2
    bias = random_bias(rng.atoms, d, bias_norm)

    fires = rng.codes.random((n, P)) < p
    u = np.where(fires, magnitudes(rng.codes, (n, P), kind), 0.0)
    v = np.where(fires, rng.codes.uniform(0.0, v_max, size=(n, P)), 0.0)
    codes = np.empty((n, 2 * P))
    codes[:, 0::2], codes[:, 1::2] = u, u + v

    s = np.linalg.norm(e1 + e2, axis=1)
    alt_atoms = np.empty_like(atoms)
    alt_atoms[0::2], alt_atoms[1::2] = (e1 + e2) / s[:, None], e2
    alt_codes = np.empty_like(codes)
    alt_codes[:, 0::2], alt_codes[:, 1::2] = u * s, v
    groups = [[2 * i, 2 * i + 1] for i in range(P)]
    return assemble(
        atoms, codes, bias, noise, rng.noise, groups=groups,
        extras={"alt_atoms": alt_atoms, "alt_codes": alt_codes},
    )


# --------------------------------------------------------------------------------------------
# dense1d
# --------------------------------------------------------------------------------------------


@register_world(
    "dense1d",
    "a dense signed direction (two antipodal atoms around the bias) plus sparse features",
    defaults={
        "n": 5000,
        "d": 16,
        "dense_scale": 1.0,
        "distribution": "gaussian",
        "k_sparse": 4,
        "p": 0.1,
        "magnitude": "uniform",
        "bias_norm": 1.0,
        "noise": 0.0,
    },
    param_docs=_docs(
        dense_scale="spread s of the dense coordinate t",
        distribution="t ~ 'gaussian' N(0, s²) or 'uniform' U[-s, s]",
        k_sparse="number of additional sparse features (0 for none)",
        p="probability that each sparse feature fires",
    ),
)
def dense1d(params: dict[str, Any], rng: Streams) -> World:
    """Every point has a signed coordinate ``t_n`` along one unit direction ``w``.

    Codes must be nonnegative, so the dense direction is the antipodal pair
    ``atoms[0] = +w``, ``atoms[1] = -w`` with codes ``max(t, 0)`` and ``max(-t, 0)``: exactly
    one of them is active on every point with ``t ≠ 0`` (``groups = [[0, 1]]``). This is the
    optimum THEORY C6 predicts for data varying along a line around the bias. Atoms
    ``2 … k_sparse + 1`` are random unit sparse features firing independently with
    probability ``p``.
    """
    n, d = count(params, "n"), count(params, "d")
    s = real(params, "dense_scale", low=0.0, low_open=True)
    dist = choice(params, "distribution", ("gaussian", "uniform"))
    k = count(params, "k_sparse", minimum=0)
    p = probability(params, "p")
    kind = choice(params, "magnitude", MAGNITUDES)
    bias_norm = real(params, "bias_norm", low=0.0)
    noise = real(params, "noise", low=0.0)

    w = unit_rows(rng.atoms.standard_normal((1, d)))
    atoms = np.concatenate([w, -w, unit_rows(rng.atoms.standard_normal((k, d)))])
    bias = random_bias(rng.atoms, d, bias_norm)

    t = s * rng.codes.standard_normal(n) if dist == "gaussian" else rng.codes.uniform(-s, s, n)
    active = rng.codes.random((n, k)) < p
    codes = np.concatenate(
        [
            np.maximum(t, 0.0)[:, None],
            np.maximum(-t, 0.0)[:, None],
            np.where(active, magnitudes(rng.codes, (n, k), kind), 0.0),
        ],
        axis=1,
    )
    return assemble(atoms, codes, bias, noise, rng.noise, groups=[[0, 1]])


# --------------------------------------------------------------------------------------------
# rays
# --------------------------------------------------------------------------------------------


@register_world(
    "rays",
    "every point lies on one of a few rays from the bias: x = b + s u_c, s > 0",
    defaults={
        "n": 5000,
        "d": 16,
        "n_rays": 5,
        "magnitude": "uniform",
        "bias_norm": 0.0,
        "noise": 0.0,
    },
    param_docs=_docs(
        n_rays="number of ray directions (K_true)",
    ),
)
def rays(params: dict[str, Any], rng: Streams) -> World:
    """Data rays: ``x_n = b + s_n u_{c(n)}`` with ``c(n)`` uniform over the rays.

    The atoms are the ray directions (random unit vectors); each point has exactly one active
    code ``s_n > 0`` (from ``magnitude``). ``groups = [[0, …, n_rays - 1]]``: the rays are
    mutually exclusive. With ``K ≥ n_rays`` atoms, the wide-limit bound of THEORY §3 is reached
    when every ray owns an atom.
    """
    n, d, R = count(params, "n"), count(params, "d"), count(params, "n_rays")
    kind = choice(params, "magnitude", MAGNITUDES)
    bias_norm = real(params, "bias_norm", low=0.0)
    noise = real(params, "noise", low=0.0)

    atoms = unit_rows(rng.atoms.standard_normal((R, d)))
    bias = random_bias(rng.atoms, d, bias_norm)
    which = rng.codes.integers(0, R, size=n)
    codes = np.zeros((n, R))
    codes[np.arange(n), which] = magnitudes(rng.codes, (n,), kind)
    return assemble(atoms, codes, bias, noise, rng.noise, groups=[list(range(R))])
