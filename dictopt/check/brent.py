"""Bounded Brent minimisation of many scalar functions at once, evaluation by evaluation.

:func:`bounded_brent` is SciPy's ``minimize_scalar(method="bounded")`` (``_minimize_scalar_
bounded``: golden sections and parabolic steps on ``[x1, x2]``, stopping at ``xatol``) written as
a generator: it yields each point it wants evaluated and receives the value. The same
floating-point operations on the same values, in the same order, give the same points and the
same result to the last bit (``tests/test_brent.py`` compares them with SciPy); what it adds is
that a caller can run thousands of minimisations side by side and evaluate one point of each
in a single batched tensor operation (:func:`dictopt.check.moves.best_pair_steps`), instead of
paying Python's and torch's per-call overhead thirty times per minimisation.
"""

from __future__ import annotations

import math
from collections.abc import Generator

SQRT_EPS = math.sqrt(2.2e-16)
GOLDEN_MEAN = 0.5 * (3.0 - math.sqrt(5.0))


def _sign(x: float) -> float:
    """``np.sign`` on a float (NaN stays NaN)."""
    if x != x:
        return x
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def _maximum(a: float, b: float) -> float:
    """``np.maximum`` on floats (NaN if either is NaN)."""
    return a if (a != a or a >= b) else b


def bounded_brent(
    x1: float, x2: float, xatol: float = 1e-5, maxiter: int = 500
) -> Generator[float, float, tuple[float, float]]:
    """SciPy's bounded Brent method as a generator of evaluation points.

    Parameters
    ----------
    x1, x2:
        The bounds, finite, ``x1 ≤ x2``.
    xatol:
        Absolute tolerance on the minimiser.
    maxiter:
        Most evaluations (SciPy's ``maxiter``).

    Yields
    ------
    float
        The next point to evaluate; send its value back.

    Returns
    -------
    tuple[float, float]
        ``(x, f(x))``: SciPy's ``res.x`` and ``res.fun``.
    """
    if not (math.isfinite(x1) and math.isfinite(x2)) or x1 > x2:
        raise ValueError(f"bounded_brent: bounds ({x1}, {x2}) must be finite with x1 <= x2")
    a, b = x1, x2
    fulc = a + GOLDEN_MEAN * (b - a)
    nfc, xf = fulc, fulc
    rat = e = 0.0
    x = xf
    fx = yield x
    num = 1
    ffulc = fnfc = fx
    xm = 0.5 * (a + b)
    tol1 = SQRT_EPS * abs(xf) + xatol / 3.0
    tol2 = 2.0 * tol1
    while abs(xf - xm) > (tol2 - 0.5 * (b - a)):
        golden = 1
        if abs(e) > tol1:  # parabolic fit
            golden = 0
            r = (xf - nfc) * (fx - ffulc)
            q = (xf - fulc) * (fx - fnfc)
            p = (xf - fulc) * q - (xf - nfc) * r
            q = 2.0 * (q - r)
            if q > 0.0:
                p = -p
            q = abs(q)
            r = e
            e = rat
            if (abs(p) < abs(0.5 * q * r)) and (p > q * (a - xf)) and (p < q * (b - xf)):
                rat = (p + 0.0) / q
                x = xf + rat
                if ((x - a) < tol2) or ((b - x) < tol2):
                    si = _sign(xm - xf) + ((xm - xf) == 0)
                    rat = tol1 * si
            else:
                golden = 1
        if golden:  # golden-section step
            e = (a - xf) if xf >= xm else (b - xf)
            rat = GOLDEN_MEAN * e
        si = _sign(rat) + (rat == 0)
        x = xf + si * _maximum(abs(rat), tol1)
        fu = yield x
        num += 1
        if fu <= fx:
            if x >= xf:
                a = xf
            else:
                b = xf
            fulc, ffulc = nfc, fnfc
            nfc, fnfc = xf, fx
            xf, fx = x, fu
        else:
            if x < xf:
                a = x
            else:
                b = x
            if (fu <= fnfc) or (nfc == xf):
                fulc, ffulc = nfc, fnfc
                nfc, fnfc = x, fu
            elif (fu <= ffulc) or (fulc == xf) or (fulc == nfc):
                fulc, ffulc = x, fu
        xm = 0.5 * (a + b)
        tol1 = SQRT_EPS * abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        if num >= maxiter:
            break
    return xf, fx
