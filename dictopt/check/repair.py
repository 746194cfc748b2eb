"""``repair``: apply certified moves greedily until no certificate lowers the loss.

Each round checks the dictionary with optimal codes (exact nonnegative lasso for the current
atoms and bias), applies the move of the violation with the largest exact decrease (C2–C5 and
the joint hull; C1 is about codes, which are re-solved anyway), re-solves the codes and
accepts the move only if the loss went down. Because the move lowers ``L(D, b, A)`` for the old
optimal codes ``A`` and re-solving can only lower it further, every accepted round is a strict
decrease: the loss sequence is monotone. The result has no encoder (its codes are the optimal
codes).

*Work reused.* The optimal codes of the current dictionary are held with the prepared data
(chunk by chunk, when ``N × (K + d)`` fits ``code_budget_bytes``): the check of each round
reads them instead of solving the lasso twice, and each trial move's codes are solved from them (a
warm start of the exact coder: the same optimum, reached in a few active-set steps because a
move changes few codes). A trial that moves a few atoms and not the bias re-solves only the
rows whose codes touch a moved atom or where a moved atom now violates C1
(:func:`solve_after_move`): the other rows keep their residuals, so their held codes already
meet the exact coder's stopping rule. The accepted trial's codes are the next round's codes.
The source is read and validated once: later full solves run on the held prepared chunks, and
each round's check streams the held validated chunks (the same rows in the same order).
Without the budget (or with a custom ``coder``) every solve starts from zero, as the exact
coder always did. Each round's check takes the joint hull's direction from its column
generation (``hull_duals="working_set"``; pass ``hull_duals="reference"`` for the LP on every
point) and holds a :class:`~dictopt.check.hull.HullBasis`: an atom whose hull membership the
points of the previous round still certify passes without an LP (the same verdict). On the
demo world both directions reach the same loss, 0.0576138649964307, in 100 moves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from dictopt.check.checker import check, validate_dictionary
from dictopt.check.report import CheckReport, Violation
from dictopt.data.evaluate import evaluate
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)

#: Hold the current optimal codes and the data (``N × (K + d)`` float64) when they take at most
#: this many bytes.
CODE_BUDGET_BYTES = 1 << 30


class RepairResult(NamedTuple):
    """The repaired dictionary, the loss after each accepted round, and the final report."""

    dictionary: Dictionary
    losses: list[float]
    moves: list[dict[str, Any]]
    report: CheckReport


class SolvedCodes(NamedTuple):
    """A dictionary's loss with its optimal codes, the codes of every chunk and (when held)
    the prepared data of every chunk."""

    loss: float
    codes: list[torch.Tensor]
    data: list[torch.Tensor] | None = None


def _solve_all(dic: Dictionary, source: Any, init: SolvedCodes | None) -> SolvedCodes:
    """Optimal codes of every chunk (warm-started from ``init``'s, chunk by chunk) and the
    loss they give, through :func:`dictopt.problem.evaluate` (which streams chunks in order);
    the prepared chunks are kept."""
    from dictopt.lasso import solve_codes
    from dictopt.problem import LossSums, check_codes

    if init is not None and init.data is not None:
        # the prepared chunks are held: solve them in the same order, summed as evaluate sums
        # them (the same codes and loss, without reading and validating the source again)
        acc = LossSums(dic)
        parts = []
        for x, start in zip(init.data, init.codes, strict=True):
            a = solve_codes(dic.atoms, x, dic.lam, bias=dic.bias, init=start).codes
            a = a.to(dic.dtype)
            check_codes(a, x.shape[0], dic.K, tol=1e-12)
            parts.append(a)
            acc.update(x, a, dic.decode(a))
        return SolvedCodes(acc.result().loss, parts, init.data)

    parts: list[torch.Tensor] = []
    data: list[torch.Tensor] = []
    starts = iter(init.codes) if init is not None else None

    def coder(x: torch.Tensor) -> torch.Tensor:
        start = None if starts is None else next(starts)
        parts.append(solve_codes(dic.atoms, x, dic.lam, bias=dic.bias, init=start).codes)
        data.append(x)
        return parts[-1]

    return SolvedCodes(evaluate(dic, source, codes=coder).loss, parts, data)


def changed_atoms(new: Dictionary, old: Dictionary) -> torch.Tensor | None:
    """Indices of the atoms that differ between two dictionaries of the same shape, or None
    when the bias differs (then every residual changes)."""
    if not torch.equal(new.bias, old.bias):
        return None
    return (new.atoms != old.atoms).any(dim=1).nonzero().flatten()


def solve_after_move(new: Dictionary, old: Dictionary, held: SolvedCodes) -> SolvedCodes | None:
    """The optimal codes and loss of ``new`` from those of ``old`` (``held``, with its data),
    re-solving only the rows a move of a few atoms can change; None when the move changed the
    bias or more than half the atoms (solve every row then).

    A row whose codes are zero on every changed atom keeps its residual, so its codes stay
    optimal unless a changed atom now violates C1 there (``d_k · r_n > λ (1 + tol)``, the
    exact coder's own test): only the other rows are re-solved, warm-started from their held
    codes. That is the exact coder's answer on every row: warm-started on all rows it stops at
    once on the rows left out here, which already meet its stopping rule. The loss is summed
    over every row as :func:`dictopt.problem.evaluate` sums it.
    """
    from dictopt.lasso import DEFAULT_TOL, solve_codes
    from dictopt.problem import LossSums

    S = changed_atoms(new, old)
    if S is None or held.data is None or 2 * S.numel() > new.K:
        return None
    lam = float(new.lam)
    parts: list[torch.Tensor] = []
    acc = LossSums(new)
    for x, a in zip(held.data, held.codes, strict=True):
        codes, recon = a, new.decode(a)
        if S.numel():
            touch = (a[:, S] > 0).any(dim=1)
            g = (x - recon) @ new.atoms[S].T  # unchanged residuals where not touched
            redo = touch | ((g - lam).amax(dim=1) / lam > DEFAULT_TOL)
            rows = redo.nonzero().flatten()
            if rows.numel():
                codes = a.clone()
                codes[rows] = solve_codes(new.atoms, x[rows], lam, bias=new.bias,
                                          init=a[rows]).codes
                recon = new.decode(codes)
        parts.append(codes)
        acc.update(x, codes, recon)
    return SolvedCodes(acc.result().loss, parts, held.data)


def repair(
    dictionary: Dictionary,
    source: Any,
    *,
    lam: float | None = None,
    coder: Callable[[Dictionary, torch.Tensor], torch.Tensor] | None = None,
    max_rounds: int = 100,
    min_decrease: float = 0.0,
    progress: bool = False,
    code_budget_bytes: int = CODE_BUDGET_BYTES,
    **check_options: Any,
) -> RepairResult:
    """Repair a dictionary by certified descent (see the module docstring).

    Parameters
    ----------
    dictionary:
        The dictionary to repair (canonical; its encoder is dropped).
    source:
        Activations, as for :func:`dictopt.check.check`.
    lam:
        λ (overrides the dictionary's).
    coder:
        ``coder(dictionary, x) -> codes``, the exact coder; default
        :meth:`Dictionary.optimal_codes` (then codes are held and warm-started).
    max_rounds:
        Upper bound on accepted moves.
    min_decrease:
        Stop when the best certified decrease is at most this.
    progress:
        A progress bar over rounds, with the loss.
    code_budget_bytes:
        Hold the current optimal codes and the data in memory when ``8 N (K + d)`` is at
        most this.
    check_options:
        Passed to :func:`dictopt.check.check`.

    Returns
    -------
    RepairResult
    """
    from dictopt.data.sources import as_source
    from dictopt.io.objects import as_dictionary

    current, lam = _working_copy(as_dictionary(dictionary), lam)
    src = as_source(source)
    reuse = coder is None and 8 * src.n * (current.K + current.d) <= code_budget_bytes
    # the joint hull's own dual (equally optimal; no LP on every point each round)
    # and the points that carried each passing atom's hull last round (no LP while they do)
    from dictopt.check.hull import HullBasis

    objective = _Objective(source, coder, reuse, {"hull_duals": "working_set",
                                                  "hull_basis": HullBasis(), **check_options})
    solved = objective.solve(current)
    loss = solved.loss
    losses = [loss]
    moves: list[dict[str, Any]] = []
    report = objective.check(current, solved)

    bar = tqdm(total=max_rounds, desc="repair", unit="move", disable=not progress, leave=False)
    try:
        for _ in range(max_rounds):
            found = _first_descent(objective, current, solved, loss, report, min_decrease, lam)
            if found is None:
                break
            vs, trial, trial_solved = found
            log.info("repair: %s loss %.6g -> %.6g", [v.condition for v in vs], loss,
                     trial_solved.loss)
            moves.append({"conditions": [v.condition for v in vs],
                          "pairs": [(v.i, v.j) for v in vs],
                          "loss": trial_solved.loss})
            current, loss, solved = trial, trial_solved.loss, trial_solved
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.6g}")
            report = objective.check(current, solved)
    finally:
        bar.close()
    return RepairResult(current, losses, moves, report)


class _Objective:
    """How repair solves a dictionary's codes (held and warm-started when ``reuse``) and
    checks it."""

    def __init__(
        self, source: Any, coder: Callable[[Dictionary, torch.Tensor], torch.Tensor] | None,
        reuse: bool, check_options: dict[str, Any],
    ) -> None:
        self.source, self.reuse, self.check_options = source, reuse, check_options
        self.code = coder or (lambda dic, x: dic.optimal_codes(x))
        self.held: tuple[torch.dtype, _HeldChunks] | None = None

    def codes_of(self, dic: Dictionary) -> Callable[[torch.Tensor], torch.Tensor]:
        """The exact coder of ``dic``."""
        return lambda x: self.code(dic, x)

    def solve(self, dic: Dictionary, init: SolvedCodes | None = None,
              moved_from: Dictionary | None = None) -> SolvedCodes:
        """The loss of ``dic`` with exact codes (and the codes, when held): from ``init``'s
        codes, re-solving only the rows the move from ``moved_from`` can change when it is a
        move of a few atoms (:func:`solve_after_move`)."""
        if not self.reuse:
            return SolvedCodes(evaluate(dic, self.source, codes=self.codes_of(dic)).loss, [])
        if init is not None and moved_from is not None:
            found = solve_after_move(dic, moved_from, init)
            if found is not None:
                return found
        return _solve_all(dic, self.source, init)

    def check(self, dic: Dictionary, solved: SolvedCodes) -> CheckReport:
        """The check of ``dic`` at its exact codes (streaming the held chunks when
        :meth:`_check_source` holds them)."""
        codes: Any = torch.cat(solved.codes) if self.reuse else self.codes_of(dic)
        return check(dic, self._check_source(dic), codes=codes, amortisation=False,
                     **self.check_options)

    def _check_source(self, dic: Dictionary) -> Any:
        """What the check streams: the chunks the local executor opens for ``dic``'s dtype,
        read and validated once and held (:class:`_HeldChunks`) when codes are held, the
        check runs locally and the source knows its N; otherwise the source itself."""
        if not self.reuse or self.check_options.get("executor") is not None:
            return self.source
        if self.held is None or self.held[0] != dic.dtype:
            from dictopt.check.executor import LocalExecutor

            opened = LocalExecutor().open(self.source, dtype=dic.dtype,
                                          chunk_size=self.check_options.get("chunk_size"))
            if opened.n is None:
                return self.source
            self.held = (dic.dtype, _HeldChunks(opened))
        return self.held[1]


class _HeldChunks:
    """A source's validated chunks, read once and streamed again from memory (the same
    :class:`~dictopt.data.sources.Chunk` objects every pass, so every pass sees the same rows)."""

    def __init__(self, opened: Any) -> None:
        self.d, self.n = opened.d, opened.n
        self.chunks = list(opened.iter_chunks())

    def iter_chunks(self, *, progress: bool = False, desc: str = "chunks") -> Any:
        """The held chunks in order (``progress`` and ``desc`` are accepted and unused)."""
        return iter(self.chunks)


def _first_descent(
    objective: _Objective, current: Dictionary, solved: SolvedCodes, loss: float,
    report: CheckReport, min_decrease: float, lam: float,
) -> tuple[list[Violation], Dictionary, SolvedCodes] | None:
    """The first move set (in :func:`_tries`'s order) whose loss with re-solved codes is below
    ``loss``: the moves, the moved dictionary and its solve; None when none descends."""
    for vs in _tries(report, min_decrease):
        trial = _moved(current, vs, lam)
        trial_solved = objective.solve(trial, solved, moved_from=current)
        if trial_solved.loss < loss:
            return vs, trial, trial_solved
    return None


def _working_copy(dictionary: Dictionary, lam: float | None) -> tuple[Dictionary, float]:
    """A validated copy of ``dictionary`` at λ (without its encoder, marked repaired), and λ."""
    validate_dictionary(dictionary)
    lam = lam if lam is not None else dictionary.lam
    if lam is None:
        raise DictoptInputError("lam: repair needs λ (pass lam=... or --lam)")
    return Dictionary(
        atoms=dictionary.atoms.clone(), bias=dictionary.bias.clone(), lam=lam, encoder=None,
        has_bias=dictionary.has_bias, meta={**dictionary.meta, "repaired": True},
    ), lam


def _tries(report: CheckReport, min_decrease: float) -> list[list[Violation]]:
    """The move sets to try this round, in order.

    Structural moves one at a time (best first), then all stationarity moves (C2, C3)
    together: each is accepted only if the loss with re-solved codes goes down.
    """
    cands = [
        v for v in report.violations
        if v.condition != "C1" and v.move is not None and v.step > 0
        and (v.model_decrease or 0.0) > min_decrease
    ]
    tries = [[v] for v in cands if v.condition in ("C4", "C5", "hull")][:5]
    block = [v for v in cands if v.condition in ("C2", "C3")]
    if block:
        tries.append(block)
        # the joint step can overshoot where single moves still descend: try the best few
        tries += [[v] for v in block[:5]] if len(block) > 1 else []
    return tries


def _moved(current: Dictionary, vs: list[Violation], lam: float) -> Dictionary:
    """``current`` after the moves ``vs`` (of distinct atoms and the bias: they compose)."""
    atoms, bias = current.atoms, current.bias
    for v in vs:
        atoms, bias = v.move.apply_dictionary(atoms, bias)
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    return Dictionary(atoms=atoms, bias=bias, lam=lam, has_bias=current.has_bias,
                      meta=current.meta)
