"""How a check runs: :class:`CheckOptions` (frozen, like :class:`Tolerances`), one set of
defaults for :func:`dictopt.check.check` and every driver of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from dictopt.check.tolerances import (
    DEFAULT_LABELS,
    DEFAULT_TOLERANCES,
    LabelThresholds,
    Tolerances,
)
from dictopt.validation import DictoptInputError


@dataclass(frozen=True)
class CheckOptions:
    """Options of the check that do not name its inputs (see :func:`dictopt.check.check`)."""

    tol: Tolerances = DEFAULT_TOLERANCES
    """Tolerances of every condition."""
    thresholds: LabelThresholds = DEFAULT_LABELS
    """Thresholds of the structural labels."""
    buffer_size: int = 16
    """``m``, extreme points kept per atom (pairs the buffers cannot decide are computed
    exactly in pass 2, so ``m`` affects speed, never the result)."""
    hull: bool | Literal["auto"] = "auto"
    """Joint hull: ``"auto"`` (exact LP when ``N·K ≤ hull_exact_limit``), ``True``, ``False``."""
    hull_exact_limit: int = 5_000_000
    """Largest ``N·K`` for which ``hull="auto"`` keeps the codes and solves the LPs."""
    hull_duals: Literal["reference", "working_set"] = "working_set"
    """A violated atom's hull direction: the column generation's own optimal dual
    (``"working_set"``, the default: verified dual feasible on every inactive point, so its gap
    is the exact distance) or the dual of a second LP on every distinct point
    (``"reference"``, the report's direction before issue 17: the same atoms, distances and
    gaps, another of the equally optimal directions; it cost 82 % of a K = 64 check;
    :mod:`dictopt.check.hull`)."""
    hull_basis: Any = None
    """A :class:`dictopt.check.hull.HullBasis` held across checks of nearby dictionaries
    (``repair``'s rounds): atoms still carried by their earlier points pass without an LP.
    Verdicts are the same with or without it."""
    max_pair_certificates: int = 20_000
    """C5 violations beyond this many (ranked by slope) are listed with step 0."""
    sparse: bool | None = None
    """Sparse code kernels (default: when codes are < 10 % dense on the first chunk)."""
    block: int = 512
    """Rows of the Gram matrix classified at a time between the passes."""
    heldout: Any = None
    """Validate every finding on held-out rows (THEORY §5): ``True`` or a
    :class:`dictopt.check.heldout.HeldoutOptions`; ``None``/``False``: skip."""

    def replace(self, **changes: Any) -> CheckOptions:
        """A copy with ``changes``; an unknown name raises :class:`DictoptInputError`.

        Parameters
        ----------
        **changes:
            Field names of :class:`CheckOptions` and their new values.

        Returns
        -------
        CheckOptions
        """
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise DictoptInputError(
                f"check: unknown option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes) if changes else self


DEFAULT_OPTIONS = CheckOptions()
