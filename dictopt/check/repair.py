"""``repair``: apply certified moves greedily until no certificate lowers the loss.

Each round checks the dictionary with optimal codes (exact nonnegative lasso for the current
atoms and bias), applies the move of the violation with the largest exact decrease (C2–C5 and
the joint hull; C1 is about codes, which are re-solved anyway), re-solves the codes and
accepts the move only if the loss went down. Because the move lowers ``L(D, b, A)`` for the old
optimal codes ``A`` and re-solving can only lower it further, every accepted round is a strict
decrease: the loss sequence is monotone. The result has no encoder (its codes are the optimal
codes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from dictopt.check.checker import check, validate_dictionary
from dictopt.check.report import CheckReport
from dictopt.problem import Dictionary, evaluate
from dictopt.validation import DictoptInputError

log = logging.getLogger(__name__)


class RepairResult(NamedTuple):
    """The repaired dictionary, the loss after each accepted round, and the final report."""

    dictionary: Dictionary
    losses: list[float]
    moves: list[dict[str, Any]]
    report: CheckReport


def repair(
    dictionary: Dictionary,
    source: Any,
    *,
    lam: float | None = None,
    coder: Callable[[Dictionary, torch.Tensor], torch.Tensor] | None = None,
    max_rounds: int = 100,
    min_decrease: float = 0.0,
    progress: bool = False,
    **check_options: Any,
) -> RepairResult:
    """Repair a dictionary by certified descent (see the module docstring).

    Parameters
    ----------
    coder:
        ``coder(dictionary, x) -> codes``, the exact coder; default
        :meth:`Dictionary.optimal_codes`.
    max_rounds:
        Upper bound on accepted moves.
    min_decrease:
        Stop when the best certified decrease is at most this.
    progress:
        Show a progress bar over the rounds (with the current loss).
    """
    from dictopt.io.objects import as_dictionary

    dictionary = as_dictionary(dictionary)
    validate_dictionary(dictionary)
    lam = lam if lam is not None else dictionary.lam
    if lam is None:
        raise DictoptInputError("lam: repair needs λ (pass lam=... or --lam)")
    current = Dictionary(
        atoms=dictionary.atoms.clone(), bias=dictionary.bias.clone(), lam=lam, encoder=None,
        has_bias=dictionary.has_bias, meta={**dictionary.meta, "repaired": True},
    )
    code = coder or (lambda dic, x: dic.optimal_codes(x))

    def codes_of(dic: Dictionary) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda x: code(dic, x)

    loss = evaluate(current, source, codes=codes_of(current)).loss
    losses = [loss]
    moves: list[dict[str, Any]] = []
    report = check(current, source, codes=codes_of(current), amortisation=False, **check_options)
    def trial_of(vs: list) -> Dictionary:
        atoms, bias = current.atoms, current.bias
        for v in vs:  # moves of distinct atoms (and the bias) compose
            atoms, bias = v.move.apply_dictionary(atoms, bias)
        atoms = atoms / atoms.norm(dim=1, keepdim=True)
        return Dictionary(atoms=atoms, bias=bias, lam=lam, has_bias=current.has_bias,
                          meta=current.meta)

    bar = tqdm(total=max_rounds, desc="repair", unit="round", disable=not progress,
               leave=False)
    for _ in range(max_rounds):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.6g}", refresh=False)
        cands = [
            v for v in report.violations
            if v.condition != "C1" and v.move is not None and v.step > 0
            and (v.model_decrease or 0.0) > min_decrease
        ]
        # structural moves one at a time (best first), then all stationarity moves (C2, C3)
        # together: each is accepted only if the loss with re-solved codes goes down.
        tries = [[v] for v in cands if v.condition in ("C4", "C5", "hull")][:5]
        block = [v for v in cands if v.condition in ("C2", "C3")]
        if block:
            tries.append(block)
            # the joint step can overshoot where single moves still descend: try the best few
            tries += [[v] for v in block[:5]] if len(block) > 1 else []
        accepted = False
        for vs in tries:
            trial = trial_of(vs)
            new_loss = evaluate(trial, source, codes=codes_of(trial)).loss
            if new_loss < loss:
                log.info("repair: %s loss %.6g -> %.6g", [v.condition for v in vs], loss,
                         new_loss)
                moves.append({"conditions": [v.condition for v in vs],
                              "pairs": [(v.i, v.j) for v in vs], "loss": new_loss})
                current, loss = trial, new_loss
                losses.append(loss)
                accepted = True
                break
        if not accepted:
            break
        report = check(current, source, codes=codes_of(current), amortisation=False,
                       **check_options)
    bar.close()
    return RepairResult(current, losses, moves, report)
