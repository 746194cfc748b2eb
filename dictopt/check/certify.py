"""``certify``: apply certificates on the data and measure the loss change (THEORY §2).

Each move is applied to every chunk exactly as :mod:`dictopt.check.moves` defines it (new
atoms, new codes of the changed atoms, bias shift); the measured change is the difference of
the canonical loss before and after, streamed, next to the first-order prediction
``slope × step``. Only the changed atoms enter, so one pass measures many moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from dictopt.check.checker import _codes_for, make_coder, validate_dictionary
from dictopt.check.moves import ChunkState
from dictopt.check.report import CheckReport, Violation
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

F64 = torch.float64


class Measurement(NamedTuple):
    """A certificate measured on data (decreases are positive when the loss goes down)."""

    violation: Violation
    step: float
    predicted_decrease: float
    measured_decrease: float
    min_new_code: float
    """Smallest code after the move (≥ 0 up to rounding for a valid certificate)."""


def certify(
    dictionary: Dictionary,
    source: Any,
    violations: CheckReport | Sequence[Violation],
    *,
    codes: Any = "own",
    step_scale: float = 1.0,
    top: int | None = 50,
    lam: float | None = None,
    progress: bool = False,
) -> list[Measurement]:
    """Measure the loss change of each violation's certificate on the data.

    Parameters
    ----------
    dictionary, source, codes, lam:
        As for :func:`dictopt.check.check` (use the same ``codes`` that were checked).
    violations:
        A report or a list of violations; only those with a move and a nonzero step count
        (a negative step is a move backwards, e.g. shrinking codes for C2's scale part).
    step_scale:
        Multiplies each move's step (small values test the first-order prediction).
    top:
        Measure only the first ``top`` violations (ranked as in the report); ``None`` = all.

    Returns
    -------
    list[Measurement]
        With ``step_scale == 1`` the violations' ``measured_decrease`` is also filled in.
    """
    validate_dictionary(dictionary)
    lam = float(lam if lam is not None else dictionary.lam or 0) or None
    if lam is None:
        raise DictoptInputError("lam: certify needs λ (pass lam=...)")
    vs = list(violations.violations if isinstance(violations, CheckReport) else violations)
    vs = [v for v in vs if v.move is not None and v.step != 0][:top]
    from dictopt.data.sources import as_source

    src = as_source(source, dtype=dictionary.dtype)
    _, coder = make_coder(dictionary, codes)
    atoms, bias = dictionary.atoms, dictionary.bias
    base_steps = [v.move.step for v in vs]
    for v, s in zip(vs, base_steps, strict=True):
        v.move.step = s * step_scale
    delta = torch.zeros(len(vs), dtype=F64)
    min_code = torch.full((len(vs),), torch.inf, dtype=F64)
    n = 0
    try:
        for chunk in src.iter_chunks(progress=progress, desc="certify"):
            x = chunk.data.to(dictionary.device)
            a = _codes_for(coder, x, chunk.start, dictionary.K, dictionary.dtype)
            r = x - dictionary.decode(a)
            n += x.shape[0]
            half = 0.5 * (r.to(F64) ** 2).sum()
            state = ChunkState(x, a, atoms, bias, r, lam)
            for p, v in enumerate(vs):
                ch = v.move.changes(state)
                idx = ch.idx
                drec = ch.codes @ ch.atoms - a[:, idx] @ atoms[idx]
                if ch.dbias is not None:
                    drec = drec + ch.dbias
                r2 = (r - drec).to(F64)
                dl1 = (ch.codes - a[:, idx]).to(F64).sum()
                delta[p] += 0.5 * (r2 * r2).sum() - half + lam * dl1
                if ch.codes.numel():
                    min_code[p] = min(float(min_code[p]), float(ch.codes.min()))
    finally:
        for v, s in zip(vs, base_steps, strict=True):
            v.move.step = s
    out = []
    for p, v in enumerate(vs):
        step = v.step * step_scale
        measured = -float(delta[p]) / n
        if step_scale == 1.0:
            v.measured_decrease = measured
        out.append(Measurement(v, step, v.slope * step, measured, float(min_code[p])))
    return out
