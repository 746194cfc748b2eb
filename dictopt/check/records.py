"""The typed records of a check report: conditions and labels as enums, violations, labels, the
per-atom rows and the summary, each with ``to_json``/``from_json`` side by side.

Every record can also be read like the dictionary its JSON is (``summary["counts"]["C5"]``,
``row["mean_code"]``), so code written against the JSON reads the objects unchanged. A summary
accepts extra keys (``summary["implied_lambda"] = ...``): they are kept in ``extra`` and written
after the typed fields.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from dictopt.check.moves import Move, move_from_json
from dictopt.check.tolerances import Tolerances


class Condition(StrEnum):
    """A first-order condition of THEORY §2 (``hull`` is the joint hull condition C5′)."""

    C1 = "C1"
    C2 = "C2"
    C3 = "C3"
    C4 = "C4"
    C5 = "C5"
    HULL = "hull"


class ViolationLabel(StrEnum):
    """What a violation is, within its condition."""

    CODE_KKT = "code_kkt"
    ROTATION = "rotation"
    CODE_SCALE = "code_scale"
    BIAS = "bias"
    ALWAYS_ON = "always_on"
    HIERARCHY = "hierarchy"
    UPPER = "upper"
    LOWER = "lower"
    JOINT = "joint"
    NEAR_HIERARCHY = "near_hierarchy"
    """C5 without an exact violation but with a significant held-out certificate."""


class LabelName(StrEnum):
    """A structural label (the report counts these; ``hierarchy`` and ``always_on`` are
    counted from violations, the others are :class:`Label` records)."""

    HIERARCHY = "hierarchy"
    ABSORPTION = "absorption"
    ALWAYS_ON = "always_on"
    DEAD = "dead"
    DUPLICATE = "duplicate"
    ANTIPODAL = "antipodal"
    RARE = "rare"
    """An atom too rarely active on held-out rows to judge (held-out stage only)."""
    NEAR_HIERARCHY = "near_hierarchy"
    """Counted from violations (held-out stage only)."""


CodesMode = Literal["own", "optimal", "given"]


def num(v: Any) -> Any:
    """JSON has no NaN or infinity: non-finite floats become ``None``.

    Parameters
    ----------
    v:
        Any JSON value.

    Returns
    -------
    Any
        ``v``, or ``None`` for a non-finite float.
    """
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def clean(obj: Any) -> Any:
    """``obj`` with tuples as lists and non-finite floats as ``None``, recursively.

    Parameters
    ----------
    obj:
        Records, mappings, sequences and numbers.

    Returns
    -------
    Any
        JSON-ready values.
    """
    if isinstance(obj, Record):
        return obj.to_json()
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    return num(obj)


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


class Record:
    """Read access by field name, as for the record's JSON (``record["field"]``)."""

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        extra = getattr(self, "extra", None)
        if extra is not None and key in extra:
            return extra[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key in self._names():
            setattr(self, key, value)
        elif getattr(self, "extra", None) is not None:
            self.extra[key] = value  # type: ignore[attr-defined]
        else:
            raise KeyError(f"{type(self).__name__} has no field {key!r}")

    def setdefault(self, key: str, default: Any = None) -> Any:
        """``self[key]``, set to ``default`` first when missing (as for a dictionary)."""
        if key not in self:
            self[key] = default
        return self[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]``, or ``default`` when there is no such field."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def keys(self) -> list[str]:
        """The field names (as in the JSON), extra keys last."""
        extra = getattr(self, "extra", None) or {}
        return [*self._names(), *extra]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def items(self) -> list[tuple[str, Any]]:
        """``(name, value)`` pairs, as for a dictionary."""
        return [(k, self[k]) for k in self.keys()]

    def __eq__(self, other: object) -> bool:
        # equal to a record of the same type with equal fields, or to its JSON as a mapping
        if isinstance(other, Record):
            return type(self) is type(other) and self.items() == other.items()
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if f.name != "extra"]  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready values."""
        return {k: clean(getattr(self, k)) for k in self._names()}


@dataclass(eq=False)
class Violation(Record):
    """One violated condition with its certificate (a descent move)."""

    condition: Condition
    i: int | None
    j: int | None
    label: ViolationLabel
    slope: float
    """First-order decrease per unit step."""
    step: float
    predicted_decrease: float
    model_decrease: float | None = None
    measured_decrease: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    move: Move | None = None
    heldout: Any = None
    """A :class:`dictopt.check.heldout.HeldoutResult` once measured on held-out rows (its
    JSON when read back from a file)."""

    def __post_init__(self) -> None:
        self.condition = Condition(self.condition)
        self.label = ViolationLabel(self.label)

    def to_json(self) -> dict[str, Any]:
        """The violation as JSON-ready values (the move as its own JSON)."""
        return {
            "condition": str(self.condition),
            "i": self.i,
            "j": self.j,
            "label": str(self.label),
            "slope": num(self.slope),
            "step": num(self.step),
            "predicted_decrease": num(self.predicted_decrease),
            "model_decrease": num(self.model_decrease),
            "measured_decrease": num(self.measured_decrease),
            "detail": {k: num(v) for k, v in self.detail.items()},
            "move": self.move.to_json() if self.move is not None else None,
            "heldout": _heldout_json(self.heldout),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Violation:
        """The violation written by :meth:`to_json` (its move restored; ``None`` → NaN for
        the three required numbers)."""
        move = data.get("move")
        return cls(
            data["condition"], data["i"], data["j"], data["label"],
            _float(data["slope"]), _float(data["step"]), _float(data["predicted_decrease"]),
            data.get("model_decrease"), data.get("measured_decrease"),
            dict(data.get("detail") or {}), move_from_json(move) if move else None,
            data.get("heldout"),
        )


def _heldout_json(h: Any) -> Any:
    if h is None:
        return None
    return clean(h if isinstance(h, Mapping) else h.to_json())


@dataclass(eq=False)
class Label(Record):
    """A structural label that is not a violation (dead, duplicate, antipodal, absorption)."""

    label: LabelName
    i: int
    j: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.label = LabelName(self.label)

    def to_json(self) -> dict[str, Any]:
        """The label as JSON-ready values."""
        return {
            "label": str(self.label),
            "i": self.i,
            "j": self.j,
            "detail": {k: num(v) for k, v in self.detail.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Label:
        """The label written by :meth:`to_json`."""
        return cls(data["label"], data["i"], data.get("j"), dict(data.get("detail") or {}))


@dataclass(eq=False)
class AtomRow(Record):
    """One atom's statistics, condition residuals and labels."""

    k: int
    mean_code: float
    active_fraction: float
    min_code: float
    max_code: float
    kkt_violation: float
    """C1: largest KKT violation relative to λ."""
    stationarity_tangential: float
    stationarity_radial: float
    labels: list[str]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AtomRow:
        """The row written by :meth:`to_json` (``None`` → NaN)."""
        return cls(
            int(data["k"]), *(_float(data[k]) for k in (
                "mean_code", "active_fraction", "min_code", "max_code", "kkt_violation",
                "stationarity_tangential", "stationarity_radial")),
            list(data["labels"]),
        )


@dataclass(eq=False)
class DuplicateGroups(Record):
    """Connected components of the duplicate pairs."""

    groups: int
    atoms: int
    largest: list[int]


@dataclass(eq=False)
class Capacity(Record):
    """Points with ``‖r_n‖ > λ`` and what new atoms could gain (proofs/capacity.md)."""

    points_over_lam: int
    total_gain: float
    max_gain: float


@dataclass(eq=False)
class Amortisation(Record):
    """Own codes against the exact lasso codes, on every row or a sample of rows
    (:mod:`dictopt.check.amortisation`)."""

    optimal_loss: float
    """``loss − loss_gap`` (an estimate when the rows are a sample)."""
    loss_gap: float
    """Mean over the rows with exact codes of ``own − optimal`` row loss."""
    mean_abs_code_diff: list[float]
    """Mean ``|a_opt − a|`` per atom over those rows."""
    loss_gap_se: float = 0.0
    """Standard error of ``loss_gap``: ``s/√m·√(1 − m/N)`` (0 for every row; null below 2)."""
    rows: Literal["all", "sample"] = "all"
    """Exact codes for every row, or for a sample chosen by row-index hash."""
    sample_size: int | None = None
    """Rows with exact codes (``m``)."""
    population: int | None = None
    """Rows in the data (``N``)."""
    seed: int = 0
    """Seed of the row-index hash."""


@dataclass(eq=False)
class HullInfo(Record):
    """How the joint hull condition ran."""

    mode: str
    """``"exact"``, ``"skipped"`` or ``"skipped (N·K = … > hull_exact_limit)"``."""
    atoms_checked: int
    seconds: float


def _as(cls: type, value: Any) -> Any:
    if value is None or isinstance(value, cls | str):
        return value
    return cls(**value)


@dataclass(eq=False)
class CheckSummary(Record):
    """The report's summary (field order = JSON key order)."""

    N: int
    K: int
    d: int
    lam: float
    codes: CodesMode
    tau: float
    has_bias: bool
    loss: float
    reconstruction: float
    sparsity: float
    explained_variance: float
    l0: float
    unstable_optimum: bool
    """A certified descent of the dictionary exists (C1 alone is about the codes, not D)."""
    counts: dict[str, int]
    """Violations per :class:`Condition`."""
    labels: dict[str, int]
    """Structural labels per :class:`LabelName`."""
    duplicate_groups: DuplicateGroups
    max_kkt_violation: float
    """C1, relative to λ."""
    bias_residual: float
    """C3, ``‖r̄‖``."""
    capacity: Capacity
    amortisation: Amortisation | str | None
    """The amortisation gap, a note saying why it was skipped, or ``None``."""
    pairs_in_pass2: int
    hull: HullInfo
    tolerances: dict[str, Any]
    """The :class:`~dictopt.check.tolerances.Tolerances` used, by field."""
    timings: dict[str, float]
    """Wall-clock seconds per phase."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys added after the check (e.g. ``implied_lambda``), written last."""

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready values (extra keys last)."""
        return {**super().to_json(), **{k: clean(v) for k, v in self.extra.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckSummary:
        """The summary written by :meth:`to_json` (or a mapping of its fields)."""
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        missing = [k for k in names if k not in data]
        if missing:
            raise KeyError(missing[0])
        values = {k: data[k] for k in names}
        values["duplicate_groups"] = _as(DuplicateGroups, values["duplicate_groups"])
        values["capacity"] = _as(Capacity, values["capacity"])
        values["amortisation"] = _as(Amortisation, values["amortisation"])
        values["hull"] = _as(HullInfo, values["hull"])
        for k in ("counts", "labels", "tolerances", "timings"):
            values[k] = dict(values[k])
        extra = {k: v for k, v in data.items() if k not in names and k != "extra"}
        return cls(**values, extra={**dict(data.get("extra") or {}), **extra})


def tolerances_json(tol: Tolerances) -> dict[str, Any]:
    """The tolerances by field, as the summary records them.

    Parameters
    ----------
    tol:
        The tolerances of a check.

    Returns
    -------
    dict[str, Any]
        Field name to value, in field order.
    """
    return {f.name: getattr(tol, f.name) for f in dataclasses.fields(tol)}
