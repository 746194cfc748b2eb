"""Classical dictionary learning: monotone exact alternation, recovery, first-order conditions,
agreement with the cvxpy reference and the scikit-learn wrapper's λ conversion.

Normalisation of the first-order residuals (as in :mod:`dictopt.solvers.classical`): all are
relative to λ. C1 is ``max |violation| / λ``; C2 is ``max_k ‖(I − d_k d_kᵀ) G_k‖ / λ`` with
``G_k = (1/N) Σ_n a_kn r_n`` (the Riemannian gradient of L in d_k, divided by λ); C3 is
``‖(1/N) Σ_n r_n‖ / λ`` (the gradient of L in b, divided by λ).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt import DictoptInputError
from dictopt.data.worlds import make_world
from dictopt.metrics import atom_recovery
from dictopt.solvers.classical import atom_step, first_order_residuals, fit_classical, fit_sklearn
from dictopt.solvers.coding import kkt_violations, solve_codes
from dictopt.solvers.convex import fit_cvxpy
from dictopt.solvers.registry import get_solver


def _world(n: int, d: int, k: int, p: float, seed: int = 0):
    return make_world("independent", seed=seed, n=n, d=d, k=k, p=p, bias_norm=1.0, noise=0.01)


def _assert_recovers(world, lam: float, *, min_fraction: float = 0.95) -> None:
    fit = fit_classical(world.x, K=world.atoms.shape[0], lam=lam, progress=False, grad_tol=1e-6)
    m = fit.meta
    rec = atom_recovery(fit.atoms, world.atoms, threshold=0.99)
    assert rec.fraction >= min_fraction, f"recovered {rec.fraction:.3f}"
    assert m["c1"] <= 1e-6 and m["c2"] <= 1e-5 and m["c3"] <= 1e-5, m
    # Recompute the residuals independently of the solver's bookkeeping.
    x = torch.as_tensor(world.x)
    codes = solve_codes(fit.atoms, x, lam, bias=fit.bias, tol=1e-10)
    res = first_order_residuals(x, fit.atoms, fit.bias, codes.codes, lam, codes.kkt_residual)
    assert res.c1 <= 1e-6 and res.c2 <= 1e-5 and res.c3 <= 1e-5, res
    h = np.array(m["history"])
    assert np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1]))


def test_recovers_small_independent_world():
    """Fast version of the recovery check: 24 features in superposition in d = 16."""
    _assert_recovers(_world(n=800, d=10, k=15, p=0.12), lam=0.05)


@pytest.mark.slow
def test_recovers_independent_world_d64_k128():
    """The must-show: d = 64, 128 true atoms, 20 000 points: ≥ 95 % recovered at cos ≥ 0.99,
    C1 ≤ 1e-6, C2 and C3 ≤ 1e-5 (relative to λ)."""
    _assert_recovers(_world(n=20_000, d=64, k=128, p=0.04), lam=0.05)


@given(seed=st.integers(0, 1000), K=st.integers(1, 8), log_lam=st.floats(-2.0, -0.5))
@settings(max_examples=4, deadline=None)
def test_objective_never_increases(seed, K, log_lam):
    """Every step is an exact minimiser, so the recorded loss is non-increasing."""
    world = _world(n=150, d=6, k=5, p=0.3, seed=seed)
    fit = fit_classical(world.x, K=K, lam=10.0**log_lam, seed=seed, max_iter=15, progress=False)
    h = np.array(fit.meta["history"])
    assert len(h) >= 1
    assert np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1])), np.diff(h).max()
    assert torch.allclose(fit.atoms.norm(dim=1), torch.ones(K, dtype=fit.atoms.dtype))


def test_atom_step_is_the_exact_minimiser_on_the_sphere():
    """With codes fixed, no rotation of a single atom lowers the loss after the atom step."""
    rng = np.random.default_rng(0)
    world = _world(n=300, d=6, k=4, p=0.3)
    x = torch.as_tensor(world.x)
    D = torch.as_tensor(rng.standard_normal((4, 6)))
    D = D / D.norm(dim=1, keepdim=True)
    b = x.mean(dim=0)
    lam = 0.05
    A = solve_codes(D, x, lam, bias=b).codes
    D_new, _ = atom_step(x, D, b, A, lam)

    def loss(atoms):
        return first_order_residuals(x, atoms, b, A, lam, 0.0).loss

    base = loss(D_new)
    assert base <= loss(D)
    for k in range(4):  # block-coordinate: atom k is exact given the others (updated last)
        for _ in range(20):
            trial = D_new.clone()
            trial[k] += 0.05 * torch.as_tensor(rng.standard_normal(6))
            trial[k] /= trial[k].norm()
            if k == 3:  # the last atom updated sees every other atom in its final state
                assert loss(trial) >= base - 1e-12


def test_unused_atom_is_reinitialised_at_the_worst_point():
    """An atom with zero codes everywhere is moved along the residual of the worst-reconstructed
    point (loss unchanged: its codes are zero), but only where that residual exceeds λ."""
    world = _world(n=200, d=5, k=3, p=0.3)
    x = torch.as_tensor(world.x)
    lam = 0.05
    D = torch.as_tensor(world.atoms).clone()
    b = x.mean(dim=0)
    A = solve_codes(D, x, lam, bias=b).codes
    A[:, 2] = 0.0  # atom 2 unused
    D_new, n_new = atom_step(x, D, b, A, lam)
    R = x - b - A @ D_new
    worst = int(R.norm(dim=1).argmax())
    assert n_new == 1
    assert torch.allclose(D_new[2], R[worst] / R[worst].norm(), atol=1e-12)
    loss = first_order_residuals(x, D_new, b, A, lam, 0.0).loss
    D_used = D_new.clone()
    D_used[2] = D[2]
    assert loss == pytest.approx(first_order_residuals(x, D_used, b, A, lam, 0.0).loss, rel=1e-14)
    # With λ above every residual norm a new atom cannot help: it is left alone.
    big = float(R.norm(dim=1).max()) * 1.01
    D_kept, n_kept = atom_step(x, D, b, A, big)
    assert n_kept == 0 and torch.equal(D_kept[2], D[2])


# -------------------------------------------------------------------------- cvxpy reference


def test_agrees_with_cvxpy_reference_on_a_tiny_problem():
    """From the same initial atoms both reach the same objective; and the classical solution
    is a fixed point of the cvxpy alternation (it cannot lower the loss from there), since
    C2 with G_k ∥ d_k, λ ā_k ≥ 0 is the KKT condition of the relaxed convex atom step."""
    world = _world(n=120, d=6, k=4, p=0.3, seed=3)
    lam = 0.05
    ours = fit_classical(world.x, K=4, lam=lam, seed=1, max_iter=2000, progress=False)
    ref = fit_cvxpy(world.x, K=4, lam=lam, seed=1, max_iter=300)
    f_ours, f_ref = ours.meta["history"][-1], ref.meta["history"][-1]
    assert f_ours <= f_ref * (1 + 1e-6)
    assert f_ours == pytest.approx(f_ref, rel=1e-5)
    polish = fit_cvxpy(world.x, K=4, lam=lam, init=ours, max_iter=5)
    assert polish.meta["history"][-1] >= f_ours * (1 - 1e-7)
    h = np.array(ref.meta["history"])
    assert np.all(np.diff(h) <= 1e-7 * np.abs(h[:-1]))  # cvxpy is accurate to ~1e-8


# ------------------------------------------------------------------------------ scikit-learn


def test_sklearn_alpha_is_our_lambda():
    """sklearn's codes of a converged run satisfy our C1 with λ = α (to sklearn's tolerance);
    λ = α·d or α/d (the Lasso-style per-dimension scalings) fail C1 badly."""
    from sklearn.decomposition import DictionaryLearning

    world = _world(n=300, d=8, k=6, p=0.2, seed=1)
    X = world.x - world.x.mean(axis=0)
    alpha, d = 0.05, 8
    est = DictionaryLearning(
        n_components=6, alpha=alpha, fit_algorithm="cd", transform_algorithm="lasso_cd",
        transform_alpha=alpha, positive_code=True, random_state=0, max_iter=2000, tol=1e-10,
        transform_max_iter=10_000,
    ).fit(X)
    codes = est.transform(X)
    V = est.components_

    def rel_kkt(lam):
        return float(kkt_violations(V, X, codes, lam).max()) / lam

    assert rel_kkt(alpha) <= 1e-4
    assert rel_kkt(alpha * d) > 0.5 and rel_kkt(alpha / d) > 0.5


@pytest.mark.parametrize("minibatch", [False, True])
def test_sklearn_wrapper_gives_a_canonical_dictionary(minibatch):
    world = _world(n=300, d=8, k=6, p=0.2, seed=1)
    fit = fit_sklearn(world.x, K=6, lam=0.05, minibatch=minibatch, max_iter=200)
    assert fit.lam == 0.05 and fit.meta["solver"] == "sklearn"
    assert torch.allclose(fit.atoms.norm(dim=1), torch.ones(6, dtype=fit.atoms.dtype))
    assert torch.allclose(fit.bias, torch.as_tensor(world.x.mean(axis=0)))
    # Its optimal-code loss beats coding nothing (½ mean ‖x − x̄‖²). (No recovery claim:
    # sklearn's SVD initialisation lands in local minima on this world.)
    x = torch.as_tensor(world.x)
    codes = solve_codes(fit.atoms, x, 0.05, bias=fit.bias).codes
    loss = first_order_residuals(x, fit.atoms, fit.bias, codes, 0.05, 0.0).loss
    assert loss < 0.5 * float(((x - x.mean(0)) ** 2).sum(1).mean())


def test_solvers_are_registered():
    for name in ("classical", "sklearn", "cvxpy"):
        assert get_solver(name).name == name
    world = _world(n=100, d=5, k=3, p=0.3)
    fit = get_solver("classical").fit(world.x, K=3, lam=0.1, seed=0, progress=False, max_iter=5)
    assert fit.meta["solver"] == "classical" and fit.meta["n_iter"] <= 5


# -------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fit", [fit_classical, fit_sklearn, fit_cvxpy])
def test_bad_input_is_named(fit):
    x = np.random.default_rng(0).standard_normal((20, 4))
    with pytest.raises(DictoptInputError, match="K"):
        fit(x, K=0, lam=0.1)
    with pytest.raises(DictoptInputError, match="lam"):
        fit(x, K=2, lam=0.0)
    with pytest.raises(DictoptInputError, match="lam"):
        fit(x, K=2, lam=None)
    with pytest.raises(DictoptInputError, match="empty"):
        fit(x[:0], K=2, lam=0.1)
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(DictoptInputError, match="row 7"):
        fit(bad, K=2, lam=0.1)


def test_cvxpy_refuses_large_problems():
    x = np.random.default_rng(0).standard_normal((5000, 4))
    with pytest.raises(DictoptInputError, match="small problems"):
        fit_cvxpy(x, K=100, lam=0.1)


def test_problem_without_bias():
    """``fit_bias=False`` keeps b = 0 (the no-bias problem of THEORY §1): the result satisfies
    C1 and C2 at b = 0, its history never increases, and on data with an offset its mean
    residual stays away from 0 (the bias was not fitted behind our back)."""
    world = _world(n=600, d=8, k=6, p=0.2, seed=2)
    lam = 0.05
    fit = fit_classical(world.x, K=6, lam=lam, fit_bias=False, progress=False, max_iter=3000,
                        grad_tol=1e-6)
    assert not fit.has_bias and float(fit.bias.abs().max()) == 0.0
    assert fit.meta["converged"] and fit.meta["fit_bias"] is False
    x = torch.as_tensor(world.x)
    codes = solve_codes(fit.atoms, x, lam, tol=1e-10)
    res = first_order_residuals(x, fit.atoms, fit.bias, codes.codes, lam, codes.kkt_residual)
    assert res.c1 <= 1e-6 and res.c2 <= 1e-5, res
    assert res.c3 > 1e-3, res
    h = np.array(fit.meta["history"])
    assert np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1]))


def test_callback_sees_every_loss_and_can_stop():
    """The callback gets (iteration, loss) after each code step, equal to ``history``; True
    stops the run right there (the same trajectory as a run with that many iterations)."""
    world = _world(n=200, d=6, k=5, p=0.3, seed=4)
    seen = []

    def cb(it, loss):
        seen.append((it, loss))
        return it == 4

    fit = fit_classical(world.x, K=5, lam=0.05, callback=cb, progress=False)
    assert [it for it, _ in seen] == [1, 2, 3, 4]
    assert [loss for _, loss in seen] == fit.meta["history"]
    ref = fit_classical(world.x, K=5, lam=0.05, max_iter=6, progress=False)
    assert ref.meta["history"][:4] == fit.meta["history"]


# -- the inexact warm phase --------------------------------------------------------------------


@given(seed=st.integers(0, 1000), steps=st.integers(1, 5), log_lam=st.floats(-2.0, -0.5))
@settings(max_examples=10, deadline=None)
def test_improve_codes_never_raises_the_lasso_objective(seed, steps, log_lam):
    """A few active-set steps from any nonnegative start lower (or keep) every point's
    objective; enough steps reach the exact optimum."""
    from dictopt.solvers.coding import improve_codes

    lam = 10.0**log_lam
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((12, 6))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    x = rng.standard_normal((80, 6))
    start = rng.random((80, 12)) * (rng.random((80, 12)) < 0.4)

    def f(a):
        a = np.asarray(a)
        return 0.5 * ((x - a @ D) ** 2).sum(1) + lam * a.sum(1)

    a = improve_codes(D, x, lam, init=start, steps=steps).numpy()
    assert a.min() >= 0
    assert np.all(f(a) <= f(start) + 1e-12 * (1 + np.abs(f(start))))
    exact = solve_codes(D, x, lam, tol=1e-10).codes.numpy()
    many = improve_codes(D, x, lam, init=start, steps=200).numpy()
    assert np.allclose(f(many), f(exact), rtol=1e-10, atol=1e-12)


def test_warm_phase_then_exact_alternation():
    """With a forced warm phase: its subsample losses never increase, ``on_update`` sees warm
    then exact dictionaries, the exact history never increases and the fit ends at the
    first-order conditions it would reach without the warm phase."""
    w = _world(n=1500, d=10, k=15, p=0.12)
    phases = []
    fit = fit_classical(w.x, K=15, lam=0.05, progress=False, grad_tol=1e-6, warm_rows=400,
                        on_update=lambda phase, D, b: phases.append(phase))
    warm = fit.meta["warm_start"]
    assert warm["rows"] == 400 and warm["iterations"] >= 2
    losses = np.array(warm["losses"])
    assert np.all(np.diff(losses) <= 1e-12 * losses[:-1])
    assert phases[: warm["iterations"]] == ["warm"] * warm["iterations"]
    assert set(phases[warm["iterations"]:]) == {"exact"}
    h = np.array(fit.meta["history"])
    assert np.all(np.diff(h) <= 1e-12 * np.abs(h[:-1]))
    assert fit.meta["converged"] and fit.meta["c2"] <= 1e-6
    plain = fit_classical(w.x, K=15, lam=0.05, progress=False, grad_tol=1e-6, warm_rows=None)
    assert plain.meta["warm_start"] == {"rows": 0}
    # Both reach stationary points; the warm one is not worse than 1 % of the plain one.
    assert h[-1] <= plain.meta["history"][-1] * 1.01


def test_improve_codes_bad_input_is_named():
    from dictopt.solvers.coding import improve_codes

    D, x = np.eye(3), np.ones((2, 3))
    with pytest.raises(DictoptInputError, match="init"):
        improve_codes(D, x, 0.1, init=np.full((2, 3), np.nan))
    with pytest.raises(DictoptInputError, match="init"):
        improve_codes(D, x, 0.1, init=np.ones((3, 3)))
    with pytest.raises(DictoptInputError, match="steps"):
        improve_codes(D, x, 0.1, steps=0)
    with pytest.raises(DictoptInputError, match="lam"):
        improve_codes(D, x, 0.0)


def test_warm_rows_auto_and_bad_values():
    from dictopt.solvers.classical import warm_rows_for

    assert warm_rows_for(9_999, 64, "auto") == 0
    assert warm_rows_for(20_000, 256, "auto") == 10_000
    assert warm_rows_for(100_000, 64, "auto") == 2_560
    assert warm_rows_for(500, 8, 800) == 500 and warm_rows_for(500, 8, None) == 0
    x = np.random.default_rng(0).standard_normal((50, 4))
    for bad in ("half", -1, True, 2.5):
        with pytest.raises(DictoptInputError, match="warm_rows"):
            fit_classical(x, K=3, lam=0.1, progress=False, warm_rows=bad)
    with pytest.raises(DictoptInputError, match="warm_iters"):
        fit_classical(x, K=3, lam=0.1, progress=False, warm_rows=20, warm_iters=0)
