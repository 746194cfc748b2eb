"""Why a label is a false positive: what the two latents track in the TRUE features.

Each false-positive pair ``{i, j}`` is described by the feature each latent correlates with most
(from the true activations, like the truth itself) and put in one class:

- ``edge-not-absorbed``: the pair is the truth's (``G_p`` member, ``l_c``) pair of an edge whose
  class is ``kept``, ``other`` or ``unresolved``;
- ``extra-child-latent``: one latent tracks a descendant ``c`` of the feature the other tracks,
  but it is not ``l_c`` (wide SAEs give a child two latents; the truth credits only one);
- ``split``: both latents track the same feature (a split parent or a split child);
- ``siblings``: the latents track two children of one parent;
- ``hierarchy-other``: both track features of one tree, none of the above;
- ``unrelated``: the rest (at least one latent tracks a feature outside the tree of the other).
"""

from __future__ import annotations

import collections

import numpy as np

from benchmarks.absorption_truth.truth import EdgeTruth, _corr_FK


def classify_false_positives(
    pairs: list[tuple[int, int]],
    f_NF: np.ndarray,
    a_NK: np.ndarray,
    truth: list[EdgeTruth],
    parent: dict[int, int],
) -> list[dict]:
    """One record per false-positive pair: each latent's best feature and correlation, and the
    class (module docstring)."""
    C = _corr_FK(f_NF, a_NK)
    best, corr = C.argmax(0), C.max(0)
    edge_cls = {}
    for e in truth:
        for g in e.parent_group:
            edge_cls[frozenset((g, e.child_latent))] = e.cls

    def root(f: int) -> int:
        while f in parent:
            f = parent[f]
        return f

    def ancestors(f: int) -> set[int]:
        out = set()
        while f in parent:
            f = parent[f]
            out.add(f)
        return out

    lc = {e.child_latent for e in truth}
    out = []
    for i, j in pairs:
        fi, fj = int(best[i]), int(best[j])
        if frozenset((i, j)) in edge_cls:
            cls = "edge-not-absorbed"
        elif (fi in ancestors(fj) and j not in lc) or (fj in ancestors(fi) and i not in lc):
            cls = "extra-child-latent"
        elif fi == fj:
            cls = "split"
        elif fi in parent and fj in parent and parent[fi] == parent[fj]:
            cls = "siblings"
        elif (fi in parent or fi in parent.values()) and root(fi) == root(fj):
            cls = "hierarchy-other"
        else:
            cls = "unrelated"
        out.append({"pair": [i, j], "features": [fi, fj],
                    "corr": [round(float(corr[i]), 3), round(float(corr[j]), 3)], "class": cls})
    return out


def count_classes(records: list[dict]) -> dict[str, int]:
    """Number of false positives per class."""
    return dict(collections.Counter(r["class"] for r in records))


def classify_false_negatives(
    missed: list[tuple[int, int]], a_NK: np.ndarray, W_KD: np.ndarray, truth: list[EdgeTruth],
    cos_min: float = 0.35, duplicate_cos: float = 0.75, z_min: float = 3.0,
    cofire_max: float = 0.7,
) -> list[dict]:
    """One record per missed absorbed edge, with the label's own statistics for the pair
    (``G_p``'s best member, ``l_c``) and the first test of the label it fails: ``cos<min``,
    ``cos≥duplicate`` (decoder cosine out of range), ``rare`` (independence predicts fewer
    than ``z_min²`` co-firings), ``not-associated`` (co-firing within ``z_min`` standard errors
    of independence), ``hub-not-silenced`` (binomial z < ``z_min``), else
    ``star`` (the pair passes every pairwise test but no star holds it: a single partner, a
    partner assigned to another hub, or the remainder or centre test)."""
    W = W_KD / np.maximum(np.linalg.norm(W_KD, axis=1, keepdims=True), 1e-12)
    on = a_NK > 0
    N = on.shape[0]
    n = on.sum(0)
    by_edge = {(e.child, e.parent): e for e in truth}
    out = []
    for c, p in missed:
        e = by_edge[(c, p)]
        k = e.child_latent
        best = None
        for h in e.parent_group:
            if h == k:
                continue
            cos = float(W[h] @ W[k])
            co = float((on[:, h] & on[:, k]).sum())
            E = n[h] * n[k] / N
            z_assoc = float((co - E) / np.sqrt(E)) if E > 0 else 0.0
            z_sil = (float((cofire_max * n[k] - co) / np.sqrt(n[k] * cofire_max * (1 - cofire_max)))
                     if n[k] > 0 else 0.0)
            if cos < cos_min:
                why = "cos<min"
            elif cos >= duplicate_cos:
                why = "cos≥duplicate"
            elif E < z_min**2:
                why = "rare"
            elif abs(z_assoc) < z_min:
                why = "not-associated"
            elif z_sil < z_min:
                why = "hub-not-silenced"
            else:
                why = "star"
            rec = {"edge": [c, p], "hub": h, "child_latent": k, "cos": round(cos, 3),
                   "lift": round(co / E, 3) if E > 0 else None, "z_association": round(z_assoc, 1),
                   "z_silenced": round(z_sil, 1), "class": why}
            if best is None or why == "star":
                best = rec
        out.append(best or {"edge": [c, p], "class": "no-hub"})
    return out
