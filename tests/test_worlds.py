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

ALL_SYNTHETIC = ["independent", "hierarchy", "tegum", "correlated", "dense1d", "rays"]
SYNTHETIC = [name for name in ALL_SYNTHETIC if name in WORLDS]  # TEMP while worlds land
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
        # Exact: x is built as codes @ atoms + bias, so equality is bitwise.
        np.testing.assert_array_equal(world.x, world.codes @ world.atoms + world.bias)
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
        assert world.codes[off, child].max(initial=0.0) == 0.0
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
