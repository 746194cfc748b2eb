"""Score a set of predicted absorption pairs against the edge truth.

A predicted pair ``{i, j}`` of latents is a **true positive** when it joins the descendant latent
``l_c`` of an absorbed edge with a member of that edge's parent group ``G_p``; it is **neutral**
when it matches a *partial* edge in the same way (neither credited nor counted as a false
positive in ``precision``; ``precision_strict`` counts it as false); every other pair is a
**false positive**. An absorbed edge is **found** when some predicted pair matches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.absorption_truth.truth import EdgeTruth


@dataclass
class Score:
    """Precision/recall of predicted pairs against absorbed edges."""

    n_absorbed: int
    n_partial: int
    n_predicted: int
    tp: int
    neutral: int
    fp: int
    found: int
    false_positives: list[tuple[int, int]] = field(default_factory=list)
    false_negatives: list[tuple[int, int]] = field(default_factory=list)
    """Missed absorbed edges as (child feature, parent feature)."""

    @property
    def precision(self) -> float:
        d = self.tp + self.fp
        return self.tp / d if d else float("nan")

    @property
    def precision_strict(self) -> float:
        d = self.tp + self.fp + self.neutral
        return self.tp / d if d else float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.n_absorbed if self.n_absorbed else float("nan")


def _pairs_of(e: EdgeTruth) -> set[frozenset[int]]:
    return {frozenset((e.child_latent, g)) for g in e.parent_group if g != e.child_latent}


def score_pairs(predicted: list[tuple[int, int]], truth: list[EdgeTruth]) -> Score:
    """Score unordered latent pairs against the edges' classes (module docstring)."""
    absorbed = [e for e in truth if e.cls == "absorbed"]
    partial = [e for e in truth if e.cls == "partial"]
    abs_pairs: set[frozenset[int]] = set().union(*(_pairs_of(e) for e in absorbed))
    par_pairs: set[frozenset[int]] = set().union(*(_pairs_of(e) for e in partial))
    pred = {frozenset(p) for p in predicted if p[0] != p[1]}
    tp = sum(p in abs_pairs for p in pred)
    neutral = sum(p in par_pairs and p not in abs_pairs for p in pred)
    fps = sorted(tuple(sorted(p)) for p in pred if p not in abs_pairs and p not in par_pairs)
    found = [e for e in absorbed if _pairs_of(e) & pred]
    missed = [(e.child, e.parent) for e in absorbed if not (_pairs_of(e) & pred)]
    return Score(len(absorbed), len(partial), len(pred), tp, neutral, len(fps), len(found),
                 fps, missed)
