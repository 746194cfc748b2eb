"""``certify``: apply certificates on the data and measure the loss change (THEORY §2).

Each move is applied to every chunk exactly as :mod:`dictopt.check.moves` defines it (new
atoms, new codes of the changed atoms, bias shift); the measured change is the difference of
the canonical loss before and after, streamed, next to the first-order prediction
``slope × step``. Only the changed atoms enter, so one pass measures many moves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from dictopt.check.executor import Executor, LocalExecutor, open_checked
from dictopt.check.inputs import require_shippable_codes, validate_dictionary
from dictopt.check.moves import ChunkState, Move
from dictopt.check.report import CheckReport, Violation
from dictopt.coders import Coder, chunk_codes, make_coder
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
    chunk_size: int | None = None,
    progress: bool = False,
    executor: Executor | None = None,
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
    chunk_size:
        Rows per chunk (default: the source's).
    progress:
        Show a progress bar.
    executor:
        Runs the pass (default: :class:`~dictopt.check.executor.LocalExecutor`; with
        ``dictopt.distributed.DaskExecutor`` the sums are taken partition by partition).

    Returns
    -------
    list[Measurement]
        With ``step_scale == 1`` the violations' ``measured_decrease`` is also filled in.
    """
    from dictopt.io.objects import as_dictionary

    dictionary = as_dictionary(dictionary)
    executor = executor if executor is not None else LocalExecutor()
    require_shippable_codes(executor, codes)
    lam, vs = prepare_certify(dictionary, violations, lam, top)
    _, coder = make_coder(dictionary, codes)
    job = CertifyPass(dictionary, lam, coder, scaled_moves(vs, step_scale))
    with executor.session():
        stream = open_checked(executor, source, d=dictionary.d, dtype=dictionary.dtype,
                              chunk_size=chunk_size)
        sums = executor.run(job, stream, progress=progress)
    return finish_certify(vs, sums, step_scale)


class CertifyPass:
    """The loss change of each move, as a :class:`~dictopt.check.executor.StreamPass`
    (state: :class:`CertifySums`).

    Parameters
    ----------
    dictionary, lam:
        The dictionary and λ the moves apply to.
    coder:
        The codes the moves start from (:func:`dictopt.coders.make_coder`).
    moves:
        The moves, steps already scaled.
    """

    desc = "certify"
    fixes_first_chunk = False

    def __init__(self, dictionary: Dictionary, lam: float, coder: Coder,
                 moves: list[Move]) -> None:
        self.dictionary, self.lam, self.coder, self.moves = dictionary, lam, coder, moves

    def first_chunk(self, x: torch.Tensor, start: int) -> CertifyPass:
        """Nothing is fixed on the first chunk."""
        return self

    def start(self) -> CertifySums:
        """No change measured yet."""
        return CertifySums.empty(len(self.moves))

    def update(self, state: CertifySums, x: torch.Tensor, start: int) -> CertifySums:
        """Add the loss changes on one chunk."""
        dic = self.dictionary
        x = x.to(dic.device)
        a = chunk_codes(self.coder, x, start, dic.K, dic.dtype)
        return state.merge(certify_chunk(dic, self.lam, self.moves, x, a))

    @staticmethod
    def merge(a: CertifySums, b: CertifySums) -> CertifySums:
        """``a`` with ``b`` added."""
        return a.merge(b)


class CertifySums(NamedTuple):
    """Per move, the loss change summed over points and the smallest new code (mergeable)."""

    delta: torch.Tensor
    """``[P]`` ``Σ_n`` (loss after − loss before)."""
    min_code: torch.Tensor
    """``[P]`` smallest code of the changed atoms after the move."""
    n: list[int]
    """``[points seen]`` (a list so that :meth:`merge` can add in place)."""

    @classmethod
    def empty(cls, P: int) -> CertifySums:
        return cls(torch.zeros(P, dtype=F64), torch.full((P,), torch.inf, dtype=F64), [0])

    def merge(self, o: CertifySums) -> CertifySums:
        """Add ``o`` (other chunks) into ``self``; returns ``self``."""
        self.delta.add_(o.delta)
        torch.minimum(self.min_code, o.min_code, out=self.min_code)
        self.n[0] += o.n[0]
        return self


def prepare_certify(
    dictionary: Dictionary,
    violations: CheckReport | Sequence[Violation],
    lam: float | None,
    top: int | None,
) -> tuple[float, list[Violation]]:
    """Validate, fix λ and select the violations to measure (those with a nonzero step).

    Parameters
    ----------
    dictionary:
        The dictionary the moves apply to.
    violations:
        A report or a list of violations.
    lam:
        λ (overrides the dictionary's).
    top:
        Keep only the first ``top`` measurable violations (``None``: all).

    Returns
    -------
    tuple[float, list[Violation]]
        λ and the violations with a move and a nonzero step.
    """
    validate_dictionary(dictionary)
    lam = float(lam if lam is not None else dictionary.lam or 0) or None
    if lam is None:
        raise DictoptInputError("lam: certify needs λ (pass lam=...)")
    vs = list(violations.violations if isinstance(violations, CheckReport) else violations)
    return lam, [v for v in vs if v.move is not None and v.step != 0][:top]


def scaled_moves(vs: Sequence[Violation], step_scale: float) -> list[Move]:
    """Copies of the violations' moves with their steps multiplied by ``step_scale``.

    Parameters
    ----------
    vs:
        Violations with moves.
    step_scale:
        Factor applied to every step.

    Returns
    -------
    list[Move]
        One copy per violation.
    """
    return [dataclasses.replace(v.move, step=v.move.step * step_scale) for v in vs]


def certify_chunk(
    dictionary: Dictionary, lam: float, moves: Sequence[Move], x: torch.Tensor, a: torch.Tensor
) -> CertifySums:
    """Loss change of each move on one chunk ``x`` with codes ``a`` (only changed atoms).

    Parameters
    ----------
    dictionary:
        The dictionary the moves apply to.
    lam:
        λ.
    moves:
        The moves (steps already scaled).
    x:
        One chunk ``[n, d]``.
    a:
        Its codes ``[n, K]``.

    Returns
    -------
    CertifySums
        Per move, the summed loss change and smallest new code on the chunk.
    """
    atoms, bias = dictionary.atoms, dictionary.bias
    out = CertifySums.empty(len(moves))
    r = x - dictionary.decode(a)
    out.n[0] = x.shape[0]
    half = 0.5 * (r.to(F64) ** 2).sum()
    state = ChunkState(x, a, atoms, bias, r, lam)
    for p, move in enumerate(moves):
        ch = move.changes(state)
        idx = ch.idx
        drec = ch.codes @ ch.atoms - a[:, idx] @ atoms[idx]
        if ch.dbias is not None:
            drec = drec + ch.dbias
        r2 = (r - drec).to(F64)
        dl1 = (ch.codes - a[:, idx]).to(F64).sum()
        out.delta[p] += 0.5 * (r2 * r2).sum() - half + lam * dl1
        if ch.codes.numel():
            out.min_code[p] = min(float(out.min_code[p]), float(ch.codes.min()))
    return out


def finish_certify(
    vs: Sequence[Violation], sums: CertifySums, step_scale: float
) -> list[Measurement]:
    """The measurements from the summed changes (fills ``measured_decrease`` at scale 1).

    Parameters
    ----------
    vs:
        The measured violations.
    sums:
        Their loss changes summed over every row.
    step_scale:
        The factor the steps were scaled by.

    Returns
    -------
    list[Measurement]
        One per violation, in order.
    """
    out = []
    n = sums.n[0]
    for p, v in enumerate(vs):
        step = v.step * step_scale
        measured = -float(sums.delta[p]) / n
        if step_scale == 1.0:
            v.measured_decrease = measured
        out.append(Measurement(v, step, v.slope * step, measured, float(sums.min_code[p])))
    return out
