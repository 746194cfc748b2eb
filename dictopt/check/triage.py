"""The triage: a check report in a few sentences (what is wrong, what it means, what to do).

:func:`triage` groups the report's violations into *findings* (the two orders of a C5 pair are
one finding; C2's rotation and scale of one atom are one; every C1 violation together is one,
about the encoder), ranks them by the loss decrease of their certificate (the measured one
when :func:`~dictopt.check.certify.certify` filled it in, else the exact model decrease) and
words the first few, at most two of one condition. ``dictopt check`` ends with it and the
HTML report opens with it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

#: Findings worded by default.
TOP = 5


class Finding(NamedTuple):
    """One thing wrong with the dictionary, in words."""

    condition: str
    """``C1`` … ``C5``, ``hull``."""
    atoms: tuple[int, ...]
    """The atoms involved (empty for the bias)."""
    decrease: float
    """Loss decrease of the certificate (loss units)."""
    measured: bool
    """Whether ``decrease`` was measured on the data (else the exact model decrease)."""
    fraction: float | None
    """``decrease / loss``."""
    meaning: str
    """One sentence: what the finding says about the dictionary."""
    action: str
    """One sentence: what to do about it."""

    def line(self) -> str:
        """The finding as one terminal line (meaning, then action)."""
        return f"{self.meaning} {self.action}"


class Triage(NamedTuple):
    """The verdict and the findings that matter most."""

    verdict: str
    findings: list[Finding]
    total: int
    """How many findings the report holds (``len(findings)`` of them are worded)."""

    def lines(self) -> list[str]:
        """A few terminal lines: the verdict and one line per finding."""
        out = [f"triage: {self.verdict}"]
        out += [f"  {r}. {f.line()}" for r, f in enumerate(self.findings, 1)]
        if self.total > len(self.findings):
            out.append(f"  (+{self.total - len(self.findings)} smaller findings in the report)")
        return out


def verdict(summary: dict[str, Any], n_violations: int) -> str:
    """The verdict sentence.

    Parameters
    ----------
    summary:
        The check's summary (``unstable_optimum`` decides).
    n_violations:
        Number of violations found.

    Returns
    -------
    str
        Not a local minimum (a certified descent exists), only code-level (C1) violations, or
        all first-order conditions hold.
    """
    if summary.get("unstable_optimum"):
        return "NOT a local minimum: a certified descent direction exists."
    if n_violations:
        return "No certified descent of the dictionary; only code-level (C1) violations."
    return "All first-order conditions hold (no violations found)."


def _decrease(v: Any) -> tuple[float, bool]:
    if v.measured_decrease is not None:
        return float(v.measured_decrease), True
    if v.model_decrease is not None:
        return float(v.model_decrease), False
    return float(v.predicted_decrease or 0.0), False


def _amount(dec: float, measured: bool, frac: float | None) -> str:
    how = "measured on the data" if measured else "exact, from the pass statistics"
    pct = f", {100 * frac:.2g}% of the loss" if frac is not None and frac > 0 else ""
    return f"{dec:.3g} ({how}{pct})"


def _c5(v: Any, amount: str) -> tuple[str, str]:
    i, j, d = v.i, v.j, v.detail
    theta = d.get("theta")
    if v.label == "hierarchy":
        meaning = (f"Atom {i} fires only when atom {j} fires: a strict hierarchy, which is "
                   f"never a local minimum (C5); rotating atom {i} toward atom {j} lowers the "
                   f"loss by {amount}.")
        action = (f"Run `dictopt repair`; a retrained dictionary is expected to make {i} and "
                  f"{j} mutually exclusive (feature splitting/absorption).")
    elif v.label == "upper" or d.get("side") == "upper":
        meaning = (f"Atom {i} stays small whenever atom {j} is off (its largest code there, "
                   f"{d.get('H', float('nan')):.3g}, is below (1 − c)·ā = {theta:.3g}: C5 "
                   f"upper); rotating atom {i} toward atom {j} lowers the loss by {amount}.")
        action = "Run `dictopt repair`, or train longer and recheck this pair."
    else:
        meaning = (f"Atom {i} never gets small while atom {j} is off (its smallest code "
                   f"there, {d.get('L', float('nan')):.3g}, is above (1 − c)·ā = {theta:.3g}: "
                   f"C5 lower); rotating atom {i} away from atom {j} lowers the loss by "
                   f"{amount}.")
        action = "Run `dictopt repair`, or train longer and recheck this pair."
    return meaning, action


def _one(vs: list[Any], loss: float | None, summary: dict[str, Any],
         report_violations: list[Any]) -> Finding:
    """A finding from the violations of one group (the first is the strongest)."""
    v = vs[0]
    dec, measured = _decrease(v)
    frac = dec / loss if loss else None
    amount = _amount(dec, measured, frac)
    cond = v.condition
    if cond == "C5":
        meaning, action = _c5(v, amount)
        atoms: tuple[int, ...] = (v.i, v.j)
    elif cond == "C2":
        k = v.i
        atoms = (k,)
        if any(u.label == "rotation" for u in vs):
            meaning = (f"Atom {k} is not aligned with what it reconstructs: the residual on "
                       f"its active points keeps a component orthogonal to it (C2); rotating "
                       f"atom {k} lowers the loss by {amount}.")
        else:
            meaning = (f"Atom {k}'s codes are systematically too "
                       f"{'small' if v.step > 0 else 'large'} for λ (C2 radial); rescaling "
                       f"them lowers the loss by {amount}.")
        action = ("Run `dictopt repair` (or train longer with a decaying learning rate); with "
                  "an SAE's own codes, compare `--codes optimal` to separate decoder from "
                  "encoder.")
    elif cond == "C3":
        atoms = ()
        meaning = (f"The mean residual is not zero (‖r̄‖ = "
                   f"{v.detail.get('bias_residual', float('nan')):.3g}): the decoder bias is "
                   f"off (C3); moving it by the mean residual lowers the loss by {amount}.")
        action = "Run `dictopt repair`, or refit b_dec as the mean residual."
    elif cond == "C4":
        k = v.i
        atoms = (k,)
        meaning = (f"Atom {k} is active on every point (smallest code "
                   f"{v.detail.get('min_code', float('nan')):.3g}): its constant part belongs "
                   f"in the bias (C4); moving it there lowers the loss by {amount}.")
        action = "Run `dictopt repair` (it folds the constant into the bias)."
    elif cond == "hull":
        k = v.j
        atoms = (k,)
        pairs = sum(1 for u in report_violations if u.condition == "C5" and u.j == k)
        alone = (f"{pairs} of the pairs (i, {k}) violate C5 on their own" if pairs
                 else f"no single pair (i, {k}) violates C5 on its own")
        meaning = (f"Rotating the other atoms toward atom {k} all at once (joint hull "
                   f"condition C5′; {alone}) lowers the loss by {amount}.")
        action = "Run `dictopt repair`."
    else:  # C1: every code-level violation together
        atoms = tuple(sorted({u.i for u in vs if u.i is not None}))
        am = summary.get("amortisation")
        gap = (f"; own − optimal loss = {am['loss_gap']:.3g}" if isinstance(am, dict)
               and am.get("loss_gap") is not None else "")
        who = {"own": "the encoder", "given": "the given codes"}.get(
            str(summary.get("codes")), "the coder")
        meaning = (f"The codes of {len(atoms)} atoms are not lasso codes at this λ (C1, max "
                   f"KKT violation {summary.get('max_kkt_violation', float('nan')):.3g}·λ"
                   f"{gap}): re-solving them, with the dictionary fixed, lowers the loss by "
                   f"{amount}; this is about {who}, not the dictionary.")
        action = ("Every amortised encoder leaves some (TopK/JumpReLU ones are not lasso "
                  "coders at all); check with `--codes optimal` to judge the dictionary "
                  "itself.") if who == "the encoder" else (
                  "Check with `--codes optimal` to judge the dictionary itself.")
    return Finding(cond, atoms, dec, measured, frac, meaning, action)


def triage(report: Any, top: int = TOP, per_condition: int = 2) -> Triage:
    """The verdict and the ``top`` findings of ``report`` that lower the loss most, at most
    ``per_condition`` of each condition (so that one kind does not hide the others).

    Parameters
    ----------
    report:
        A :class:`~dictopt.check.report.CheckReport` (summary and ranked violations).
    top:
        Findings to word.
    per_condition:
        At most this many findings of one condition.

    Returns
    -------
    Triage
    """
    summary = report.summary
    loss = summary.get("loss")
    groups: dict[tuple, list[Any]] = {}
    for v in report.violations:
        if v.condition == "C5":
            key: tuple = ("C5", min(v.i, v.j), max(v.i, v.j))
        elif v.condition in ("C1", "C3"):
            key = (v.condition,)
        elif v.condition == "hull":
            key = ("hull", v.j)
        else:
            key = (v.condition, v.i)
        groups.setdefault(key, []).append(v)
    for vs in groups.values():
        vs.sort(key=lambda u: -_decrease(u)[0])
    findings = [_one(vs, loss, summary, report.violations) for vs in groups.values()]
    findings.sort(key=lambda f: -f.decrease)
    shown: list[Finding] = []
    per: dict[str, int] = {}
    for f in findings:  # the largest decreases, at most `per_condition` of one kind
        if len(shown) < top and per.get(f.condition, 0) < per_condition:
            shown.append(f)
            per[f.condition] = per.get(f.condition, 0) + 1
    return Triage(verdict(summary, len(report.violations)), shown, len(findings))
