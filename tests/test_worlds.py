"""Ground-truth worlds: shapes, exact generation, promised structure, seeding, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dictopt.data.worlds import WORLDS, World, make_world
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

SYNTHETIC = ["independent", "hierarchy", "tegum", "correlated", "dense1d", "rays"]
REAL = ["digits", "patches"]
SMALL = {"n": 300}
FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_generic(world: World, noise_free: bool = True) -> None:
    """The contract every synthetic world keeps."""
    N, d = world.x.shape
    K = world.K_true
    assert world.x.dtype == np.float64
    assert world.atoms.shape == (K, d) and K >= 1
    assert world.codes.shape == (N, K)
    assert world.bias.shape == (d,)
    np.testing.assert_allclose(np.linalg.norm(world.atoms, axis=1), 1.0, atol=1e-12)
    assert (world.codes >= 0).all()
    assert np.isfinite(world.x).all()
    if noise_free:
        # Exact up to floating-point summation order (large sparse worlds use a CSR product).
        np.testing.assert_allclose(
            world.x, world.codes @ world.atoms + world.bias, rtol=0, atol=1e-12
        )
    for child, parent in world.edges:
        assert 0 <= child < K and 0 <= parent < K and child != parent
    for group in world.groups:
        assert all(0 <= i < K for i in group)


# --------------------------------------------------------------------------------------------
# Generic contract, every world
# --------------------------------------------------------------------------------------------


def test_registry_lists_every_world_with_docs() -> None:
    for name in SYNTHETIC + REAL:
        assert name in WORLDS, name
    for spec in WORLDS.values():
        assert spec.summary and set(spec.defaults) == set(spec.param_docs)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_contract_at_defaults_small(name: str) -> None:
    world = make_world(name, **SMALL)
    assert world.name == name
    assert world.params["n"] == 300 and world.params["seed"] == 0
    check_generic(world)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_noise_is_added_and_seeded(name: str) -> None:
    clean = make_world(name, n=200, seed=3)
    noisy = make_world(name, n=200, seed=3, noise=0.1)
    np.testing.assert_array_equal(clean.codes, noisy.codes)
    np.testing.assert_array_equal(clean.atoms, noisy.atoms)
    diff = noisy.x - noisy.clean()
    assert 0.08 < diff.std() < 0.12
    np.testing.assert_array_equal(noisy.x, make_world(name, n=200, seed=3, noise=0.1).x)


@pytest.mark.parametrize("name", SYNTHETIC + REAL)
def test_same_seed_same_arrays_other_seed_differs(name: str) -> None:
    n = 200
    a, b, c = make_world(name, n=n, seed=7), make_world(name, n=n, seed=7), make_world(
        name, n=n, seed=8
    )
    for field in ("x", "atoms", "codes", "bias"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.edges == b.edges and a.groups == b.groups
    assert not np.array_equal(a.x, c.x)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_atoms_do_not_depend_on_n(name: str) -> None:
    np.testing.assert_array_equal(
        make_world(name, n=50, seed=1).atoms, make_world(name, n=400, seed=1).atoms
    )


@pytest.mark.parametrize("name", SYNTHETIC)
def test_truth_is_the_generating_dictionary(name: str) -> None:
    world = make_world(name, n=100, seed=2)
    truth = world.truth(0.25)
    assert isinstance(truth, Dictionary)
    assert truth.lam == 0.25 and truth.encoder is None and truth.has_bias
    assert truth.dtype == torch.float64
    np.testing.assert_array_equal(truth.atoms.numpy(), world.atoms)
    np.testing.assert_array_equal(truth.bias.numpy(), world.bias)
    assert truth.meta["world"] == name and truth.meta["n"] == 100
    np.testing.assert_allclose(
        truth.decode(torch.from_numpy(world.codes)).numpy(), world.x, atol=1e-12
    )
    with pytest.raises(DictoptInputError, match="lam"):
        world.truth(0.0)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_unknown_world_lists_known() -> None:
    with pytest.raises(DictoptInputError, match="unknown world 'nope'.*hierarchy.*independent"):
        make_world("nope")


@pytest.mark.parametrize("name", SYNTHETIC + REAL)
def test_unknown_parameter_lists_valid_ones(name: str) -> None:
    with pytest.raises(DictoptInputError, match="unknown parameter.*bogus.*valid parameters: n"):
        make_world(name, bogus=1)


@pytest.mark.parametrize("name", SYNTHETIC + REAL)
@pytest.mark.parametrize("n", [0, -3, 2.5, "ten", True])
def test_bad_n(name: str, n: object) -> None:
    with pytest.raises(DictoptInputError, match="n: must be an integer"):
        make_world(name, n=n)


@pytest.mark.parametrize("name", [w for w in SYNTHETIC if w != "digits"])
@pytest.mark.parametrize("d", [0, -1])
def test_bad_d(name: str, d: int) -> None:
    with pytest.raises(DictoptInputError, match="d: must be an integer"):
        make_world(name, d=d)


@pytest.mark.parametrize(
    "name, key",
    [
        ("independent", "p"),
        ("hierarchy", "p_root"),
        ("hierarchy", "p_child"),
        ("tegum", "p"),
        ("correlated", "p"),
        ("dense1d", "p"),
    ],
)
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_probabilities_outside_unit_interval(name: str, key: str, value: float) -> None:
    with pytest.raises(DictoptInputError, match=rf"{key}: must be a finite number in \[0.0, 1.0\]"):
        make_world(name, **{key: value})


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(DictoptInputError, match="seed"):
        make_world("independent", seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_negative_noise_rejected(name: str) -> None:
    with pytest.raises(DictoptInputError, match="noise"):
        make_world(name, noise=-0.1)


# --------------------------------------------------------------------------------------------
# independent
# --------------------------------------------------------------------------------------------


def test_independent_size_used_by_other_helpers() -> None:
    world = make_world("independent", d=64, k=128, n=20000)
    check_generic(world)
    assert world.K_true == 128 > world.d
    # Each feature fires with probability p = 0.05: 20000 * 128 Bernoulli draws.
    assert abs((world.codes > 0).mean() - 0.05) < 0.003
    active = world.codes[world.codes > 0]
    assert 0.5 <= active.min() and active.max() <= 1.5


@given(
    d=st.integers(2, 12),
    k=st.integers(1, 30),
    p=st.floats(0.0, 1.0),
    magnitude=st.sampled_from(["uniform", "exponential"]),
    bias_norm=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**32),
)
@FAST
def test_independent_properties(
    d: int, k: int, p: float, magnitude: str, bias_norm: float, seed: int
) -> None:
    world = make_world(
        "independent", n=60, d=d, k=k, p=p, magnitude=magnitude, bias_norm=bias_norm, seed=seed
    )
    check_generic(world)
    assert np.linalg.norm(world.bias) == pytest.approx(bias_norm)
    active = world.codes[world.codes > 0]
    if p == 0.0:
        assert active.size == 0
    if p == 1.0:
        assert active.size == world.codes.size
    if active.size:
        assert active.min() >= 0.5
        if magnitude == "uniform":
            assert active.max() <= 1.5
        else:
            assert active.min() >= 1.0


def test_independent_coherence_control() -> None:
    world = make_world("independent", d=32, k=64, max_coherence=0.4, n=10)
    gram = np.abs(world.atoms @ world.atoms.T - np.eye(64))
    assert gram.max() <= 0.4
    free = make_world("independent", d=32, k=64, n=10)
    assert np.abs(free.atoms @ free.atoms.T - np.eye(64)).max() > 0.4  # control did something
    with pytest.raises(DictoptInputError, match="max_coherence: could not place"):
        make_world("independent", d=4, k=40, max_coherence=0.1, n=10)


# --------------------------------------------------------------------------------------------
# hierarchy
# --------------------------------------------------------------------------------------------


def check_hierarchy(world: World) -> None:
    active = world.codes > 0
    depth = world.params["depth"]
    assert depth >= 2
    parent_of = dict(world.edges)
    # children never fire without their parent
    for child, parent in world.edges:
        assert not (active[:, child] & ~active[:, parent]).any()
    # siblings are mutually exclusive, and every sibling set shares one parent
    for group in world.groups:
        assert active[:, group].sum(axis=1).max() <= 1
        assert len({parent_of[i] for i in group}) == 1
    # depth: the longest chain of edges has depth - 1 links
    def chain(i: int) -> int:
        return 0 if i not in parent_of else 1 + chain(parent_of[i])

    assert max(chain(i) for i in range(world.K_true)) == depth - 1
    R, b = world.params["n_roots"], world.params["branching"]
    assert world.K_true == sum(R * b**level for level in range(depth))
    assert len(world.edges) == world.K_true - R


@given(
    n_roots=st.integers(1, 4),
    branching=st.integers(1, 4),
    depth=st.integers(2, 4),
    p_root=st.floats(0.0, 1.0),
    p_child=st.floats(0.0, 1.0),
    child_corr=st.floats(-0.95, 0.95),
    seed=st.integers(0, 2**32),
)
@FAST
def test_hierarchy_properties(
    n_roots: int, branching: int, depth: int, p_root: float, p_child: float, child_corr: float,
    seed: int,
) -> None:
    world = make_world(
        "hierarchy", n=80, d=8, n_roots=n_roots, branching=branching, depth=depth,
        p_root=p_root, p_child=p_child, child_corr=child_corr, seed=seed,
    )
    check_generic(world)
    check_hierarchy(world)
    for child, parent in world.edges:
        assert world.atoms[child] @ world.atoms[parent] == pytest.approx(child_corr, abs=1e-12)
    if p_child == 1.0:  # exactly one child fires with each firing parent
        for group in world.groups:
            parent = dict(world.edges)[group[0]]
            active = world.codes > 0
            np.testing.assert_array_equal(active[:, group].sum(axis=1), active[:, parent])


def test_hierarchy_defaults_are_a_strict_hierarchy_with_visible_children() -> None:
    world = make_world("hierarchy")
    check_hierarchy(world)
    active = world.codes > 0
    for child, parent in world.edges:
        # THEORY C5 for (i = child, j = parent): H_ij = max of a_child where the parent is off.
        off = ~active[:, parent]
        H = world.codes[off, child].max(initial=0.0)
        assert H == 0.0
        # ... so the truth violates the upper C5 inequality (1 - c_ij) ā_i ≤ H_ij on every edge
        c_ij = world.atoms[child] @ world.atoms[parent]
        assert (1 - c_ij) * world.codes[:, child].mean() > H + 0.01
        assert active[:, child].sum() > 20  # children do fire, so the hierarchy is observable
    # children split their parent's firing: P(child | parent) ≈ p_child / branching
    rate = np.mean([active[active[:, p], c].mean() for c, p in world.edges])
    assert abs(rate - 0.8 / 3) < 0.03


def test_hierarchy_depth_below_two_rejected() -> None:
    with pytest.raises(DictoptInputError, match="depth: must be an integer ≥ 2"):
        make_world("hierarchy", depth=1)
    with pytest.raises(DictoptInputError, match="child_corr"):
        make_world("hierarchy", child_corr=1.0)


# --------------------------------------------------------------------------------------------
# tegum
# --------------------------------------------------------------------------------------------


def check_tegum(world: World) -> None:
    G, g, m = (world.params[k] for k in ("n_groups", "group_size", "subspace_dim"))
    assert world.groups == [list(range(i * g, (i + 1) * g)) for i in range(G)]
    active = world.codes > 0
    for i, group in enumerate(world.groups):
        assert active[:, group].sum(axis=1).max() <= 1  # at most one member fires
        # the group's atoms span (at most) m dimensions ...
        assert np.linalg.matrix_rank(world.atoms[group], tol=1e-9) == min(g, m)
        # ... orthogonal to every other group's atoms
        for other in world.groups[i + 1 :]:
            np.testing.assert_allclose(world.atoms[group] @ world.atoms[other].T, 0.0, atol=1e-12)


@given(
    n_groups=st.integers(1, 4),
    group_size=st.integers(2, 6),
    subspace_dim=st.integers(1, 4),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
@FAST
def test_tegum_properties(
    n_groups: int, group_size: int, subspace_dim: int, p: float, seed: int
) -> None:
    params = dict(n=60, d=16, n_groups=n_groups, group_size=group_size, subspace_dim=subspace_dim)
    if subspace_dim == 1 and group_size > 2:
        with pytest.raises(DictoptInputError, match="subspace_dim"):
            make_world("tegum", p=p, seed=seed, **params)
        return
    world = make_world("tegum", p=p, seed=seed, **params)
    check_generic(world)
    check_tegum(world)
    if p == 1.0:  # every group fires: exactly one member each
        for group in world.groups:
            assert ((world.codes[:, group] > 0).sum(axis=1) == 1).all()


def test_tegum_frames_are_the_documented_shapes() -> None:
    # m = 2, g = 5: a regular pentagon: neighbouring cosines cos(72°)
    world = make_world("tegum", n=10, n_groups=1, group_size=5, subspace_dim=2)
    gram = world.atoms @ world.atoms.T
    np.testing.assert_allclose(np.sort(gram[0])[::-1][1:3], np.cos(2 * np.pi / 5), atol=1e-12)
    # g = m + 1 = 4: a regular simplex, all cosines -1/3
    world = make_world("tegum", n=10, n_groups=2, group_size=4, subspace_dim=3)
    gram = world.atoms[:4] @ world.atoms[:4].T
    np.testing.assert_allclose(gram[~np.eye(4, dtype=bool)], -1 / 3, atol=1e-12)
    # defaults: triangles (g = 3, m = 2), and group firing rate p = 0.3
    world = make_world("tegum")
    check_tegum(world)
    assert abs((world.codes > 0).sum(axis=1).mean() - 4 * 0.3) < 0.1
    with pytest.raises(DictoptInputError, match="d: 4 groups of subspace_dim 2 need d ≥ 8"):
        make_world("tegum", d=7)


# --------------------------------------------------------------------------------------------
# correlated
# --------------------------------------------------------------------------------------------


@given(
    n_pairs=st.integers(1, 5),
    pair_cos=st.floats(-0.95, 0.95),
    v_max=st.floats(0.0, 3.0),
    bias_norm=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**32),
)
@FAST
def test_correlated_alternative_basis_reproduces_x(
    n_pairs: int, pair_cos: float, v_max: float, bias_norm: float, seed: int
) -> None:
    world = make_world(
        "correlated", n=80, d=6, n_pairs=n_pairs, pair_cos=pair_cos, v_max=v_max,
        bias_norm=bias_norm, seed=seed,
    )
    check_generic(world)
    alt_atoms, alt_codes = world.extras["alt_atoms"], world.extras["alt_codes"]
    assert alt_atoms.shape == world.atoms.shape and alt_codes.shape == world.codes.shape
    np.testing.assert_allclose(np.linalg.norm(alt_atoms, axis=1), 1.0, atol=1e-12)
    assert (alt_codes >= 0).all()
    np.testing.assert_allclose(alt_codes @ alt_atoms + world.bias, world.x, atol=1e-12)
    # a genuinely different basis: f1 = (e1 + e2)/|e1 + e2| is not e1 or e2
    assert np.abs(alt_atoms[0] @ world.atoms[0]) < 1 - 1e-6
    # amplitudes (u, u + v): both fire together, second ≥ first, within v_max
    for i, j in world.groups:
        a, b = world.codes[:, i], world.codes[:, j]
        np.testing.assert_array_equal(a > 0, b > 0)
        assert (b >= a).all() and (b - a <= v_max + 1e-12).all()
        assert world.atoms[i] @ world.atoms[j] == pytest.approx(pair_cos, abs=1e-12)
    # the alternative basis is cheaper in L1 (documented): u sqrt(2 + 2c) + v < 2u + v
    if (world.codes > 0).any():
        assert alt_codes.sum() < world.codes.sum()


# --------------------------------------------------------------------------------------------
# dense1d
# --------------------------------------------------------------------------------------------


@given(
    distribution=st.sampled_from(["gaussian", "uniform"]),
    k_sparse=st.integers(0, 5),
    dense_scale=st.floats(0.01, 5.0),
    seed=st.integers(0, 2**32),
)
@FAST
def test_dense1d_properties(
    distribution: str, k_sparse: int, dense_scale: float, seed: int
) -> None:
    world = make_world(
        "dense1d", n=100, d=5, distribution=distribution, k_sparse=k_sparse,
        dense_scale=dense_scale, seed=seed,
    )
    check_generic(world)
    assert world.K_true == 2 + k_sparse and world.groups == [[0, 1]]
    np.testing.assert_array_equal(world.atoms[0], -world.atoms[1])  # antipodal
    plus, minus = world.codes[:, 0], world.codes[:, 1]
    t = plus - minus
    # exactly one of the pair is active on every point with t != 0
    assert ((plus > 0) ^ (minus > 0) | (t == 0)).all()
    assert not ((plus > 0) & (minus > 0)).any()
    # the dense coordinate of x - b along w is t plus the sparse features' projections
    sparse = world.codes[:, 2:] @ world.atoms[2:]
    np.testing.assert_allclose((world.x - world.bias - sparse) @ world.atoms[0], t, atol=1e-12)
    if distribution == "uniform":
        assert np.abs(t).max() <= dense_scale


def test_dense1d_defaults_are_dense() -> None:
    world = make_world("dense1d")
    active = world.codes[:, :2] > 0
    assert active.any(axis=1).all()  # Gaussian t is never exactly 0
    assert 0.45 < active[:, 0].mean() < 0.55  # each antipodal atom on one side
    assert np.linalg.norm(world.bias) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# rays
# --------------------------------------------------------------------------------------------


@given(n_rays=st.integers(1, 8), bias_norm=st.floats(0.0, 3.0), seed=st.integers(0, 2**32))
@FAST
def test_rays_every_point_on_its_ray(n_rays: int, bias_norm: float, seed: int) -> None:
    world = make_world("rays", n=100, d=6, n_rays=n_rays, bias_norm=bias_norm, seed=seed)
    check_generic(world)
    assert world.groups == [list(range(n_rays))]
    assert ((world.codes > 0).sum(axis=1) == 1).all()
    c = world.codes.argmax(axis=1)
    s = world.codes.max(axis=1)
    y = world.x - world.bias
    # x_n - b = s_n u_c(n) with s_n > 0: the cosine with its ray is 1, the norm is s_n
    np.testing.assert_allclose(np.einsum("nd,nd->n", y, world.atoms[c]), s, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), s, atol=1e-12)
    assert (s > 0).all()


# --------------------------------------------------------------------------------------------
# real worlds
# --------------------------------------------------------------------------------------------


def test_digits() -> None:
    world = make_world("digits")
    assert world.x.shape == (1797, 64) and world.x.dtype == np.float64
    assert world.x.min() == 0.0 and world.x.max() == 1.0
    assert world.K_true == 0 and world.atoms.shape == (0, 64) and world.codes.shape == (1797, 0)
    raw = make_world("digits", scale=False)
    np.testing.assert_array_equal(raw.x, world.x * 16)
    sub = make_world("digits", n=100, seed=4)
    assert sub.x.shape == (100, 64)
    # the subsample consists of rows of the full data set
    full_rows = {row.tobytes() for row in world.x}
    assert all(row.tobytes() in full_rows for row in sub.x)
    with pytest.raises(DictoptInputError, match="no ground-truth"):
        world.truth(0.1)
    with pytest.raises(DictoptInputError, match="1797"):
        make_world("digits", n=1798)
    with pytest.raises(DictoptInputError, match="scale"):
        make_world("digits", scale="yes")


def test_patches() -> None:
    world = make_world("patches", n=500)
    assert world.x.shape == (500, 64) and world.K_true == 0
    assert world.x.min() >= 0.0 and world.x.max() <= 1.0
    assert world.x.std() > 0.05  # natural images: not constant
    centred = make_world("patches", n=500, center=True)
    np.testing.assert_allclose(centred.x.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(centred.x, world.x - world.x.mean(axis=1, keepdims=True))
    assert make_world("patches", n=10, patch_size=4).d == 16
    with pytest.raises(DictoptInputError, match="no ground-truth"):
        world.truth(0.1)
    with pytest.raises(DictoptInputError, match="patch_size"):
        make_world("patches", n=10, patch_size=1000)


def test_patches_are_image_patches() -> None:
    """Each row is a contiguous patch of one of the two grayscale photos."""
    from sklearn.datasets import load_sample_images

    gray = [
        img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
        for img in load_sample_images().images
    ]
    world = make_world("patches", n=5, patch_size=3, seed=11)
    for row in world.x:
        patch = row.reshape(3, 3)
        found = False
        for g in gray:
            hits = np.argwhere(np.abs(g[:-2, :-2] - patch[0, 0]) < 1e-15)
            for i, j in hits:
                if np.array_equal(g[i : i + 3, j : j + 3], patch):
                    found = True
                    break
            if found:
                break
        assert found


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_lists_worlds(capsys: pytest.CaptureFixture[str]) -> None:
    from dictopt.cli import main

    assert main(["worlds"]) == 0
    out = capsys.readouterr().out
    for name in WORLDS:
        assert name in out
    assert "n_roots=8" in out
    assert main(["worlds", "hierarchy"]) == 0
    assert "p_child" in capsys.readouterr().out
    assert main(["worlds", "nope"]) == 2


def test_cli_world_options_reach_make_world() -> None:
    import argparse

    from dictopt.cli._common import load_data

    args = argparse.Namespace(
        activations=None, world="independent", seed=5, world_set=["n=123", "d=7", "k=9"]
    )
    source = load_data(args)
    assert (source.n, source.d) == (123, 7)
    np.testing.assert_array_equal(
        source.to_tensor().numpy(), make_world("independent", seed=5, n=123, d=7, k=9).x
    )
