"""The ``codes=`` argument, parsed in one place: which codes a dictionary is judged with.

``codes`` is ``"own"`` (the dictionary's encoder; the exact lasso codes when it has none),
``"optimal"`` (the exact nonnegative lasso), a callable ``x -> codes`` or an ``[N, K]`` array of
given codes aligned with the rows of the data. :func:`make_coder` turns any of them into a
:data:`Coder` ``coder(x_chunk, start) -> codes`` and names its mode; :func:`chunk_codes`
validates what a coder returned for one chunk. The checker, :func:`dictopt.data.evaluate` and
the plots all use these two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from dictopt.problem import Dictionary, check_codes
from dictopt.validation import DictoptInputError, to_tensor

Coder = Callable[[torch.Tensor, int], torch.Tensor]
"""``coder(x_chunk, start) -> codes [n, K]`` for a chunk whose first row is ``start``."""

CodesMode = Literal["own", "optimal", "given"]
"""How the checked codes were obtained (the report's ``summary["codes"]``)."""


def make_coder(dictionary: Dictionary, codes: Any) -> tuple[CodesMode, Coder]:
    """Parse ``codes=`` into its mode and a coder.

    Parameters
    ----------
    dictionary:
        The canonical dictionary whose codes are wanted.
    codes:
        ``"own"``, ``"optimal"``, a callable ``x -> codes`` or given codes ``[N, K]``.

    Returns
    -------
    tuple[CodesMode, Coder]
        ``mode`` is ``"own"`` (``"optimal"`` when ``codes="own"`` and the dictionary has no
        encoder), ``"optimal"`` or ``"given"`` (callables and arrays); ``coder(x_chunk,
        start)`` gives the canonical codes of a chunk whose first row is ``start``.

    Raises
    ------
    DictoptInputError
        For an unknown string or an array that is not ``[N, K]``.
    """
    if isinstance(codes, str):
        if codes == "own":
            mode: CodesMode = "own" if dictionary.encoder is not None else "optimal"
            return mode, lambda x, start: dictionary.encode(x)
        if codes == "optimal":
            return "optimal", optimal_coder(dictionary)
        raise DictoptInputError(f"codes: expected 'own' or 'optimal', got {codes!r}")
    if callable(codes):
        return "given", lambda x, start: codes(x)
    arr = to_tensor(codes, "codes", dtype=dictionary.dtype, device=dictionary.device)
    if arr.ndim != 2 or arr.shape[1] != dictionary.K:
        raise DictoptInputError(
            f"codes: expected shape [N, K={dictionary.K}], got {tuple(arr.shape)}"
        )
    return "given", lambda x, start: arr[start : start + x.shape[0]]


WARM_START = False
"""Whether the optimal codes of a dictionary with an encoder start from its own codes
(:func:`optimal_coder`)."""


def optimal_coder(dictionary: Dictionary, warm_start: bool | None = None) -> Coder:
    """The coder of ``codes="optimal"``: the exact nonnegative lasso, per chunk.

    Parameters
    ----------
    dictionary:
        The canonical dictionary (with λ).
    warm_start:
        Start the exact coder from the dictionary's own codes (when it has an encoder): their
        supports seed the active set (:func:`dictopt.faceinverse.seed_from_codes`). The codes
        returned are the same to rounding (the stopping rule is C1's KKT residual either
        way, and the lasso solution is unique for atoms in general position); only the work
        differs. Default :data:`WARM_START`.

    Returns
    -------
    Coder
    """
    warm = WARM_START if warm_start is None else warm_start
    if warm and dictionary.encoder is not None:
        return lambda x, start: dictionary.optimal_codes(x, init=dictionary.encode(x))
    return lambda x, start: dictionary.optimal_codes(x)


def chunk_codes(
    coder: Coder, x: torch.Tensor, start: int, K: int, dtype: torch.dtype
) -> torch.Tensor:
    """The validated codes of one chunk.

    Parameters
    ----------
    coder:
        From :func:`make_coder`.
    x:
        The chunk ``[n, d]``.
    start:
        Index of its first row in the whole stream.
    K, dtype:
        The dictionary's number of atoms and dtype.

    Returns
    -------
    torch.Tensor
        Codes ``[n, K]`` in ``dtype``, checked with one pass (``amin`` propagates NaN; +inf is
        caught when the active entries are read) and clamped only if slightly negative.
    """
    a = coder(x, start).to(dtype)
    if a.shape != (x.shape[0], K):
        check_codes(a, x.shape[0], K)
    # both extremes in one pass over the codes (the minimum propagates NaN)
    low, high = (float(t) for t in torch.aminmax(a)) if a.numel() else (0.0, 0.0)
    if low != low or low < -1e-9 or low == float("inf"):
        check_codes(a, x.shape[0], K, tol=1e-9)
    if high in (float("inf"), float("-inf")):
        check_codes(a, x.shape[0], K, tol=1e-9)
    return a.clamp(min=0) if low < 0 else a
