"""The absorption harness: its truth on hand-made SAEs, its scoring, a quick end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.absorption_truth.score import score_pairs
from benchmarks.absorption_truth.truth import edge_truth


def _world(n: int = 4000, seed: int = 0):
    """Features: parent 0 (p = 0.4) with exclusive children 1, 2 (each half of the parent's
    rows with prob 0.6), and a free feature 3; orthonormal directions in 6 dimensions."""
    rng = np.random.default_rng(seed)
    f = np.zeros((n, 4))
    par = rng.random(n) < 0.4
    ch = np.where(rng.random(n) < 0.6, rng.integers(1, 3, n), 0) * par
    f[par, 0] = 1.0
    f[ch == 1, 1] = 1.0
    f[ch == 2, 2] = 1.0
    f[:, 3] = rng.random(n) < 0.2
    F = np.eye(6)[:4]
    return f, F, [(1, 0), (2, 0)], {0: [1, 2]}


def test_truth_absorbed_kept_and_unresolved():
    f, F, edges, desc = _world()
    # absorbed SAE: latent 0 = parent fires only when no child does; children carry the parent
    a = np.zeros((f.shape[0], 4))
    alone = (f[:, 0] > 0) & (f[:, 1:3].sum(1) == 0)
    a[alone, 0] = 1.0
    a[:, 1], a[:, 2], a[:, 3] = f[:, 1], f[:, 2], f[:, 3]
    W = np.stack([F[0], (F[1] + 0.8 * F[0]), (F[2] + 0.8 * F[0]), F[3]])
    tr = edge_truth(f, a, W, F, edges, desc)
    assert [e.cls for e in tr] == ["absorbed", "absorbed"]
    assert all(e.parent_group == (0,) and e.ratio == 0.0 for e in tr)
    assert math.isclose(tr[0].parent_cos, 0.8 / math.hypot(1, 0.8))
    # kept: the parent latent fires on every parent row, children orthogonal to it
    a_kept = f.copy()
    tr_kept = edge_truth(f, a_kept, F, F, edges, desc)
    assert [e.cls for e in tr_kept] == ["kept", "kept"]
    assert all(e.ratio == 1.0 for e in tr_kept)
    # a SAE with no latent for child 2: that edge is unresolved
    a_missing = f.copy()
    a_missing[:, 2] = 0.0
    tr_m = edge_truth(f, a_missing, F, F, edges, desc)
    assert tr_m[1].cls == "unresolved"


def test_partial_absorption_is_partial():
    f, F, edges, desc = _world(seed=1)
    rng = np.random.default_rng(5)
    a = f.copy()
    with_child = (f[:, 0] > 0) & (f[:, 1:3].sum(1) > 0)
    a[with_child & (rng.random(f.shape[0]) < 0.3), 0] = 0.0  # silenced on 30 % only
    W = np.stack([F[0], (F[1] + 0.5 * F[0]), (F[2] + 0.5 * F[0]), F[3]])
    tr = edge_truth(f, a, W, F, edges, desc)
    assert [e.cls for e in tr] == ["partial", "partial"]
    assert all(0.6 < e.ratio < 0.8 for e in tr)


def test_score_counts_hits_partials_and_misses():
    f, F, edges, desc = _world()
    a = np.zeros((f.shape[0], 4))
    alone = (f[:, 0] > 0) & (f[:, 1:3].sum(1) == 0)
    a[alone, 0] = 1.0
    a[:, 1], a[:, 2], a[:, 3] = f[:, 1], f[:, 2], f[:, 3]
    W = np.stack([F[0], (F[1] + 0.8 * F[0]), (F[2] + 0.8 * F[0]), F[3]])
    tr = edge_truth(f, a, W, F, edges, desc)
    sc = score_pairs([(0, 1), (1, 2), (0, 3)], tr)
    assert (sc.tp, sc.fp, sc.found, sc.n_absorbed) == (1, 2, 1, 2)
    assert sc.false_negatives == [(2, 0)]
    assert sc.false_positives == [(0, 3), (1, 2)]
    assert sc.precision == 1 / 3 and sc.recall == 0.5


@pytest.mark.slow  # trains a SAELens SAE (about a minute on a loaded machine)
def test_quick_harness_end_to_end(tmp_path):
    from benchmarks.absorption_truth.worlds import SaeSpec, Setting, WorldSpec
    from benchmarks.bench_absorption import run_setting

    s = Setting(WorldSpec(depth=1, seed=0), SaeSpec("topk", 48, k=4, samples=150_000))
    r = run_setting(s, tmp_path, 4000)
    assert r["edges"] == 24 and sum(r["classes"].values()) == 24
    assert r["tp"] + r["neutral"] + r["fp"] == r["labels"]
    assert r["found"] + len(r["false_negatives"]) == r["absorbed"]
    assert (tmp_path / f"{s.name}-{s.key()}" / "cfg.json").exists()  # cached for reruns
    # every false positive and negative is explained by exactly one class
    assert sum(r["false_positive_classes"].values()) == r["fp"]
    assert sum(r["false_negative_classes"].values()) == len(r["false_negatives"])


def test_false_positives_and_negatives_are_classified():
    from benchmarks.absorption_truth.diagnose import (
        classify_false_negatives,
        classify_false_positives,
    )

    f, F, edges, desc = _world()
    a = np.zeros((f.shape[0], 4))
    alone = (f[:, 0] > 0) & (f[:, 1:3].sum(1) == 0)
    a[alone, 0] = 1.0
    a[:, 1], a[:, 2], a[:, 3] = f[:, 1], f[:, 2], f[:, 3]
    W = np.stack([F[0], (F[1] + 0.8 * F[0]), (F[2] + 0.1 * F[0]), F[3]])
    tr = edge_truth(f, a, W, F, edges, desc)
    recs = classify_false_positives([(1, 2), (0, 3)], f, a, tr, {1: 0, 2: 0})
    assert [r["class"] for r in recs] == ["siblings", "unrelated"]
    assert recs[0]["features"] == [1, 2]
    # edge (1, 0) is absorbed (cos 0.62 to its hub); edge (2, 0) carries too little of the parent
    assert [e.cls for e in tr] == ["absorbed", "other"]
    fn = classify_false_negatives([(1, 0)], a, W, tr)
    # the hub never fires with it (lift 0, significant exclusion, silenced), yet it is its
    # hub's only partner: no star
    assert fn[0]["class"] == "star"
    assert fn[0]["lift"] == 0.0 and fn[0]["z_association"] < -3 and fn[0]["z_silenced"] > 3
    W_low = W.copy()
    W_low[1] = F[1] + 0.3 * F[0]  # cosine 0.29 to the hub: below the label's cos_min
    tr_low = edge_truth(f, a, W_low, F, edges, desc)
    assert tr_low[0].cls == "absorbed"
    assert classify_false_negatives([(1, 0)], a, W_low, tr_low)[0]["class"] == "cos<min"
