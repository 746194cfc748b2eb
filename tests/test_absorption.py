"""Absorption from structure: streamed statistics against brute force, and the star."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check.absorption import (
    AbsorptionThresholds,
    absorption_findings,
    absorption_merge,
    absorption_start,
    absorption_update,
    candidate_pairs,
    pair_statistics,
)


def _unit(rng: np.random.Generator, K: int, d: int) -> torch.Tensor:
    D = rng.standard_normal((K, d))
    return torch.tensor(D / np.linalg.norm(D, axis=1, keepdims=True))


@st.composite
def coded(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, int]:
    seed = draw(st.integers(0, 10_000))
    K = draw(st.integers(2, 9))
    N = draw(st.integers(1, 60))
    p = draw(st.floats(0.05, 0.9))
    rng = np.random.default_rng(seed)
    A = rng.random((N, K)) * (rng.random((N, K)) < p)
    split = draw(st.integers(0, N))
    return torch.tensor(A), _unit(rng, K, 4), split


@settings(max_examples=25, deadline=None)
@given(coded())
def test_streamed_sums_match_brute_force_and_merge(case):
    A, D, split = case
    K = A.shape[1]
    pi, pj = torch.triu_indices(K, K, 1)
    whole = absorption_start(pi, pj, K)
    absorption_update(whole, A)
    left, right = absorption_start(pi, pj, K), absorption_start(pi, pj, K)
    absorption_update(left, A[:split])
    absorption_update(right, A[split:])
    merged = absorption_merge(left, right)
    a = A.numpy()
    on = a > 0
    for st_ in (whole, merged):
        assert st_.n == a.shape[0]
        for p, (i, j) in enumerate(zip(pi.tolist(), pj.tolist(), strict=True)):
            assert st_.co[p] == (on[:, i] & on[:, j]).sum()
            assert math.isclose(float(st_.s_i_on_j[p]), a[on[:, j], i].sum(), abs_tol=1e-12)
            assert math.isclose(float(st_.q_j_on_i[p]), (a[on[:, i], j] ** 2).sum(),
                                abs_tol=1e-12)
        np.testing.assert_allclose(st_.n_k.numpy(), on.sum(0))
    # the finished statistics follow their definitions
    ps = pair_statistics(merged, D)
    N = a.shape[0]
    for p, (i, j) in enumerate(zip(pi.tolist(), pj.tolist(), strict=True)):
        E = on[:, i].sum() * on[:, j].sum() / N
        co = (on[:, i] & on[:, j]).sum()
        assert math.isclose(float(ps.expected[p]), E, rel_tol=1e-12, abs_tol=1e-12)
        if E > 0:
            assert math.isclose(float(ps.z_exclusion[p]), (E - co) / math.sqrt(E),
                                rel_tol=1e-9, abs_tol=1e-12)
        assert bool(ps.rare[p]) == (E < 9)
        n_on, n_off = on[:, j].sum(), N - on[:, j].sum()
        if n_on > 1 and n_off > 1 and a[~on[:, j], i].mean() > 0:
            m_on, m_off = a[on[:, j], i].mean(), a[~on[:, j], i].mean()
            assert math.isclose(float(ps.suppression_i[p]), 1 - m_on / m_off, rel_tol=1e-9,
                                abs_tol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 12), st.floats(0.0, 0.6))
def test_candidate_pairs_match_brute_force(seed, K, cos_min):
    rng = np.random.default_rng(seed)
    D = _unit(rng, K, 3)
    th = AbsorptionThresholds(cos_min=cos_min, max_neighbours=K)
    pi, pj = candidate_pairs(D, th, block=3)
    C = (D @ D.T).numpy()
    ok = (C >= cos_min) & (C < th.duplicate_cos)
    np.fill_diagonal(ok, False)
    want = {(i, j) for i in range(K) for j in range(i + 1, K) if ok[i, j]}
    for h in range(K):  # two-hop: neighbours of a common atom
        nb = np.flatnonzero(ok[h])
        want |= {(int(min(a, b)), int(max(a, b))) for a in nb for b in nb if a != b}
    assert set(zip(pi.tolist(), pj.tolist(), strict=True)) == want
    assert bool((pi < pj).all())


def _absorbed_world(n: int, seed: int, alpha: float = 0.8, hub_with_partner: float = 0.0):
    """A hub ``e0`` and 3 mutually exclusive partners ``e_k + α e0`` (an absorbed hierarchy),
    plus 4 independent atoms; codes are drawn so that the hub never fires with a partner."""
    rng = np.random.default_rng(seed)
    d = 12
    E = np.eye(d)
    hub = E[0]
    partners = [(E[k] + alpha * E[0]) / math.hypot(1, alpha) for k in (1, 2, 3)]
    free = [E[k] for k in (4, 5, 6, 7)]
    D = torch.tensor(np.stack([hub, *partners, *free]))
    A = np.zeros((n, 8))
    parent = rng.random(n) < 0.3
    child = np.where(rng.random(n) < 0.6, rng.integers(1, 4, n), 0) * parent
    A[parent & (child == 0), 0] = 1.0
    A[parent & (child > 0) & (rng.random(n) < hub_with_partner), 0] = 1.0
    for k in (1, 2, 3):
        A[child == k, k] = 1.0
    A[:, 4:] = rng.random((n, 4)) < 0.1
    return D, torch.tensor(A)


def test_star_is_found_and_siblings_are_not_labelled():
    D, A = _absorbed_world(6000, 0)
    pi, pj = candidate_pairs(D)
    st_ = absorption_start(pi, pj, 8)
    absorption_update(st_, A)
    found, _ = absorption_findings(st_, D)
    assert {(f.i, f.j) for f in found} == {(0, 1), (0, 2), (0, 3)}
    assert all(f.hub == 0 and f.detail["z_silenced"] >= 3 for f in found)
    assert all(abs(f.detail["z_association"]) >= 3 for f in found)


def test_independent_firing_and_rare_latents_give_no_label():
    D, A = _absorbed_world(6000, 1)
    rng = np.random.default_rng(2)
    # the same directions, but every latent fires independently: no exclusion, no star
    A_ind = torch.tensor((rng.random(A.shape) < 0.2).astype(float))
    pi, pj = candidate_pairs(D)
    st_ = absorption_start(pi, pj, 8)
    absorption_update(st_, A_ind)
    assert absorption_findings(st_, D)[0] == []
    # the absorbed structure on too few rows: every pair is rare, nothing is labelled
    st_small = absorption_start(pi, pj, 8)
    absorption_update(st_small, A[:40])
    found, ps = absorption_findings(st_small, D)
    assert found == [] and bool(ps.rare.all())


def test_partial_absorption_is_labelled_and_a_kept_hierarchy_is_not():
    # the hub still fires on 30 % of the partners' rows: nested above independence, silenced
    D, A = _absorbed_world(6000, 3, hub_with_partner=0.3)
    pi, pj = candidate_pairs(D)
    st_ = absorption_start(pi, pj, 8)
    absorption_update(st_, A)
    found, _ = absorption_findings(st_, D)
    assert {(f.i, f.j) for f in found} == {(0, 1), (0, 2), (0, 3)}
    assert all(f.detail["lift"] > 1 for f in found)
    # a kept hierarchy: the hub fires with every partner, partners orthogonal to it
    D_kept, A_kept = _absorbed_world(6000, 3, alpha=0.0, hub_with_partner=1.0)
    st_k = absorption_start(*candidate_pairs(D_kept), 8)
    absorption_update(st_k, A_kept)
    assert absorption_findings(st_k, D_kept)[0] == []


def test_check_labels_absorption_from_structure_and_merges_like_one_stream():
    from dictopt.check import check
    from dictopt.problem import Dictionary

    D, A = _absorbed_world(4000, 4)
    x = A @ D
    dic = Dictionary.from_decoder(D, torch.zeros(D.shape[1], dtype=D.dtype), lam=0.05)
    rep = check(dic, x, codes=A, lam=0.05, hull=False, chunk_size=700)
    pairs = {(lab.i, lab.j) for lab in rep.labels if lab.label == "absorption"}
    assert pairs == {(0, 1), (0, 2), (0, 3)}
    assert rep.summary["labels"]["absorption"] == 3


def test_hub_is_the_central_latent_when_its_direction_is_impure():
    """An impure parent latent (``e0 + 1.2 e9``, as SGD-trained SAEs make them) shares less
    direction with its partners than the partners share with each other, so the mean cosine
    would take a sibling as the hub; the hub still fires on part of its partners' rows
    (partial absorption), which siblings do not, and centrality picks it."""
    D, A = _absorbed_world(8000, 5, alpha=1.0, hub_with_partner=0.3)
    hub = np.zeros(12)
    hub[0], hub[9] = 1.0, 1.2
    D = D.clone()
    D[0] = torch.tensor(hub / np.linalg.norm(hub))
    cos_hub = float(D[0] @ D[1])
    assert cos_hub < float(D[1] @ D[2])  # the mean cosine would prefer a sibling
    st_ = absorption_start(*candidate_pairs(D), 8)
    absorption_update(st_, A)
    found, _ = absorption_findings(st_, D)
    assert {(f.i, f.j) for f in found} == {(0, 1), (0, 2), (0, 3)}
    assert all(f.hub == 0 for f in found)


def _with_independent_partner(n: int, seed: int, associated_partners: int = 3):
    """The absorbed world plus atom 8 = ``(e8 + 0.8 e0)/‖·‖``: it shares the hub's direction and
    fires on 15 % of the rows independently of everything (a partner half-way absorbed: the hub
    fires on its rows at its base rate, at independence, far below ``cofire_max``). Only the
    first ``associated_partners`` of the three absorbed partners keep firing."""
    D, A = _absorbed_world(n, seed)
    rng = np.random.default_rng(seed + 100)
    e = np.zeros(12)
    e[8], e[0] = 1.0, 0.8
    D = torch.cat([D, torch.tensor(e / np.linalg.norm(e))[None, :]])
    A = A.clone()
    A[:, 1 + associated_partners : 4] = 0.0
    A = torch.cat([A, torch.tensor((rng.random(n) < 0.15).astype(float))[:, None]], dim=1)
    return D, A


def _brute_force_link(A: torch.Tensor, h: int, k: int, th: AbsorptionThresholds):
    """(associated, hub silenced, not rare) of the pair from the codes, without the streams."""
    on = (A > 0).numpy()
    N = on.shape[0]
    nh, nk, co = on[:, h].sum(), on[:, k].sum(), (on[:, h] & on[:, k]).sum()
    E = nh * nk / N
    z_assoc = abs(co - E) / math.sqrt(E)
    z_sil = (th.cofire_max * nk - co) / math.sqrt(nk * th.cofire_max * (1 - th.cofire_max))
    return z_assoc >= th.z_min, z_sil >= th.z_min, E >= th.z_min**2


def test_a_partner_at_independence_joins_a_star_of_associated_partners():
    th = AbsorptionThresholds()
    D, A = _with_independent_partner(8000, 6)
    # brute force: 1..3 are associated and silence the hub; 8 silences it at independence
    assert all(_brute_force_link(A, 0, k, th) == (True, True, True) for k in (1, 2, 3))
    assert _brute_force_link(A, 0, 8, th) == (False, True, True)
    st_ = absorption_start(*candidate_pairs(D, th), 9)
    absorption_update(st_, A)
    found, _ = absorption_findings(st_, D, th)
    assert {(f.i, f.j) for f in found} == {(0, 1), (0, 2), (0, 3), (0, 8)}
    z8 = next(f.detail["z_association"] for f in found if f.j == 8)
    assert abs(z8) < th.z_min


def test_unassociated_partners_alone_make_no_star():
    th = AbsorptionThresholds()
    # one associated absorbed partner (1) and one at independence (8): fewer than two
    # associated partners, so no star, although both silence the hub
    D, A = _with_independent_partner(8000, 7, associated_partners=1)
    assert _brute_force_link(A, 0, 1, th) == (True, True, True)
    assert _brute_force_link(A, 0, 8, th) == (False, True, True)
    st_ = absorption_start(*candidate_pairs(D, th), 9)
    absorption_update(st_, A)
    assert absorption_findings(st_, D, th)[0] == []
    # every latent firing independently: no association anywhere, no star
    rng = np.random.default_rng(8)
    A_ind = torch.tensor((rng.random(A.shape) < 0.2).astype(float))
    st_i = absorption_start(*candidate_pairs(D, th), 9)
    absorption_update(st_i, A_ind)
    assert absorption_findings(st_i, D, th)[0] == []
