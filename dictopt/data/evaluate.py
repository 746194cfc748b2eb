"""The canonical objective over an activation source, streamed chunk by chunk."""

from __future__ import annotations

from typing import Any

from dictopt.coders import make_coder
from dictopt.data.sources import as_source
from dictopt.problem import Dictionary, LossBreakdown, LossSums, check_codes


def evaluate(
    dictionary: Dictionary,
    source: Any,
    *,
    codes: Any = "own",
    progress: bool = False,
) -> LossBreakdown:
    """The canonical objective over an activation source, streamed chunk by chunk.

    Parameters
    ----------
    dictionary:
        The canonical dictionary.
    source:
        Activations (array, tensor, ``.npy`` path, shard folder or ActivationSource).
    codes:
        ``"own"`` (the dictionary's encoder), ``"optimal"`` (exact lasso codes for the same
        atoms), a callable mapping a batch ``[N, d]`` to codes ``[N, K]`` or given codes
        ``[N, K]`` (:func:`dictopt.coders.make_coder`).
    progress:
        Show a progress bar.

    Returns
    -------
    LossBreakdown
        Memory does not depend on N.
    """
    _, coder = make_coder(dictionary, codes)
    src = as_source(source)
    acc = LossSums(dictionary)
    for chunk in src.iter_chunks(progress=progress, desc="evaluate"):
        x = dictionary.prepare_batch(chunk.data, row_offset=chunk.start, where=chunk.label)
        a = coder(x, chunk.start).to(dictionary.dtype)
        check_codes(a, x.shape[0], dictionary.K, tol=1e-12)
        acc.update(x, a, dictionary.decode(a))
    return acc.result()
