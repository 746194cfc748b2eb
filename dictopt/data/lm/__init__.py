"""Real activations from language models (needs the ``lm`` extra; see ``scripts/setup_lm.sh``).

Public API: :func:`extract_activations` (model + layer + text → ``.npy`` shards and
``manifest.json``, readable by :class:`~dictopt.data.sources.ShardFolderSource`),
:func:`load_model`, :func:`load_corpus`, :func:`residual_stream`, :func:`read_manifest`.
``transformers`` is imported only when a model is loaded, so importing this package is cheap.
"""

from dictopt.data.lm.extract import (
    ExtractionResult,
    extract_activations,
    read_manifest,
    residual_stream,
)
from dictopt.data.lm.models import PACKAGED_MODELS, LoadedModel, cache_dir, load_model
from dictopt.data.lm.texts import TextCorpus, load_corpus

__all__ = [
    "PACKAGED_MODELS",
    "ExtractionResult",
    "LoadedModel",
    "TextCorpus",
    "cache_dir",
    "extract_activations",
    "load_corpus",
    "load_model",
    "read_manifest",
    "residual_stream",
]
