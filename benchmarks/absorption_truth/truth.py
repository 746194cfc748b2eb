"""Absorption truth per hierarchy edge, from the TRUE feature activations (no dictopt code).

For an edge (descendant ``c``, ancestor ``p``) and an SAE with codes ``A [N, K]`` and unit
decoder rows ``W [K, d]``:

- ``G_p``: the latent most correlated with ``p``'s true activation, with its near-duplicates
  (decoder cosine ≥ ``dup_cos`` to it, or latents whose most correlated feature is ``p`` with
  correlation ≥ ``min_corr``: a split parent). ``G_p`` *fires* on a row when any member does.
- ``l_c``: the latent outside ``G_p`` most correlated with ``c``'s true activation.
- ``ratio = P(G_p fires | p and c active) / P(G_p fires | p active, no descendant of p active)``.
- ``parent_cos = cos(W[l_c], F_p)``: how much of the ancestor's direction ``l_c`` carries.

Classes (written out in the benchmark's README):

- ``absorbed``: ``ratio < 0.5`` and ``parent_cos ≥ 0.2``.
- ``partial``: not absorbed, ``ratio < 0.9`` and ``parent_cos ≥ 0.1``.
- ``kept``: ``ratio ≥ 0.9`` and ``parent_cos < 0.2`` (the SAE keeps the hierarchy: the parent
  latent fires with the child, the child latent does not carry the parent).
- ``unresolved``: the SAE has no latent for ``p`` or ``c`` (correlation < ``min_corr``), or the
  rows to measure the ratio are missing.
- ``other``: everything else (e.g. the parent latent silenced without its direction moving).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ABSORBED_RATIO = 0.5
ABSORBED_COS = 0.2
PARTIAL_RATIO = 0.9
PARTIAL_COS = 0.1


@dataclass(frozen=True)
class EdgeTruth:
    """The truth of one (descendant, ancestor) edge."""

    child: int
    parent: int
    parent_group: tuple[int, ...]
    child_latent: int
    ratio: float
    parent_cos: float
    corr_parent: float
    corr_child: float
    cls: str


def _corr_FK(f_NF: np.ndarray, a_NK: np.ndarray) -> np.ndarray:
    """Pearson correlation of every feature with every latent (0 where either is constant)."""
    fc = f_NF - f_NF.mean(0)
    ac = a_NK - a_NK.mean(0)
    num = fc.T @ ac
    den = np.sqrt((fc**2).sum(0))[:, None] * np.sqrt((ac**2).sum(0))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    return out


def edge_truth(
    f_NF: np.ndarray,
    a_NK: np.ndarray,
    W_KD: np.ndarray,
    F_FD: np.ndarray,
    edges: list[tuple[int, int]],
    descendants: dict[int, list[int]],
    dup_cos: float = 0.9,
    min_corr: float = 0.3,
    min_rows: int = 20,
) -> list[EdgeTruth]:
    """Classify every edge (see the module docstring).

    Parameters
    ----------
    f_NF:
        True feature activations.
    a_NK:
        The SAE's codes on the same rows.
    W_KD:
        The SAE's decoder rows (any norm; normalised here).
    F_FD:
        True feature directions (unit rows).
    edges:
        ``(descendant, ancestor)`` pairs.
    descendants:
        Feature → all its descendants (for the "ancestor alone" rows).

    Returns
    -------
    list[EdgeTruth]
    """
    W = W_KD / np.maximum(np.linalg.norm(W_KD, axis=1, keepdims=True), 1e-12)
    C = _corr_FK(f_NF, a_NK)
    on_f = f_NF > 0
    on_a = a_NK > 0
    cosW = W @ W.T
    best_f, best_c = C.argmax(0), C.max(0)
    out = []
    for c, p in edges:
        top = int(np.argmax(C[p]))
        # p's latents: the top one, its near-duplicates, and every latent tracking p best
        dup = (cosW[top] >= dup_cos) | ((best_f == p) & (best_c >= min_corr))
        group = (top, *(int(k) for k in np.flatnonzero(dup) if k != top))
        rest = np.array([k for k in range(W.shape[0]) if k not in group])
        lc = int(rest[np.argmax(C[c, rest])])
        g_fires = on_a[:, list(group)].any(1)
        both = on_f[:, p] & on_f[:, c]
        alone = on_f[:, p] & ~on_f[:, descendants[p]].any(1)
        pcos = float(W[lc] @ F_FD[p])
        cp, cc = float(C[p, top]), float(C[c, lc])
        if both.sum() < min_rows or alone.sum() < min_rows or cp < min_corr or cc < min_corr:
            ratio = float("nan")
            cls = "unresolved"
        else:
            r_alone = g_fires[alone].mean()
            ratio = float(g_fires[both].mean() / r_alone) if r_alone > 0 else float("nan")
            if ratio != ratio:
                cls = "unresolved"
            elif ratio < ABSORBED_RATIO and pcos >= ABSORBED_COS:
                cls = "absorbed"
            elif ratio < PARTIAL_RATIO and pcos >= PARTIAL_COS:
                cls = "partial"
            elif ratio >= PARTIAL_RATIO and pcos < ABSORBED_COS:
                cls = "kept"
            else:
                cls = "other"
        out.append(EdgeTruth(c, p, group, lc, ratio, pcos, cp, cc, cls))
    return out
