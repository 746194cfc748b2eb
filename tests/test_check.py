"""The checker against THEORY §2: planted worlds, brute force, certificates, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import check
from dictopt.check.certify import certify
from dictopt.check.hull import hull_distance
from dictopt.check.reference import brute_force
from dictopt.check.stats import PassOneStats
from dictopt.data.worlds import make_world
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

LAM = 0.1


def hierarchy_world(n: int = 1500):
    return make_world("hierarchy", seed=0, n=n, d=16, n_roots=3, branching=2, bias_norm=1.0)


# ---- planted worlds -----------------------------------------------------------------------


def test_hierarchy_ground_truth_flags_every_child_parent_pair():
    w = hierarchy_world()
    rep = check(w.truth(LAM), w.x, codes=w.codes)
    flagged = {(v.i, v.j) for v in rep.by_condition("C5") if v.label == "hierarchy"}
    assert flagged == set(w.edges)
    assert rep.summary["unstable_optimum"]
    assert rep.summary["labels"]["hierarchy"] == len(w.edges)


def test_hierarchy_certificates_match_first_order_for_small_steps():
    w = hierarchy_world()
    d = w.truth(LAM)
    rep = check(d, w.x, codes=w.codes)
    c5 = [v for v in rep.by_condition("C5") if v.label == "hierarchy"]
    ms = certify(d, w.x, c5, codes=w.codes, step_scale=1e-3)
    assert len(ms) == len(w.edges)
    for m in ms:
        assert m.min_new_code >= 0
        assert m.measured_decrease > 0
        assert abs(m.measured_decrease - m.predicted_decrease) <= 0.05 * m.predicted_decrease
    # at the full (optimised) step the measured change equals the exact closed form
    for m in certify(d, w.x, c5, codes=w.codes):
        assert m.measured_decrease == pytest.approx(m.violation.model_decrease, rel=1e-9)
        assert m.measured_decrease > m.predicted_decrease * 0  # a real decrease


def test_independent_ground_truth_has_no_c5_violation():
    w = make_world("independent", seed=1, n=3000, d=16, k=24, p=0.05, bias_norm=1.0)
    rep = check(w.truth(LAM), w.x, codes=w.codes)
    assert rep.by_condition("C5") == []


def test_certificates_of_every_condition_lower_the_loss_as_computed():
    w = hierarchy_world(800)
    d = w.truth(LAM)
    rng = np.random.default_rng(0)
    codes = w.codes * rng.uniform(0.8, 1.2, size=w.codes.shape)  # off-KKT, off-stationary
    codes[:, -1] += 0.01  # one always-on atom
    rep = check(d, w.x, codes=codes)
    for cond in ("C1", "C2", "C3", "C4", "C5"):
        assert rep.by_condition(cond), cond
    for m in certify(d, w.x, rep, codes=codes, top=None):
        assert m.measured_decrease > 0
        assert m.min_new_code >= -1e-12
        assert m.measured_decrease == pytest.approx(m.violation.model_decrease, rel=1e-7)


@pytest.mark.slow
def test_repair_on_hierarchy_lowers_loss_and_ends_clean():
    from dictopt.check.repair import repair

    w = make_world("hierarchy", seed=0, n=300, d=10, n_roots=2, branching=2, bias_norm=1.0)
    res = repair(w.truth(LAM), w.x, max_rounds=200)  # default coder: dictopt.solvers.coding
    assert res.losses[-1] < res.losses[0]
    assert all(b < a for a, b in zip(res.losses, res.losses[1:], strict=False))
    assert not any(v.condition != "C1" for v in res.report.violations)
    assert sum(res.report.summary["counts"].values()) == 0


def test_repair_first_rounds_are_monotone():
    from dictopt.check.repair import repair
    from tests._lasso import lasso_codes

    w = make_world("hierarchy", seed=0, n=150, d=8, n_roots=2, branching=2, bias_norm=1.0)
    res = repair(w.truth(LAM), w.x, coder=lambda dic, x: lasso_codes(dic.atoms, x, LAM, dic.bias),
                 max_rounds=3)
    assert len(res.losses) == 4
    assert all(b < a for a, b in zip(res.losses, res.losses[1:], strict=False))


# ---- brute-force agreement ----------------------------------------------------------------


def random_problem(seed: int, has_bias: bool):
    rng = np.random.default_rng(seed)
    N, K, d = int(rng.integers(6, 60)), int(rng.integers(2, 7)), int(rng.integers(2, 6))
    D = rng.standard_normal((K, d))
    if K >= 3 and rng.random() < 0.5:
        D[1] = -D[0] + 0.1 * rng.standard_normal(d)  # near antipodal
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < rng.uniform(0.2, 0.9))
    if K >= 3:
        A[:, 2] *= A[:, 0] > 0  # a hierarchy child of atom 0
    if rng.random() < 0.3:
        A[:, K - 1] += 0.05  # an always-on atom
    b = rng.standard_normal(d) if has_bias else np.zeros(d)
    x = A @ D + b + 0.3 * rng.standard_normal((N, d))
    lam = float(rng.uniform(0.05, 1.0))
    return x, A, D, b, lam


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), has_bias=st.booleans(), m=st.integers(1, 4),
       chunk=st.integers(3, 25), relu=st.booleans())
def test_streaming_check_agrees_with_brute_force(seed, has_bias, m, chunk, relu):
    """``relu``: τ = 0 and the sparse kernels (ReLU-SAE path); else solver τ, dense kernels."""
    from dictopt.check import Tolerances

    x, A, D, b, lam = random_problem(seed, has_bias)
    dic = Dictionary(atoms=D, bias=b, lam=lam, has_bias=has_bias)
    tol = Tolerances(tau=0.0) if relu else Tolerances()
    rep = check(dic, x, codes=A, buffer_size=m, chunk_size=chunk, hull=False, tol=tol,
                sparse=relu)
    tau = rep.summary["tau"]
    ref = brute_force(x, A, D, b, lam, tau, has_bias=has_bias)
    assert rep.summary["loss"] == pytest.approx(ref.loss, rel=1e-10)
    got = {c: {v.i for v in rep.by_condition(c)} for c in ("C1", "C4")}
    assert got["C1"] == ref.c1
    assert got["C4"] == ref.c4
    c2t = {v.i for v in rep.by_condition("C2") if v.label == "rotation"}
    c2r = {v.i for v in rep.by_condition("C2") if v.label == "code_scale"}
    assert c2t == ref.c2_tangential and c2r == ref.c2_radial
    assert bool(rep.by_condition("C3")) == ref.c3
    up = {(v.i, v.j) for v in rep.by_condition("C5") if v.detail["side"] == "upper"}
    lo = {(v.i, v.j) for v in rep.by_condition("C5") if v.detail["side"] == "lower"}
    assert up == ref.c5_upper and lo == ref.c5_lower
    for v in rep.by_condition("C5"):
        key = "H" if v.detail["side"] == "upper" else "L"
        exact = (ref.H if key == "H" else ref.L)[v.i, v.j]
        assert v.detail[key] == pytest.approx(float(exact), abs=1e-12)
    for row, kkt in zip(rep.atoms, ref.kkt_rel, strict=True):
        assert row["kkt_violation"] == pytest.approx(float(kkt), rel=1e-9, abs=1e-12)
    # every certified move keeps codes nonnegative and lowers the loss
    for mes in certify(dic, x, rep, codes=A, top=None):
        assert mes.min_new_code >= -1e-12
        assert mes.measured_decrease > 0
        assert mes.measured_decrease == pytest.approx(mes.violation.model_decrease, rel=1e-6,
                                                      abs=1e-12)


def test_pass_one_statistics_merge_exactly():
    x, A, D, b, lam = random_problem(3, True)
    x, A, D, b = (torch.as_tensor(t) for t in (x, A, D, b))
    whole = PassOneStats(D.shape[0], D.shape[1], lam, 3, torch.device("cpu"))
    whole.update(x, A, D, b, 0, 0.0)
    h = x.shape[0] // 2
    p1 = PassOneStats(D.shape[0], D.shape[1], lam, 3, torch.device("cpu"))
    p2 = PassOneStats(D.shape[0], D.shape[1], lam, 3, torch.device("cpu"))
    p1.update(x[:h], A[:h], D, b, 0, 0.0)
    p2.update(x[h:], A[h:], D, b, h, 0.0)
    p1.merge(p2)
    for name in ("sum_a", "sum_a2", "min_a", "max_a", "n_active", "G_sum", "kkt_max", "c1_gain"):
        torch.testing.assert_close(getattr(p1, name), getattr(whole, name))
    torch.testing.assert_close(p1.top.vals, whole.top.vals)
    torch.testing.assert_close(p1.top.ids, whole.top.ids)
    torch.testing.assert_close(p1.top.row_col, whole.top.row_col)


# ---- joint hull ---------------------------------------------------------------------------


def test_hull_distance_matches_cvxpy_and_dual_separates():
    import cvxpy as cp

    rng = np.random.default_rng(0)
    for _ in range(10):
        n, J = int(rng.integers(3, 12)), int(rng.integers(1, 5))
        P = rng.exponential(1.0, (n, J)) * (rng.random((n, J)) < 0.6)
        v = rng.uniform(0, 1.5, J)
        dist, q, kappa = hull_distance(v, P)
        w = cp.Variable(n, nonneg=True)
        prob = cp.Problem(cp.Minimize(cp.norm1(P.T @ w - v)), [cp.sum(w) == 1])
        prob.solve(solver=cp.CLARABEL)
        assert dist == pytest.approx(prob.value, abs=1e-6)
        if dist > 1e-7:  # strong duality: the dual direction separates by exactly dist
            assert np.max(P @ q) <= kappa + 1e-9
            assert q @ v - kappa == pytest.approx(dist, abs=1e-7)
            assert np.max(np.abs(q)) <= 1 + 1e-9


def test_joint_hull_flags_hierarchy_parents_and_certificate_is_exact():
    w = hierarchy_world(800)
    d = w.truth(LAM)
    rep = check(d, w.x, codes=w.codes, hull=True)
    hull = rep.by_condition("hull")
    assert {v.j for v in hull} >= {p for _, p in w.edges}
    for m in certify(d, w.x, hull, codes=w.codes):
        assert m.min_new_code >= 0
        assert m.measured_decrease == pytest.approx(m.violation.model_decrease, rel=1e-8)


# ---- report and bad input -----------------------------------------------------------------


def test_json_report_schema(tmp_path):
    w = hierarchy_world(500)
    rep = check(w.truth(LAM), w.x, codes=w.codes)
    data = json.loads(rep.save_json(tmp_path / "r.json").read_text())
    s = data["summary"]
    for key in ("N", "K", "d", "lam", "loss", "explained_variance", "counts", "labels"):
        assert key in s
    assert s["N"] == 500 and s["K"] == w.K_true and s["lam"] == LAM
    assert len(data["atoms"]) == w.K_true
    for row in data["violations"]:
        for key in ("condition", "i", "j", "label", "predicted_decrease", "measured_decrease"):
            assert key in row
    assert "NOT a local minimum" in rep.format()


def test_bad_input_errors():
    w = hierarchy_world(200)
    d = w.truth(LAM)
    with pytest.raises(DictoptInputError, match="width"):
        check(d, w.x[:, :-1], codes=w.codes)
    x = w.x.copy()
    x[130, 2] = np.nan
    with pytest.raises(DictoptInputError, match=r"chunk 2.*row 130|row 130.*chunk 2"):
        check(d, x, codes=w.codes, chunk_size=64)
    x[130, 2] = np.inf
    with pytest.raises(DictoptInputError, match="row 130"):
        check(d, x, codes=w.codes)
    bad = w.truth(LAM)
    bad.atoms = bad.atoms * 2
    with pytest.raises(DictoptInputError, match="not canonical|from_decoder"):
        check(bad, w.x, codes=w.codes)
    bad.atoms[0] = 0
    with pytest.raises(DictoptInputError, match="zero"):
        check(bad, w.x, codes=w.codes)
    nolam = Dictionary(atoms=w.atoms, bias=w.bias)
    with pytest.raises(DictoptInputError, match="--lam"):
        check(nolam, w.x, codes=w.codes)
    assert math.isfinite(check(nolam, w.x, codes=w.codes, lam=LAM).summary["loss"])


# ---- optimal codes and the amortisation gap ---------------------------------------------


def test_optimal_codes_satisfy_c1_and_amortisation_gap_is_nonnegative():
    from tests.test_check_cli import _TestRelu

    w = make_world("hierarchy", seed=0, n=400, d=12, n_roots=2, branching=2, bias_norm=1.0)
    truth = w.truth(LAM)
    rep = check(truth, w.x, codes="optimal")
    assert rep.by_condition("C1") == []
    assert rep.summary["max_kkt_violation"] <= 1e-6
    enc = _TestRelu(truth.atoms.t().contiguous(), torch.full((w.K_true,), -0.05,
                    dtype=torch.float64), truth.bias)
    sae = Dictionary(atoms=truth.atoms, bias=truth.bias, lam=LAM, encoder=enc)
    rep = check(sae, w.x, codes="own")
    am = rep.summary["amortisation"]
    assert am["loss_gap"] >= -1e-9
    assert am["loss_gap"] == pytest.approx(rep.summary["loss"] - am["optimal_loss"])
    assert len(am["mean_abs_code_diff"]) == w.K_true
    assert rep.by_condition("C1")  # a ReLU encoder is not the optimal coder


def test_duplicate_pairs_are_summarised_as_groups():
    """Three copies of one atom and two of another (cosine 1 within each group) give 3 + 1
    duplicate pairs, summarised as 2 groups holding 5 atoms, largest [3, 2]; the report's text
    says so."""
    from dictopt.check.report import duplicate_groups

    g = np.random.default_rng(0)
    base = g.normal(size=(6, 12))
    atoms = np.concatenate([base[[0, 0, 0, 1, 1]], base[2:]])
    atoms[1] += 1e-4 * g.normal(size=12)  # near-identical, not identical
    x = g.exponential(size=(400, 9)) * (g.random((400, 9)) < 0.3) @ atoms
    rep = check(Dictionary.from_decoder(atoms, lam=LAM), x, codes="optimal")
    s = rep.summary
    assert s["labels"]["duplicate"] == 4
    assert s["duplicate_groups"] == {"groups": 2, "atoms": 5, "largest": [3, 2]}
    assert "5 atoms in 2 group(s)" in rep.format()
    assert duplicate_groups([], 4) == {"groups": 0, "atoms": 0, "largest": []}
