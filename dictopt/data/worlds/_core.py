"""The :class:`World` object, the registry of worlds and :func:`make_world`.

A world is a data set ``x [N, d]`` together with the dictionary that generated it (its
*ground truth*): unit-norm atoms as rows ``atoms [K_true, d]``, nonnegative codes
``codes [N, K_true]`` and a bias ``bias [d]``, so that

    x = codes @ atoms + bias + noise

holds exactly when the world's ``noise`` parameter is 0. Structure the world promises (which
atoms form a hierarchy, which are mutually exclusive) is listed in ``edges`` and ``groups``.

Randomness: the seed is split (``numpy.random.SeedSequence(seed).spawn(3)``) into independent
streams for the atoms, the codes and the noise, so changing ``n`` or ``noise`` leaves the atoms
of a world unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dictopt.validation import DictoptInputError


@dataclass
class World:
    """A data set with its ground-truth dictionary.

    Parameters
    ----------
    name:
        The registered world name (``"independent"``, ``"hierarchy"``, ...).
    x:
        ``[N, d]`` float64 data.
    atoms:
        ``[K_true, d]`` unit-norm ground-truth atoms (rows). ``K_true = 0`` (an empty ``[0, d]``
        array) for worlds without ground truth (``"digits"``, ``"patches"``).
    codes:
        ``[N, K_true]`` nonnegative ground-truth codes (``[N, 0]`` without ground truth).
    bias:
        ``[d]`` ground-truth bias (zeros where the world has none).
    edges:
        Hierarchy edges ``(child, parent)`` between atom indices: the child never fires
        without its parent.
    groups:
        Lists of atom indices: mutually exclusive sets (siblings, tegum groups, antipodal
        pairs) or, in ``"correlated"``, the correlated pairs. The world's docstring says which.
    params:
        Every parameter the world was built with, defaults included, plus ``seed``.
    extras:
        World-specific additional arrays (e.g. the alternative basis of ``"correlated"``).
    """

    name: str
    x: np.ndarray
    atoms: np.ndarray
    codes: np.ndarray
    bias: np.ndarray
    edges: list[tuple[int, int]] = field(default_factory=list)
    groups: list[list[int]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of data points N."""
        return int(self.x.shape[0])

    @property
    def d(self) -> int:
        """Data dimension d."""
        return int(self.x.shape[1])

    @property
    def K_true(self) -> int:
        """Number of ground-truth atoms (0 for worlds without ground truth)."""
        return int(self.atoms.shape[0])

    @property
    def has_truth(self) -> bool:
        """Whether the world knows the dictionary that generated it."""
        return self.K_true > 0

    def clean(self) -> np.ndarray:
        """``codes @ atoms + bias``: the data without noise."""
        return self.codes @ self.atoms + self.bias

    def truth(self, lam: float) -> Any:
        """The ground truth as a canonical :class:`~dictopt.problem.Dictionary`.

        Atoms and bias of the generating dictionary, the given λ, no encoder (codes are then the
        optimal nonnegative-lasso codes for these atoms at this λ, which in general differ
        from ``self.codes``), and
        ``meta = {"world": name, **params}``.

        Raises
        ------
        DictoptInputError
            For worlds without ground truth, or for a bad λ.
        """
        import torch

        from dictopt.problem import Dictionary

        if not self.has_truth:
            raise DictoptInputError(
                f"world {self.name!r} has no ground-truth dictionary (real data); "
                "truth() is only available for synthetic worlds"
            )
        return Dictionary(
            atoms=torch.from_numpy(self.atoms.copy()),
            bias=torch.from_numpy(self.bias.copy()),
            lam=lam,
            encoder=None,
            has_bias=True,
            meta={"world": self.name, **self.params},
        )


class Streams(NamedTuple):
    """Independent random streams for one world (see the module docstring)."""

    atoms: np.random.Generator
    codes: np.random.Generator
    noise: np.random.Generator


@dataclass(frozen=True)
class WorldSpec:
    """A registered world: its factory, default parameters and documentation."""

    name: str
    factory: Callable[[dict[str, Any], Streams], World]
    defaults: dict[str, Any]
    summary: str
    param_docs: dict[str, str]


WORLDS: dict[str, WorldSpec] = {}


def register_world(
    name: str, summary: str, defaults: dict[str, Any], param_docs: dict[str, str]
) -> Callable[[Callable[[dict[str, Any], Streams], World]], Callable[..., World]]:
    """Decorator registering ``factory(params, streams) -> World`` under ``name``."""
    missing = set(defaults) ^ set(param_docs)
    if missing:
        raise ValueError(f"world {name!r}: parameters without docs or defaults: {missing}")

    def wrap(factory: Callable[[dict[str, Any], Streams], World]) -> Callable[..., World]:
        if name in WORLDS and WORLDS[name].factory is not factory:
            raise ValueError(f"world {name!r} is registered twice")
        WORLDS[name] = WorldSpec(name, factory, dict(defaults), summary, dict(param_docs))
        return factory

    return wrap


def make_world(name: str, *, seed: int = 0, **params: Any) -> World:
    """Build a registered world.

    Parameters
    ----------
    name:
        One of ``WORLDS`` (``dictopt worlds`` lists them with their defaults).
    seed:
        Integer ≥ 0; the same seed and parameters give identical arrays.
    **params:
        Overrides of the world's default parameters.

    Returns
    -------
    World

    Raises
    ------
    DictoptInputError
        Unknown world or parameter (the message lists the valid ones) or a bad value.
    """
    if name not in WORLDS:
        known = ", ".join(sorted(WORLDS))
        raise DictoptInputError(f"unknown world {name!r}; known worlds: {known}")
    spec = WORLDS[name]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise DictoptInputError(
            f"world {name!r}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {', '.join(spec.defaults)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DictoptInputError(f"seed: must be an integer ≥ 0, got {seed!r}")
    merged = {**spec.defaults, **params}
    children = np.random.SeedSequence(int(seed)).spawn(3)
    streams = Streams(*(np.random.default_rng(s) for s in children))
    world = spec.factory(merged, streams)
    world.name = name
    # numpy scalars become Python numbers so that params (and truth().meta) are JSON-friendly
    world.params = {
        **{k: v.item() if isinstance(v, np.generic) else v for k, v in merged.items()},
        "seed": int(seed),
    }
    return world


# --------------------------------------------------------------------------------------------
# Parameter checks (each names the world and parameter).
# --------------------------------------------------------------------------------------------


def count(params: dict[str, Any], key: str, *, minimum: int = 1) -> int:
    """An integer parameter ≥ ``minimum``."""
    value = params[key]
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.integer | np.floating)
        and math.isfinite(value)
        and int(value) == value
    )
    if not ok or int(value) < minimum:
        raise DictoptInputError(f"{key}: must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def real(
    params: dict[str, Any],
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real parameter in ``[low, high]`` (ends open where asked)."""
    value = params[key]
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise DictoptInputError(f"{key}: must be a number, got {value!r}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise DictoptInputError(f"{key}: must be a finite number in {rng}, got {value!r}")
    return v


def probability(params: dict[str, Any], key: str) -> float:
    """A probability in ``[0, 1]``."""
    return real(params, key, low=0.0, high=1.0)


def choice(params: dict[str, Any], key: str, options: tuple[str, ...]) -> str:
    """A string parameter from a fixed set."""
    value = params[key]
    if value not in options:
        raise DictoptInputError(f"{key}: must be one of {', '.join(options)}; got {value!r}")
    return str(value)


def flag(params: dict[str, Any], key: str) -> bool:
    """A boolean parameter."""
    value = params[key]
    if not isinstance(value, bool | np.bool_):
        raise DictoptInputError(f"{key}: must be true or false, got {value!r}")
    return bool(value)


# --------------------------------------------------------------------------------------------
# Shared building blocks.
# --------------------------------------------------------------------------------------------


def unit_rows(v_KD: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm."""
    return v_KD / np.linalg.norm(v_KD, axis=1, keepdims=True)


def random_bias(rng: np.random.Generator, d: int, norm: float) -> np.ndarray:
    """A bias of the given norm in a uniformly random direction (zeros when ``norm`` is 0)."""
    if norm == 0:
        return np.zeros(d)
    return norm * unit_rows(rng.standard_normal((1, d)))[0]


def magnitudes(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Positive firing magnitudes: ``uniform`` on [0.5, 1.5] or ``exponential`` 1 + Exp(1)."""
    if kind == "uniform":
        return rng.uniform(0.5, 1.5, size=shape)
    return 1.0 + rng.exponential(1.0, size=shape)


MAGNITUDES = ("uniform", "exponential")

_SPARSE_MIN_SIZE = 1_000_000
_SPARSE_DENSITY = 0.05


def assemble(
    atoms_KD: np.ndarray,
    codes_NK: np.ndarray,
    bias_D: np.ndarray,
    noise: float,
    rng: np.random.Generator,
    **structure: Any,
) -> World:
    """``x = codes @ atoms + bias + noise · N(0, 1)`` packed into a :class:`World`.

    ``name`` and ``params`` are filled in by :func:`make_world`.
    """
    atoms = np.ascontiguousarray(atoms_KD, dtype=np.float64)
    codes = np.ascontiguousarray(codes_NK, dtype=np.float64)
    bias = np.ascontiguousarray(bias_D, dtype=np.float64)
    if codes.size > _SPARSE_MIN_SIZE and np.count_nonzero(codes) < _SPARSE_DENSITY * codes.size:
        # sparse codes: a CSR product is several times faster (same result up to rounding)
        from scipy.sparse import csr_array

        x = np.asarray(csr_array(codes) @ atoms) + bias
    else:
        x = codes @ atoms + bias
    if noise > 0:
        x += noise * rng.standard_normal(x.shape)
    return World(name="", x=x, atoms=atoms, codes=codes, bias=bias, **structure)
