"""The check's inputs, validated once: the dictionary in canonical form, λ, and the coder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dictopt.check.amortisation import AmortisationPlan, announce, plan_amortisation
from dictopt.check.codecache import CodeCache
from dictopt.coders import Coder, CodesMode, chunk_codes, make_coder
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError, check_width

LAM_HELP = (
    "the L1 check needs λ (THEORY §1 convention). Supply it: check(..., lam=L), "
    "Dictionary.with_lam(L), or `--lam L` on the command line. For an SAE trained with "
    "loss mean_n[‖x−x̂‖²] + α Σ_k ‖W_dec[k]‖ f_k, λ = α/2 in dictopt's ½-convention; a "
    "TopK/BatchTopK/JumpReLU SAE has no λ: use `--lam implied` (in Python "
    "lam=dictopt.io.conventions.implied_lambda(dictionary, x).lam), which computes the median "
    "of d_k·r_n over the active codes, the λ at which half of them would grow and half shrink."
)


def validate_dictionary(dictionary: Dictionary) -> None:
    """Re-check canonical form (atoms may have been edited after construction).

    Parameters
    ----------
    dictionary:
        The dictionary to check.

    Returns
    -------
    None
        Raises :class:`DictoptInputError` naming the first atom that is zero or not unit norm.
    """
    if not isinstance(dictionary, Dictionary):
        raise DictoptInputError(
            f"dictionary: expected a dictopt Dictionary, got {type(dictionary).__name__}; "
            "build one with Dictionary.from_decoder(W_dec, b_dec, lam=...)"
        )
    norms = dictionary.atoms.norm(dim=1)
    if bool((norms == 0).any()):
        k = int((norms == 0).nonzero()[0])
        raise DictoptInputError(f"dictionary: atom {k} is zero; a canonical atom has norm 1")
    bad = ((norms - 1).abs() > 1e-5).nonzero()
    if bad.numel():
        k = int(bad[0])
        raise DictoptInputError(
            f"dictionary: atom {k} has norm {float(norms[k]):.6g}, not 1 (not canonical); "
            "use Dictionary.from_decoder(W_dec, ...) to canonicalise atoms and codes"
        )


@dataclass
class Setup:
    """What every phase needs: the dictionary (with λ) and how to get codes."""

    dictionary: Dictionary
    """The dictionary being checked, with λ set."""
    lam: float
    mode: CodesMode
    """``"own"``, ``"optimal"`` or ``"given"`` (see :func:`dictopt.coders.make_coder`)."""
    coder: Coder
    amortisation: AmortisationPlan
    """Which rows pass 1 also solves exactly for the amortisation gap
    (:mod:`dictopt.check.amortisation`)."""
    amortisation_note: str | None = None
    """Why the amortisation gap was skipped, if it was."""
    cache: CodeCache | None = None
    """Optimal codes held between the passes (:mod:`dictopt.check.codecache`), or None."""

    def codes(self, x: torch.Tensor, start: int, *, hold: bool = True) -> torch.Tensor:
        """Validated canonical codes ``[n, K]`` of a chunk whose first row is ``start``.

        ``hold=False`` leaves a freshly computed chunk out of the cache, for a caller that
        holds it itself with the nonzeros it computes anyway (:meth:`CodeCache.put`)."""
        if self.cache is None:
            return chunk_codes(self.coder, x, start, self.dictionary.K, self.dictionary.dtype)
        held = self.cache.get(start, x.shape[0])
        if held is not None:
            return held
        a = chunk_codes(self.coder, x, start, self.dictionary.K, self.dictionary.dtype)
        if hold:
            self.cache.put(start, a)
        return a


def prepare_setup(
    dictionary: Dictionary, d: int, codes: object, lam: float | None, amortisation: Any,
    n_rows: int | None = None,
) -> Setup:
    """Validate the dictionary against data of width ``d``, fix λ, choose the coder and plan
    (and log, before pass 1) the amortisation gap.

    Parameters
    ----------
    dictionary:
        A canonical dictionary.
    d:
        Width of the data.
    codes:
        As for :func:`dictopt.coders.make_coder`.
    lam:
        λ (overrides the dictionary's); required when the dictionary has none.
    amortisation:
        As for :func:`dictopt.check.check` (see
        :func:`~dictopt.check.amortisation.plan_amortisation`).
    n_rows:
        Rows in the data, when known (the sample rate needs it).

    Returns
    -------
    Setup
    """
    validate_dictionary(dictionary)
    lam = lam if lam is not None else dictionary.lam
    if lam is None:
        raise DictoptInputError(f"lam: missing; {LAM_HELP}")
    dictionary = dictionary.with_lam(lam)
    check_width(d, dictionary.d, None)
    mode, coder = make_coder(dictionary, codes)
    plan = plan_amortisation(amortisation, codes_mode=mode, population=n_rows)
    announce(plan, dictionary.K, dictionary.d)
    return Setup(dictionary, float(dictionary.lam), mode, coder, plan)


def require_shippable_codes(executor: Any, codes: object) -> None:
    """Refuse given code arrays for an executor that would copy them to every partition.

    Parameters
    ----------
    executor:
        An :class:`~dictopt.check.executor.Executor`.
    codes:
        The ``codes=`` argument.

    Returns
    -------
    None
        Raises :class:`DictoptInputError` for an array with a distributed executor.
    """
    if not executor.ships_arrays and not (isinstance(codes, str) or callable(codes)):
        raise DictoptInputError(
            "codes: a distributed run computes codes on the workers: pass 'own', 'optimal' "
            "or a picklable callable x -> codes, not an array of given codes"
        )
