"""Synthetic (and small real) worlds with ground truth: ``make_world(name, seed=..., **params)``.

``WORLDS`` maps each name to its :class:`WorldSpec` (factory, default parameters, one-line
summary, per-parameter docs); ``dictopt worlds`` prints them. See :mod:`._core` for the
:class:`World` contract and seeding, :mod:`.synthetic` and :mod:`.real` for the worlds.
"""

from dictopt.data.worlds import real as _real  # noqa: F401  (registers the real worlds)
from dictopt.data.worlds import synthetic as _synthetic  # noqa: F401  (registers the rest)
from dictopt.data.worlds._core import WORLDS, World, WorldSpec, make_world, register_world

__all__ = ["WORLDS", "World", "WorldSpec", "make_world", "register_world"]
