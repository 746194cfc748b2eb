"""Data: activation sources (chunks) and synthetic worlds with ground truth."""

from dictopt.data.sources import (
    ActivationSource,
    ArraySource,
    Chunk,
    NpySource,
    ShardFolderSource,
    as_source,
)

__all__ = [
    "ActivationSource",
    "ArraySource",
    "Chunk",
    "NpySource",
    "ShardFolderSource",
    "as_source",
]
