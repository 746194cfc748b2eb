"""The amortisation gap on a sample of rows (issue #21): the sample is chosen by the global row
index (the same whatever the chunks or partitions), the sampled gap agrees with the full gap
within its standard error, the standard error is the textbook one (checked against the
brute-force formula and a bootstrap), and bad choices are refused before any work."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check import check
from dictopt.check.amortisation import (
    DEFAULT_SAMPLE_ROWS,
    AmortisationSums,
    announce,
    exact_code_cost,
    parse_amortisation,
    plan_amortisation,
    sample_mask,
)
from dictopt.cli import main
from dictopt.data.worlds import make_world
from dictopt.io.native import save_dictionary
from dictopt.problem import Dictionary
from dictopt.solvers.coding import solve_codes
from dictopt.validation import DictoptInputError
from tests.test_check_cli import _TestRelu

LAM = 0.05
N = 4000


@pytest.fixture(scope="module")
def small_sae():
    """A ReLU SAE (the true atoms as decoder, encoder = their transpose with a negative
    bias) on 4,000 rows of 48 independent features in 16 dimensions, and the per-row gaps
    ``own loss − optimal loss`` computed here by brute force."""
    w = make_world("independent", seed=3, n=N, d=16, k=48, p=0.08, noise=0.01)
    atoms = torch.from_numpy(w.atoms)
    bias = torch.zeros(w.x.shape[1], dtype=torch.float64)
    enc = _TestRelu(atoms.t().contiguous(), torch.full((atoms.shape[0],), -0.1,
                    dtype=torch.float64), bias)
    sae = Dictionary(atoms=atoms, bias=bias, lam=LAM, encoder=enc)
    x = torch.from_numpy(w.x)
    own = enc.encode(x)
    opt = solve_codes(atoms, x, LAM).codes

    def row_loss(a):
        r = x - a @ atoms
        return 0.5 * (r**2).sum(1) + LAM * a.sum(1)

    gaps = (row_loss(own) - row_loss(opt)).numpy()
    diff = (opt - own).abs().numpy()
    return sae, w.x, gaps, diff


# ---- the choice ---------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (None, (None, None)), ("all", ("all", None)), (True, ("all", None)), ("off", ("off", None)),
    (False, ("off", None)), (300, ("sample", 300)), (("sample", 7), ("sample", 7)),
    (["sample", "12"], ("sample", 12)), ("sample 5", ("sample", 5)), (["all"], ("all", None)),
])
def test_amortisation_values_are_parsed(value, expected):
    assert parse_amortisation(value) == expected


@pytest.mark.parametrize("value", [0, -3, "some", ("sample", 0), ["sample", "x"], 2.5,
                                   ["sample"], ["all", "3"], "sample -1"])
def test_bad_amortisation_values_are_refused_naming_the_choices(value):
    with pytest.raises(DictoptInputError, match="'all', 'off'"):
        parse_amortisation(value)


def test_default_is_a_bounded_sample_with_own_codes_and_off_otherwise():
    plan = plan_amortisation(None, codes_mode="own", population=10**6)
    assert plan.mode == "sample" and plan.sample_rows == DEFAULT_SAMPLE_ROWS
    assert plan.expected_rows == DEFAULT_SAMPLE_ROWS
    assert not plan_amortisation(None, codes_mode="optimal", population=10**6).active
    assert not plan_amortisation(None, codes_mode="given", population=10).active
    # a sample at least as large as the data is every row
    assert plan_amortisation(50, codes_mode="own", population=40).rate == 1.0


# ---- rows by index ------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3000), cuts=st.lists(st.integers(0, 3000), max_size=6),
       rate=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_sample_mask_does_not_depend_on_how_rows_are_cut(n, cuts, rate, seed):
    """Any split of the rows into chunks or partitions selects the same global rows."""
    whole = sample_mask(0, n, rate, seed)
    bounds = sorted({0, n, *(c for c in cuts if c < n)})
    parts = [sample_mask(lo, hi - lo, rate, seed) for lo, hi in zip(bounds, bounds[1:],
                                                                      strict=False)]
    assert np.array_equal(np.concatenate(parts), whole)


def test_sample_size_is_binomial_and_rows_are_spread_over_positions():
    """About rate·N rows (within 5 binomial standard deviations), and no aliasing with a
    period: every residue modulo 128 (token positions of 128-token contexts) is sampled at the
    same rate within 5 standard deviations."""
    n, rate = 204_800, 0.05
    mask = sample_mask(0, n, rate, seed=0)
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(mask.sum() - n * rate) < 5 * sd
    per_pos = mask.reshape(-1, 128).sum(0)
    m = n // 128
    assert np.all(np.abs(per_pos - m * rate) < 5 * math.sqrt(m * rate * (1 - rate)))
    assert not np.array_equal(mask, sample_mask(0, n, rate, seed=1))


# ---- the estimate and its standard error ----------------------------------------------------


def test_full_gap_is_the_mean_of_every_rows_gap(small_sae):
    sae, x, gaps, diff = small_sae
    rep = check(sae, x, codes="own", hull=False, amortisation="all")
    am = rep.summary["amortisation"]
    assert am["rows"] == "all" and am["sample_size"] == N and am["population"] == N
    assert am["loss_gap_se"] == 0.0
    assert am["loss_gap"] == pytest.approx(gaps.mean(), rel=1e-9)
    assert am["optimal_loss"] == pytest.approx(rep.summary["loss"] - gaps.mean(), rel=1e-9)
    assert np.allclose(am["mean_abs_code_diff"], diff.mean(0), rtol=1e-9, atol=1e-12)
    assert gaps.min() > -1e-9 and gaps.mean() > 0


def test_sampled_gap_matches_full_gap_within_three_standard_errors(small_sae):
    """The sample's gap, standard error and code differences equal the brute force on the rows
    that the index hash selects; the full mean lies within 3 standard errors; the standard
    error agrees with a bootstrap of the sampled gaps."""
    sae, x, gaps, diff = small_sae
    rep = check(sae, x, codes="own", hull=False, amortisation=("sample", 400), chunk_size=333)
    am = rep.summary["amortisation"]
    sel = sample_mask(0, N, 400 / N, seed=0)
    m = int(sel.sum())
    assert am["rows"] == "sample" and am["sample_size"] == m and 300 < m < 500
    g = gaps[sel]
    assert am["loss_gap"] == pytest.approx(g.mean(), rel=1e-9)
    se = g.std(ddof=1) / math.sqrt(m) * math.sqrt(1 - m / N)
    assert am["loss_gap_se"] == pytest.approx(se, rel=1e-9)
    assert np.allclose(am["mean_abs_code_diff"], diff[sel].mean(0), rtol=1e-9, atol=1e-12)
    assert abs(am["loss_gap"] - gaps.mean()) <= 3 * am["loss_gap_se"]
    # bootstrap (with replacement: no finite-population correction)
    rng = np.random.default_rng(0)
    boot = np.array([g[rng.integers(0, m, m)].mean() for _ in range(4000)])
    assert boot.std() == pytest.approx(am["loss_gap_se"] / math.sqrt(1 - m / N), rel=0.06)
    text = rep.format()
    assert "± " in text and f"{m:,} sampled rows of {N:,}" in text


def test_standard_error_covers_the_full_gap_over_many_seeds(small_sae):
    """Over 200 seeds of the row hash, the full gap lies within 2 standard errors of the
    sampled gap about 95 % of the time (at least 85 %; sums merged chunk by chunk)."""
    _, _, gaps, _ = small_sae
    full, hits = gaps.mean(), 0
    for seed in range(200):
        sums = AmortisationSums(1, torch.device("cpu"))
        for lo in range(0, N, 700):
            part = AmortisationSums(1, torch.device("cpu"))
            sel = sample_mask(lo, min(700, N - lo), 150 / N, seed)
            part._add(torch.from_numpy(gaps[lo:lo + 700][sel]))
            sums.merge(part)
        hits += abs(sums.mean_gap - full) <= 2 * sums.standard_error(N)
    assert hits >= 170


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8), seed=st.integers(0, 1000))
def test_merged_mean_and_squared_deviations_equal_the_direct_ones(sizes, seed):
    rng = np.random.default_rng(seed)
    values = [rng.exponential(size=s) * 10 ** rng.uniform(-3, 3) + 5 for s in sizes]
    total = AmortisationSums(1, torch.device("cpu"))
    for v in values:
        part = AmortisationSums(1, torch.device("cpu"))
        part._add(torch.from_numpy(v)) if v.size else None
        total.merge(part)
    allv = np.concatenate(values)
    assert total.m == allv.size
    if allv.size:
        assert total.mean_gap == pytest.approx(allv.mean(), rel=1e-12)
        assert total.m2_gap == pytest.approx(((allv - allv.mean()) ** 2).sum(), rel=1e-9,
                                             abs=1e-9 * allv.var() * allv.size + 1e-12)


# ---- cost estimate ---------------------------------------------------------------------------


def test_the_issues_case_is_announced_as_large_with_the_way_out(caplog):
    """Exact codes for 30,000 rows at K = 32,768, d = 768 are estimated as large and logged as
    a warning naming --amortisation sample; the default sample there (a third of an
    encode+decode pass) and on a small SAE is logged as information only."""
    big = plan_amortisation("all", codes_mode="own", population=30_000)
    cost = exact_code_cost(30_000, 32_768, 768)
    assert cost.large and cost.flops == pytest.approx(30_000 * 20 * 4 * 32_768 * 768)
    with caplog.at_level(logging.INFO, logger="dictopt.check.amortisation"):
        line = announce(big, 32_768, 768)
    assert "exact codes for all 30,000 rows at K = 32,768" in line and "GB" in line
    assert caplog.records[-1].levelno == logging.WARNING
    assert "--amortisation sample" in caplog.records[-1].getMessage()
    default = plan_amortisation(None, codes_mode="own", population=30_000)
    assert default.cost(32_768, 768).flops == pytest.approx(cost.flops * 512 / 30_000)
    assert not default.cost(32_768, 768).large
    caplog.clear()
    small = plan_amortisation(None, codes_mode="own", population=N)
    with caplog.at_level(logging.INFO, logger="dictopt.check.amortisation"):
        announce(small, 48, 16)
    assert caplog.records[-1].levelno == logging.INFO
    assert f"about {DEFAULT_SAMPLE_ROWS}" in caplog.records[-1].getMessage()


# ---- command line -----------------------------------------------------------------------------


@pytest.fixture
def saved(small_sae, tmp_path):
    sae, x, _, _ = small_sae
    folder = save_dictionary(sae, tmp_path / "sae")
    npy = tmp_path / "acts.npy"
    np.save(npy, x)
    return folder, npy


@pytest.mark.parametrize("bad", [["maybe"], ["sample"], ["sample", "0"], ["sample", "x"],
                                 ["off", "3"]])
def test_cli_bad_amortisation_exits_2_with_one_line_before_any_work(bad, tmp_path, capsys):
    # the dictionary and activations do not even exist: the option is refused first
    rc = main(["check", str(tmp_path / "no_sae"), "--activations", str(tmp_path / "no.npy"),
               "--amortisation", *bad])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "amortisation" in err and "sample N" in err


def test_cli_bad_coder_memory_exits_2(tmp_path, capsys):
    rc = main(["check", str(tmp_path / "no_sae"), "--activations", str(tmp_path / "no.npy"),
               "--coder-memory", "lots"])
    assert rc == 2
    assert "2G" in capsys.readouterr().err


def test_cli_amortisation_off_sample_and_all(saved, tmp_path, capsys):
    folder, npy = saved
    out = tmp_path / "r.json"
    base = ["check", str(folder), "--activations", str(npy), "--quiet", "--no-hull",
            "--certify", "0", "--json", str(out)]
    assert main([*base, "--amortisation", "off"]) == 0
    assert json.loads(out.read_text())["summary"]["amortisation"] is None
    assert "amortisation gap" not in capsys.readouterr().out
    assert main([*base, "--amortisation", "sample", "300", "--coder-memory", "64M"]) == 0
    text = capsys.readouterr().out
    am = json.loads(out.read_text())["summary"]["amortisation"]
    assert am["rows"] == "sample" and abs(am["sample_size"] - 300) < 5 * math.sqrt(300)
    assert am["loss_gap_se"] > 0
    # the plan is printed before the report
    assert text.index("amortisation gap: exact codes for a sample of about 300 of 4,000") \
        < text.index("dictopt check:")
    assert main([*base, "--amortisation", "all"]) == 0
    am = json.loads(out.read_text())["summary"]["amortisation"]
    assert am["rows"] == "all" and am["sample_size"] == N and am["loss_gap_se"] == 0
