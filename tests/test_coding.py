"""The exact nonnegative-lasso coder (THEORY C1), cross-checked against cvxpy and scikit-learn."""

from __future__ import annotations

import logging
import os
from unittest import mock

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Lasso

from dictopt import DictoptInputError
from dictopt.problem import Dictionary
from dictopt.solvers.coding import iter_codes, kkt_violations, solve_codes


def _problem(seed: int, n: int, k: int, d: int, *, sparsity: float = 0.3, noise: float = 0.05):
    """Random unit atoms and data made of sparse nonnegative codes plus noise and a bias."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((k, d))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = rng.random((n, k)) * (rng.random((n, k)) < sparsity)
    b = rng.standard_normal(d)
    x = A @ D + b + noise * rng.standard_normal((n, d))
    return D, x, b


def _lasso_objective(D, x, b, a, lam):
    r = x - b - a @ D
    return 0.5 * (r**2).sum(axis=1) + lam * a.sum(axis=1)


def _cvxpy_codes(D: np.ndarray, x: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """Per point: min_{a ≥ 0} ½‖x − b − aD‖² + λ Σ a with CLARABEL (x a Parameter)."""
    k, d = D.shape
    xp = cp.Parameter(d)
    a = cp.Variable(k, nonneg=True)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(xp - b - D.T @ a) + lam * cp.sum(a)))
    out = np.zeros((x.shape[0], k))
    for n in range(x.shape[0]):
        xp.value = x[n]
        prob.solve(
            solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10
        )
        assert prob.status == cp.OPTIMAL
        out[n] = np.clip(a.value, 0, None)
    return out


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 6),
    k=st.integers(1, 10),
    d=st.integers(2, 8),
    log_lam=st.floats(-2.5, 0.5),
)
@settings(max_examples=25, deadline=None)
def test_matches_cvxpy_on_random_problems(seed, n, k, d, log_lam):
    """Same objective (and, the lasso being strictly convex here, same codes) as CLARABEL."""
    lam = 10.0**log_lam
    D, x, b = _problem(seed, n, k, d)
    res = solve_codes(D, x, lam, bias=b)
    assert res.converged and res.kkt_residual <= 1e-9
    ours = res.codes.numpy()
    ref = _cvxpy_codes(D, x, b, lam)
    f_ours, f_ref = _lasso_objective(D, x, b, ours, lam), _lasso_objective(D, x, b, ref, lam)
    # Our KKT certificate proves optimality: the interior-point answer can only be worse.
    assert np.all(f_ours <= f_ref + 1e-9 * (1 + np.abs(f_ref)))
    assert np.allclose(f_ours, f_ref, rtol=1e-7, atol=1e-8)
    if k <= d:  # D has full row rank: the objective is strongly convex, codes are unique
        # f(ref) − f(a*) ≥ ½ σ_min(D Dᵀ) ‖ref − a*‖², so CLARABEL's own suboptimality bounds how
        # far its codes may be from ours (a fixed atol failed for ill-conditioned D).
        sigma = np.linalg.eigvalsh(D @ D.T)[0]
        far = np.sqrt(2 * np.clip(f_ref - f_ours, 0, None) / sigma)
        assert np.all(np.linalg.norm(ours - ref, axis=1) <= far + 1e-8)


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-2.0, 0.0))
@settings(max_examples=10, deadline=None)
def test_matches_sklearn_lasso_positive(seed, log_lam):
    """sklearn minimises 1/(2 d)‖y − Xw‖² + α‖w‖₁ (d = n_samples = the data dimension),
    so α = λ / d gives our problem; the codes agree to sklearn's tolerance."""
    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=8, k=12, d=10)
    ours = solve_codes(D, x, lam, bias=b).codes.numpy()
    d = D.shape[1]
    for n in range(x.shape[0]):
        model = Lasso(
            alpha=lam / d, positive=True, fit_intercept=False, tol=1e-14, max_iter=100_000
        )
        model.fit(D.T, x[n] - b)
        assert np.allclose(ours[n], model.coef_, atol=1e-6)


def test_kkt_residual_reported_is_the_truth():
    D, x, b = _problem(1, n=300, k=40, d=16, sparsity=0.1)
    lam = 0.05
    res = solve_codes(D, x, lam, bias=b, tol=1e-10)
    viol = kkt_violations(D, x, res.codes, lam, bias=b)
    assert viol.shape == (300, 40)
    assert float(viol.max()) / lam == pytest.approx(res.kkt_residual, rel=1e-6, abs=1e-15)
    assert res.kkt_residual <= 1e-10
    assert float(res.codes.min()) >= 0


def test_kkt_violations_measures_what_c1_says():
    """A hand-made case: one atom e₁, x = 3 e₁, λ = 1: optimum a = 2 (g = 1 = λ)."""
    D = np.array([[1.0, 0.0]])
    x = np.array([[3.0, 0.0]])
    assert float(kkt_violations(D, x, [[2.0]], 1.0)) == pytest.approx(0.0)
    assert float(kkt_violations(D, x, [[1.0]], 1.0)) == pytest.approx(1.0)  # g = 2: |2 − 1|
    assert float(kkt_violations(D, x, [[0.0]], 1.0)) == pytest.approx(2.0)  # g = 3 > λ
    assert float(kkt_violations(D, -x, [[0.0]], 1.0)) == pytest.approx(0.0)  # g = −3 ≤ λ
    assert float(solve_codes(D, x, 1.0).codes) == pytest.approx(2.0, abs=1e-12)


def test_warm_start_and_batches_give_the_same_codes():
    D, x, b = _problem(2, n=200, k=30, d=12)
    lam = 0.1
    cold = solve_codes(D, x, lam, bias=b)
    batched = solve_codes(D, x, lam, bias=b, batch_size=37)
    noisy_init = cold.codes + 0.1 * torch.rand_like(cold.codes)
    warm = solve_codes(D, x, lam, bias=b, init=noisy_init)
    for r in (batched, warm):
        assert r.converged
        assert torch.allclose(r.codes, cold.codes, atol=1e-8)


def test_large_lambda_gives_zero_codes():
    D, x, b = _problem(3, n=50, k=20, d=8)
    lam_max = float(((x - b) @ D.T).max())
    res = solve_codes(D, x, lam_max * 1.001, bias=b)
    assert res.converged and float(res.codes.abs().max()) == 0.0
    assert float(solve_codes(D, x, lam_max * 0.9, bias=b).codes.max()) > 0


def test_single_atom_has_closed_form():
    """K = 1: a = max(d · y − λ, 0) / ‖d‖²."""
    rng = np.random.default_rng(4)
    atom = rng.standard_normal((1, 5)) * 2.5
    x = rng.standard_normal((100, 5)) * 3
    lam = 0.7
    expected = np.clip(x @ atom.T - lam, 0, None) / (atom**2).sum()
    assert np.allclose(solve_codes(atom, x, lam).codes.numpy(), expected, atol=1e-12)


def test_duplicate_atoms_are_handled():
    """Duplicate atoms make G_PP singular; the optimum splits codes freely between copies,
    so only the total and the objective are unique."""
    D, x, b = _problem(5, n=60, k=6, d=8)
    Ddup = np.vstack([D, D[:2]])
    lam = 0.05
    single = solve_codes(D, x, lam, bias=b).codes.numpy()
    res = solve_codes(Ddup, x, lam, bias=b)
    assert res.converged and res.kkt_residual <= 1e-9
    a = res.codes.numpy()
    merged = a[:, :6].copy()
    merged[:, :2] += a[:, 6:]
    assert np.allclose(merged, single, atol=1e-7)
    assert np.allclose(
        _lasso_objective(Ddup, x, b, a, lam), _lasso_objective(D, x, b, single, lam), atol=1e-10
    )


def test_more_atoms_than_dimensions_at_small_lambda():
    """Supports that reach d atoms (rank-deficient candidate faces) still converge."""
    D, x, b = _problem(6, n=100, k=48, d=6, sparsity=0.5, noise=0.3)
    res = solve_codes(D, x, 1e-3, bias=b)
    assert res.converged and res.kkt_residual <= 1e-9


@given(
    seed=st.integers(0, 10_000),
    k=st.integers(8, 40),
    d=st.integers(6, 12),
    log_lam=st.floats(-3.0, -0.5),
    n_dup=st.integers(0, 3),
)
@example(seed=368, k=38, d=7, log_lam=-3.0, n_dup=2)  # both copies of atom 0 added at once
@settings(max_examples=12, deadline=None)
def test_adding_several_atoms_per_step_changes_nothing(seed, k, d, log_lam, n_dup):
    """Large supports (the multiple-add path, its single-atom fallback, supports grouped by
    size for ≥ 512 points, duplicate atoms) give the optimum that adding one atom per step
    gives: both certified by C1, equal objectives."""
    import dictopt.lasso as coding

    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=600, k=k, d=d, sparsity=0.5, noise=0.2)
    D = np.vstack([D, D[:n_dup]])
    many = solve_codes(D, x, lam, bias=b)
    with mock.patch.object(coding, "MAX_ADD", 1):
        one = solve_codes(D, x, lam, bias=b)
    assert many.converged and one.converged and many.kkt_residual <= 1e-9
    f_many = _lasso_objective(D, x, b, many.codes.numpy(), lam)
    f_one = _lasso_objective(D, x, b, one.codes.numpy(), lam)
    assert np.allclose(f_many, f_one, rtol=1e-9, atol=1e-10)
    assert (many.codes > 0).sum(dim=1).max() > 3  # supports large enough for multiple adds


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-3.0, -2.0))
@settings(max_examples=4, deadline=None)
def test_large_supports_add_many_atoms_per_step_and_reach_the_optimum(seed, log_lam):
    """Supports above 2 × ADD_SCALE_SUPPORT atoms (K = 4,096-like regime, scaled down) take
    the large-add path, its keep-the-positive retry and its single-atom fallback; the codes
    are certified by C1 and have the objective of one atom per step and of CLARABEL."""
    import dictopt.lasso as coding

    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=40, k=240, d=160, sparsity=0.4, noise=0.3)
    many = solve_codes(D, x, lam, bias=b)
    assert many.converged and many.kkt_residual <= 1e-9
    sizes = (many.codes > 0).sum(dim=1)
    assert int(sizes.max()) >= 2 * coding.ADD_SCALE_SUPPORT  # the large-add regime ran
    with mock.patch.object(coding, "MAX_ADD", 1), \
            mock.patch.object(coding, "ADD_SCALE_SUPPORT", 10**9):
        one = solve_codes(D, x, lam, bias=b)
    assert one.converged
    # k > d: not strongly convex, so compare objectives with CLARABEL on a few points
    f_many, f_ref = _assert_same_objective(D, x, b, lam, many.codes, one.codes, n_ref=3)
    assert np.allclose(f_many[:3], f_ref, rtol=1e-7, atol=1e-8)


def test_not_converging_warns(caplog):
    D, x, b = _problem(7, n=50, k=30, d=8)
    with caplog.at_level(logging.WARNING, logger="dictopt.solvers.coding"):
        res = solve_codes(D, x, 1e-2, bias=b, max_iter=1)
    assert not res.converged and res.kkt_residual > 1e-9
    assert "not converged" in caplog.text


def test_accepts_float32_and_torch_input_and_computes_in_float64():
    D, x, b = _problem(8, n=20, k=10, d=6)
    res = solve_codes(torch.tensor(D, dtype=torch.float32), torch.tensor(x), 0.1, bias=b)
    assert res.codes.dtype == torch.float64 and res.converged


def test_dictionary_optimal_codes_use_the_solver():
    D, x, b = _problem(9, n=30, k=10, d=6)
    dic = Dictionary(atoms=D, bias=b, lam=0.1)
    codes = dic.optimal_codes(x)
    assert torch.allclose(codes, solve_codes(D, x, 0.1, bias=b).codes)
    chunks = list(iter_codes(dic, x))
    assert torch.allclose(torch.cat([r.codes for _, r in chunks]), codes)


# -------------------------------------------------------------------------------- bad input


def test_bad_input_is_named():
    D, x, b = _problem(10, n=5, k=4, d=3)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(DictoptInputError, match="row 3"):
        solve_codes(D, bad, 0.1)
    bad[3, 1] = np.inf
    with pytest.raises(DictoptInputError, match="row 3"):
        solve_codes(D, bad, 0.1)
    with pytest.raises(DictoptInputError, match="width"):
        solve_codes(D, x[:, :2], 0.1)
    with pytest.raises(DictoptInputError, match="lam"):
        solve_codes(D, x, 0.0)
    with pytest.raises(DictoptInputError, match="lam"):
        solve_codes(D, x, -1.0)
    with pytest.raises(DictoptInputError, match="empty"):
        solve_codes(D, x[:0], 0.1)
    zero = D.copy()
    zero[2] = 0
    with pytest.raises(DictoptInputError, match="atom 2 is zero"):
        solve_codes(zero, x, 0.1)
    with pytest.raises(DictoptInputError, match="bias"):
        solve_codes(D, x, 0.1, bias=np.zeros(5))
    with pytest.raises(DictoptInputError, match="init"):
        solve_codes(D, x, 0.1, init=np.zeros((5, 3)))
    with pytest.raises(DictoptInputError, match="tol"):
        solve_codes(D, x, 0.1, tol=0)
    with pytest.raises(DictoptInputError, match="codes"):
        kkt_violations(D, x, -np.ones((5, 4)), 0.1)


# ---- the memory budget (issue #21) ----------------------------------------------------------

_RSS_SCRIPT = r"""
import sys, torch
torch.set_num_threads(1)
from dictopt.lasso import solve_codes

def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key + ":"))

g = torch.Generator().manual_seed(0)
K, d, n, budget = 2048, 64, 200, int(sys.argv[1])
D = torch.randn(K, d, generator=g, dtype=torch.float64)
D /= D.norm(dim=1, keepdim=True)
idx = torch.randint(0, K, (n, 8), generator=g)
x = (torch.rand(n, 8, 1, generator=g, dtype=torch.float64) * D[idx]).sum(1)
x += 0.01 * torch.randn(n, d, generator=g, dtype=torch.float64)
solve_codes(D[:8], x[:2], 0.05)  # lazy initialisation outside the measurement
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
base = status("VmRSS")
r = solve_codes(D, x, 0.05, memory_budget=budget)
assert r.converged
print(status("VmHWM") - base - r.codes.numel() * 8)
"""


def _coder_peak_bytes(budget: int) -> int:
    """Peak resident memory added by one solve (K = 2,048, d = 64, 200 rows), less the
    returned codes, measured in a fresh process (the kernel's peak, reset just before the
    solve). glibc's mmap threshold is fixed so that freed blocks go back to the system and the
    peak is the working set, not heap slack."""
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(budget)], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                    reason="measures the peak resident size through Linux's /proc")
def test_coder_working_set_stays_within_its_budget():
    """An 8 MiB budget holds the measured working set (the K × K Gram matrix alone is
    34 MB in float64, 17 MB in the float32 that the face-inverse path reads, the float64 one
    being formed only for points handed back); an unbounded solve of the same rows takes over
    4× the budget (measured 39 MB), so the measurement can tell the two apart."""
    budget = 8 * 1024**2
    bounded = _coder_peak_bytes(budget)
    unbounded = _coder_peak_bytes(10**12)
    assert bounded <= budget, (bounded, budget)
    assert unbounded > 4 * budget, unbounded


@settings(max_examples=60, deadline=None)
@given(K=st.integers(1, 300_000), d=st.integers(1, 5000), budget=st.integers(10**5, 10**11))
def test_plan_fits_the_budget_whatever_K(K, d, budget):
    """The planned working set fits the budget unless a single point's dense vectors alone
    exceed it; the Gram matrix is formed only when it takes at most a quarter."""
    from dictopt.lasso import DENSE_TENSORS, GROW_MIN_ATOMS, plan_coder

    plan = plan_coder(K, d, budget)
    held = 8 * K * K + (4 * K * K + 4 * K * d if K >= GROW_MIN_ATOMS else 0)
    assert plan.gram == (held <= budget // 4)
    assert 1 <= plan.batch_size <= 8192
    one_point = 8 * (DENSE_TENSORS * K + 3 * d) + plan.face_bytes
    if plan.batch_size > 1 or one_point <= budget - (held if plan.gram else 0):
        assert plan.working_set(K, d) <= budget


def test_face_groups_fit_their_share_whatever_the_support():
    from dictopt.lasso import FACE_TENSORS, _Gram, plan_coder

    D = torch.randn(500, 40, dtype=torch.float64)
    for gram in (True, False):
        plan = plan_coder(500, 40, 10**6 if not gram else 10**7)
        assert plan.gram == gram
        G = _Gram(D, plan)
        for S in (1, 10, 40, 200):
            rows = G.face_rows(S)
            per_point = 8 * S * (FACE_TENSORS * S + (0 if gram else 40))
            assert rows == 1 or rows * per_point <= plan.face_bytes


def test_bounded_coder_equals_unbounded():
    """Small budgets (smaller batches; then no Gram matrix and face solves in groups) give
    the unbounded coder's codes: same supports, values equal to 1e-11, both certified."""
    from dictopt.lasso import plan_coder

    D, x, b = _problem(5, 300, 1024, 32, sparsity=0.005, noise=0.01)
    ref = solve_codes(D, x, 0.05, bias=b, memory_budget=10**10)
    assert plan_coder(1024, 32, 10**10).batch_size >= 300
    for budget in (55 * 10**6, 4 * 10**6):  # the Gram and its float32 copies: 12.7 MB
        plan = plan_coder(1024, 32, budget)
        assert plan.batch_size < 300 and plan.gram == (budget > 8 * 10**6)
        got = solve_codes(D, x, 0.05, bias=b, memory_budget=budget)
        assert got.converged
        assert torch.equal(got.codes > 0, ref.codes > 0)
        assert float((got.codes - ref.codes).abs().max()) <= 1e-11


def test_memory_budget_from_argument_environment_and_default(monkeypatch):
    from dictopt.lasso import (
        DEFAULT_MEMORY_FRACTION,
        MEMORY_ENV,
        available_memory,
        coder_memory_budget,
    )

    assert coder_memory_budget(12345) == 12345
    assert coder_memory_budget("2G") == 2 * 1024**3
    assert coder_memory_budget("512MB") == 512 * 1024**2
    assert coder_memory_budget("1.5KiB") == 1536
    monkeypatch.setenv(MEMORY_ENV, "300M")
    assert coder_memory_budget() == 300 * 1024**2
    monkeypatch.delenv(MEMORY_ENV)
    expected = DEFAULT_MEMORY_FRACTION * available_memory()
    assert coder_memory_budget() == pytest.approx(expected, rel=0.2)
    for bad in ("lots", "0", "-1G", "", 0, -5, 2.5, True):
        with pytest.raises(DictoptInputError, match="memory"):
            coder_memory_budget(bad)


def _assert_face_path_is_optimal(D, x, b, lam):
    """The large-support path (forced at any K) certified by C1, with the objective of the
    from-scratch path on every row and at most CLARABEL's on the first two."""
    import dictopt.lasso as coding

    with mock.patch.object(coding, "GROW_MIN_ATOMS", 0):
        grown = solve_codes(D, x, lam, bias=b)
    with mock.patch.object(coding, "GROW_MIN_ATOMS", 10**9):
        scratch = solve_codes(D, x, lam, bias=b)
    assert grown.converged and grown.kkt_residual <= 1e-9
    assert float(kkt_violations(D, x, grown.codes, lam, bias=b).max()) / lam <= 1e-9
    _assert_same_objective(D, x, b, lam, grown.codes, scratch.codes, n_ref=2)


def _assert_same_objective(D, x, b, lam, codes, other, n_ref):
    """``codes`` and ``other`` reach the same lasso objective on every row, and ``codes`` at
    most CLARABEL's on the first ``n_ref`` rows; returns ``codes``' objectives and CLARABEL's."""
    f = _lasso_objective(D, x, b, codes.numpy(), lam)
    f_other = _lasso_objective(D, x, b, other.numpy(), lam)
    assert np.allclose(f, f_other, rtol=1e-9, atol=1e-10)
    ref = _cvxpy_codes(D, x[:n_ref], b, lam)
    f_ref = _lasso_objective(D, x[:n_ref], b, ref, lam)
    assert np.all(f[:n_ref] <= f_ref + 1e-9 * (1 + np.abs(f_ref)))
    return f, f_ref


@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 60),
    d=st.integers(2, 24),
    log_lam=st.floats(-3.0, 0.0),
    n_dup=st.integers(0, 3),
)
@example(seed=368, k=38, d=7, log_lam=-3.0, n_dup=2)  # duplicates join at once: handed back
@example(seed=1, k=60, d=24, log_lam=-3.0, n_dup=0)  # supports near d, many multiple adds
@settings(max_examples=20, deadline=None)
def test_face_inverse_path_gives_the_optimum(seed, k, d, log_lam, n_dup):
    """The large-support path (face inverses held across steps, forced here at small K) gives
    codes certified by C1 with the objective of the from-scratch path and of CLARABEL,
    whatever the supports (duplicate atoms, supports up to d, more atoms than dimensions)."""
    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=40, k=k, d=d, sparsity=0.5, noise=0.2)
    D = np.vstack([D, D[: min(n_dup, k)]])
    _assert_face_path_is_optimal(D, x, b, lam)


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-1.5, -0.5), group=st.integers(1, 50))
@settings(max_examples=10, deadline=None)
def test_grow_codes_alone_reaches_the_optimum(seed, log_lam, group):
    """:func:`dictopt.faceinverse.grow_codes` on its own (any group size), with distinct random
    atoms and supports up to ~95 % of d: no point is handed back, codes are nonnegative, and
    every point satisfies C1 to rounding (the inverses held across adds and drops stay
    accurate; solve_codes would finish any point above its tolerance)."""
    from dictopt.faceinverse import grow_codes

    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=50, k=160, d=80, sparsity=0.3, noise=0.3)
    Dt = torch.from_numpy(D)
    y = torch.from_numpy(x - b)
    q = y @ Dt.T - lam
    res = grow_codes(Dt @ Dt.T, Dt, q, lam, 1e-9, 10_000, group)
    assert float(res.codes.min()) >= 0
    assert not bool(res.handed.any())
    viol = kkt_violations(D, x, res.codes, lam, bias=b).amax(dim=1) / lam
    assert float(viol.max()) <= 1e-8


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-1.5, -0.5), group=st.integers(4, 60))
@example(seed=578, log_lam=-1.5, group=1)  # a float32 face solve got a sign wrong
@example(seed=7, log_lam=-1.5, group=42)  # float32 inverses drifted at S ≈ 0.9 d
@settings(max_examples=10, deadline=None)
def test_float32_inverses_give_the_float64_codes(seed, log_lam, group):
    """The float32 first pass of :func:`dictopt.faceinverse.grow_codes` (rough gradients,
    precise solves near the optimum, the float64 run for points it hands back) gives the
    codes of the float64 method alone: same supports, values to 1e-10, C1 to rounding."""
    from dictopt.faceinverse import _grow_all, grow_codes

    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=50, k=160, d=80, sparsity=0.3, noise=0.3)
    Dt = torch.from_numpy(D)
    q = torch.from_numpy(x - b) @ Dt.T - lam
    G = Dt @ Dt.T
    mixed = grow_codes(G, Dt, q, lam, 1e-9, 10_000, group)
    exact = _grow_all(G, Dt, q, lam, 1e-9, 10_000, group, low=False)
    assert not bool(mixed.handed.any()) and not bool(exact.handed.any())
    assert torch.equal(mixed.codes > 0, exact.codes > 0)
    assert float((mixed.codes - exact.codes).abs().max()) <= 1e-10
    viol = kkt_violations(D, x, mixed.codes, lam, bias=b).amax(dim=1) / lam
    assert float(viol.max()) <= 1e-9


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-1.0, -0.3), group=st.integers(4, 60),
       idle=st.integers(0, 40))
@settings(max_examples=10, deadline=None)
def test_float32_pass_alone_on_well_conditioned_faces(seed, log_lam, group, idle):
    """On well-conditioned faces (supports of at most half of d) the float32 pass alone
    reaches the optimum: it hands no point back and its codes are the float64 method's.
    ``idle`` points have zero data (done at the first step), so groups shed finished points
    while others still grow (the rows of every per-point tensor must stay aligned)."""
    from dictopt.faceinverse import _grow_all

    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=50, k=160, d=80, sparsity=0.05, noise=0.1)
    x[:idle] = b  # y = 0: zero codes
    Dt = torch.from_numpy(D)
    q = torch.from_numpy(x - b) @ Dt.T - lam
    G = Dt @ Dt.T
    low = _grow_all(G.float(), Dt, q, lam, 1e-9, 10_000, group, low=True)
    exact = _grow_all(G, Dt, q, lam, 1e-9, 10_000, group, low=False)
    assert int((low.codes > 0).sum(dim=1).max()) <= 0.5 * 80
    assert not bool(low.handed.any())
    assert not bool(low.codes[:idle].any())
    assert torch.equal(low.codes > 0, exact.codes > 0)
    assert float((low.codes - exact.codes).abs().max()) <= 1e-10


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-2.0, -0.5), cos=st.floats(0.9, 0.9999))
@settings(max_examples=8, deadline=None)
def test_face_inverse_path_with_nearly_parallel_atoms(seed, log_lam, cos):
    """Pairs of atoms with cosine ``cos`` (poorly conditioned faces: the float32 inverses
    hand such points to the float64 run) still give certified codes with the from-scratch
    path's objective and CLARABEL's."""
    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=30, k=40, d=24, sparsity=0.4, noise=0.2)
    rng = np.random.default_rng(seed + 1)
    E = rng.standard_normal(D.shape)
    E -= (E * D).sum(axis=1, keepdims=True) * D  # orthogonal to each atom
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    D = np.vstack([D, cos * D + np.sqrt(1 - cos**2) * E])
    _assert_face_path_is_optimal(D, x, b, lam)


def _grow_q(seed: int, lam: float, *, n: int = 40, k: int = 160, d: int = 80,
            sparsity: float = 0.1, noise: float = 0.2):
    D, x, b = _problem(seed, n=n, k=k, d=d, sparsity=sparsity, noise=noise)
    Dt = torch.from_numpy(D)
    q = torch.from_numpy(x - b) @ Dt.T - lam
    return D, x, b, Dt, q


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-1.5, -0.3), group=st.integers(1, 50),
       kind=st.sampled_from(["optimal", "perturbed", "random", "zero", "full"]))
@example(seed=0, log_lam=-1.5, group=7, kind="random")  # seeds far from the optimum
@settings(max_examples=15, deadline=None)
def test_seeded_grow_codes_give_the_cold_codes(seed, log_lam, group, kind):
    """:func:`dictopt.faceinverse.grow_codes` from a seed support (the optimal one, a
    perturbed one, random atoms, none, or every atom) gives the codes of the cold start:
    same supports, values to 1e-10, C1 to rounding. Only the work may depend on the seed."""
    from dictopt.faceinverse import grow_codes, seed_from_codes

    lam = 10.0**log_lam
    D, x, b, Dt, q = _grow_q(seed, lam)
    G = Dt @ Dt.T
    cold = grow_codes(G, Dt, q, lam, 1e-9, 10_000, group)
    rng = np.random.default_rng(seed)
    if kind == "optimal":
        init = cold.codes.clone()
    elif kind == "perturbed":  # drop some optimal atoms, add some others
        keep = torch.from_numpy(rng.random(cold.codes.shape) < 0.7)
        extra = torch.from_numpy(rng.random(cold.codes.shape) < 0.05)
        init = torch.where(keep, cold.codes, 0.0) + extra.double()
    elif kind == "random":
        init = torch.from_numpy(rng.random(cold.codes.shape) * (rng.random(cold.codes.shape)
                                                               < 0.2))
    elif kind == "zero":
        init = torch.zeros_like(cold.codes)
    else:
        init = torch.ones_like(cold.codes)
    warm = grow_codes(G, Dt, q, lam, 1e-9, 10_000, group, seed_from_codes(init, q, lam, 1e-9))
    assert float(warm.codes.min()) >= 0
    assert not bool(warm.handed.any()) and not bool(cold.handed.any())
    assert torch.equal(warm.codes > 0, cold.codes > 0)
    assert float((warm.codes - cold.codes).abs().max()) <= 1e-10
    viol = kkt_violations(D, x, warm.codes, lam, bias=b).amax(dim=1) / lam
    assert float(viol.max()) <= 1e-9


def test_seed_from_codes_orders_and_caps_the_supports():
    """A seed lists each point's support by ``q`` (largest first), at most the 90 % quantile
    of the support sizes wide; a point whose seed has no violator at zero codes gets none."""
    from dictopt.faceinverse import SEED_QUANTILE, seed_from_codes

    K = 12
    q = torch.linspace(-1, 1, K).repeat(11, 1)
    init = torch.zeros(11, K)
    for n in range(10):  # supports of 1..10 atoms, the last ones (largest q)
        init[n, K - 1 - n :] = 1.0
    init[10, :3] = 1.0  # atoms with q < 0 only
    atoms, take = seed_from_codes(init, q, lam=0.1, tol=1e-9)
    width = int(torch.quantile(torch.tensor([*range(1, 11), 3.0]).double(), SEED_QUANTILE))
    assert atoms.shape == (11, width)
    for n in range(10):
        m = min(n + 1, width)
        assert take[n].tolist() == [True] * m + [False] * (width - m)
        assert atoms[n, :m].tolist() == list(range(K - 1, K - 1 - m, -1))
    assert not bool(take[10].any())


@given(seed=st.integers(0, 10_000), log_lam=st.floats(-1.5, -0.5))
@settings(max_examples=6, deadline=None)
def test_warm_started_solve_codes_equals_the_cold_solve(seed, log_lam):
    """``solve_codes(..., init=...)`` on the face-inverse path (forced at small K) with an
    encoder's codes as the warm start: certified, and the cold solve's codes to 1e-10."""
    import dictopt.lasso as coding

    lam = 10.0**log_lam
    D, x, b = _problem(seed, n=60, k=120, d=40, sparsity=0.1, noise=0.2)
    own = np.maximum((x - b) @ D.T - 0.3, 0)  # a thresholded encoder
    with mock.patch.object(coding, "GROW_MIN_ATOMS", 0):
        cold = solve_codes(D, x, lam, bias=b)
        warm = solve_codes(D, x, lam, bias=b, init=own)
    assert cold.converged and warm.converged
    assert warm.kkt_residual <= 1e-9
    assert torch.equal(warm.codes > 0, cold.codes > 0)
    assert float((warm.codes - cold.codes).abs().max()) <= 1e-10
