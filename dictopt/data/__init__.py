"""Data: activation sources (chunks) and synthetic worlds with ground truth."""

from dictopt.data.evaluate import evaluate
from dictopt.data.sources import (
    ActivationSource,
    ArraySource,
    Chunk,
    NpySource,
    ShardFolderSource,
    as_source,
)
from dictopt.data.worlds import WORLDS, World, WorldSpec, make_world

__all__ = [
    "ActivationSource",
    "ArraySource",
    "Chunk",
    "NpySource",
    "ShardFolderSource",
    "WORLDS",
    "World",
    "WorldSpec",
    "make_world",
    "as_source",
    "evaluate",
]
