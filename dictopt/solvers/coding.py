"""Exact codes for a fixed dictionary (THEORY §2, C1): the batched nonnegative lasso.

The kernel lives in :mod:`dictopt.lasso` (below :mod:`dictopt.problem`, whose
``Dictionary.optimal_codes`` uses it); this module re-exports it for the solver layer and adds
:func:`iter_codes`, which streams a source.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dictopt.lasso import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MEMORY_FRACTION,
    MAX_ADD,
    MEMORY_ENV,
    WELL_CONDITIONED,
    CodeResult,
    CoderPlan,
    coder_memory_budget,
    improve_codes,
    kkt_violations,
    plan_coder,
    solve_codes,
)
from dictopt.validation import DictoptInputError

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MEMORY_FRACTION",
    "MAX_ADD",
    "MEMORY_ENV",
    "WELL_CONDITIONED",
    "CodeResult",
    "CoderPlan",
    "coder_memory_budget",
    "improve_codes",
    "iter_codes",
    "kkt_violations",
    "plan_coder",
    "solve_codes",
]


def iter_codes(
    dictionary: Any, source: Any, *, progress: bool = False, **options: Any
) -> Iterator[tuple[Any, CodeResult]]:
    """Optimal codes for every chunk of a source: yields ``(chunk, CodeResult)``.

    Memory depends on the chunk size, not on N. ``options`` go to :func:`solve_codes`.

    Parameters
    ----------
    dictionary:
        A dictionary with λ.
    source:
        Activations.
    progress:
        Show a progress bar.
    **options:
        Passed to :func:`solve_codes`.

    Yields
    ------
    Iterator[tuple[Any, CodeResult]]
        Each chunk with its exact codes.
    """
    from dictopt.data.sources import as_source

    if dictionary.lam is None:
        raise DictoptInputError("lam: optimal codes need λ; this dictionary has none")
    for chunk in as_source(source).iter_chunks(progress=progress, desc="codes"):
        x = dictionary.prepare_batch(chunk.data, row_offset=chunk.start, where=chunk.label)
        yield chunk, solve_codes(
            dictionary.atoms, x, dictionary.lam, bias=dictionary.bias, **options
        )
