"""Multiple testing of held-out findings (THEORY §5): one-sided normal p-values and Holm's
step-down procedure.

Every candidate the held-out stage measures is a test of the hypothesis "this move does not
lower the expected loss" (``E δ_n ≥ 0``) by its z-score ``−mean_V δ / se``. With hundreds of
candidates per check, testing each at ``z = 3`` alone would let about ``m · Φ(−3)`` false
findings through. Holm's procedure keeps the probability of *any* false finding among the
``m`` tests at most ``α = Φ(−z)`` (the level a single test at ``z`` has), under any
dependence between the tests (candidates share rows, so they are dependent), and rejects
everything Bonferroni rejects and more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CORRECTIONS = ("holm", "none")
"""``holm``: family-wise error ``≤ α`` (default); ``none``: each test at ``z`` alone."""


def one_sided_p(z: float) -> float:
    """``P(Z ≥ z)`` for a standard normal ``Z`` (``z = +∞`` gives 0).

    Parameters
    ----------
    z:
        The z-score ``decrease / se``.

    Returns
    -------
    float
    """
    if math.isnan(z):
        return 1.0
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def alpha_of(z: float) -> float:
    """The level ``α = Φ(−z)`` of one one-sided test at ``z`` standard errors.

    Parameters
    ----------
    z:
        The threshold in standard errors.

    Returns
    -------
    float
        ``Φ(−z)``.
    """
    return one_sided_p(z)


def holm(p: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rejections of ``m = len(p)`` hypotheses at family-wise level ``alpha``.

    Sort ``p`` ascending; reject ``p_(r)`` while ``p_(r) ≤ α / (m − r + 1)`` (``r = 1, 2, …``)
    and stop at the first that fails.

    Parameters
    ----------
    p:
        The p-values, in any order.
    alpha:
        Family-wise error level.

    Returns
    -------
    list[bool]
        Rejected or not, in the order of ``p``.
    """
    m = len(p)
    order = sorted(range(m), key=lambda t: p[t])
    out = [False] * m
    for r, t in enumerate(order):
        if p[t] <= alpha / (m - r):
            out[t] = True
        else:
            break
    return out
