"""The JSON schema of a check report, generated from the report's types.

:func:`report_schema` walks the dataclasses of :mod:`dictopt.check.records` (field types,
enums, optional fields) and returns a JSON Schema (draft 2020-12) for ``CheckReport.to_json``,
versioned by :data:`~dictopt.check.report.SCHEMA_VERSION`. The generated schema is committed as
``dictopt/check/schemas/dictopt.check-<major>.schema.json`` (``python -m
dictopt.check.schema`` rewrites it); a test checks that the file equals the generated schema
and validates every report the tests write against it. Floats may be ``null`` (JSON has no NaN
or infinity: non-finite values are written as ``null``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from dictopt.check import records
from dictopt.check.moves import Move
from dictopt.check.report import LABELS, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).with_name("schemas")


def schema_path(version: str = SCHEMA_VERSION) -> Path:
    """Where the committed schema of ``version`` lives.

    Parameters
    ----------
    version:
        A schema version such as ``"dictopt.check/1"``.

    Returns
    -------
    Path
    """
    return SCHEMA_DIR / f"{version.replace('/', '-')}.schema.json"


def _move_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"type": "string"}, "step": {"type": ["number", "null"]}},
        "required": ["type", "step"],
    }


def _type_schema(tp: Any) -> dict[str, Any]:
    """The schema of one annotated type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(args[1])}
    if tp is type(None):
        return {"type": "null"}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, Enum):
        return {"enum": [m.value for m in tp]}
    if isinstance(tp, type) and issubclass(tp, Move):
        return _move_schema()
    if dataclasses.is_dataclass(tp):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    simple = {bool: "boolean", int: "integer", float: ["number", "null"], str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no JSON schema for {tp!r}")


def _record_schema(cls: type) -> dict[str, Any]:
    """An object with one required property per field (``extra`` keys allowed if it has it)."""
    hints = typing.get_type_hints(cls)
    props = {f.name: _type_schema(hints[f.name]) for f in dataclasses.fields(cls)
             if f.name != "extra"}
    out: dict[str, Any] = {"type": "object", "properties": props, "required": list(props)}
    if cls.__doc__:
        out["description"] = cls.__doc__.strip().splitlines()[0]
    out["additionalProperties"] = any(f.name == "extra" for f in dataclasses.fields(cls))
    return out


_HELDOUT: dict[str, Any] = {
    "type": "object",
    "description": "A certificate's finite step measured on held-out rows (THEORY §5).",
    "properties": {
        "step": {"type": ["number", "null"]},
        "fit_decrease": {"type": ["number", "null"]},
        "decrease": {"type": ["number", "null"]},
        "se": {"type": ["number", "null"]},
        "z": {"type": ["number", "null"]},
        "p": {"type": "number"},
        "significant": {"type": "boolean"},
        "significant_raw": {"type": "boolean"},
        "n_val": {"type": "integer"},
        "note": {"type": ["string", "null"]},
        "move": {"anyOf": [{"type": "null"}, _move_schema()]},
    },
    "required": ["step", "fit_decrease", "decrease", "se", "z", "p", "significant",
                 "significant_raw", "n_val", "note", "move"],
    "additionalProperties": False,
}


def _keyed(names: type[Enum], required: Sequence[str] | None = None) -> dict[str, Any]:
    """An object with one integer per enum value (``required`` of them always there)."""
    keys = [m.value for m in names]
    return {"type": "object", "properties": {k: {"type": "integer"} for k in keys},
            "required": list(keys if required is None else required),
            "additionalProperties": False}


def report_schema() -> dict[str, Any]:
    """The JSON schema of ``CheckReport.to_json``, generated from the record types.

    Returns
    -------
    dict[str, Any]
        A draft 2020-12 schema whose ``$id`` names :data:`SCHEMA_VERSION`.
    """
    defs = {cls.__name__: _record_schema(cls) for cls in (
        records.CheckSummary, records.AtomRow, records.Violation, records.Label,
        records.DuplicateGroups, records.Capacity, records.Amortisation, records.HullInfo)}
    summary = defs["CheckSummary"]["properties"]
    summary["counts"] = _keyed(records.Condition)
    summary["labels"] = _keyed(records.LabelName, LABELS)
    defs["Violation"]["properties"]["heldout"] = {"anyOf": [{"type": "null"}, _HELDOUT]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_VERSION,
        "title": "dictopt check report",
        "type": "object",
        "properties": {
            "schema": {"const": SCHEMA_VERSION},
            "summary": {"$ref": "#/$defs/CheckSummary"},
            "atoms": {"type": "array", "items": {"$ref": "#/$defs/AtomRow"}},
            "violations": {"type": "array", "items": {"$ref": "#/$defs/Violation"}},
            "labels": {"type": "array", "items": {"$ref": "#/$defs/Label"}},
        },
        "required": ["schema", "summary", "atoms", "violations", "labels"],
        "additionalProperties": False,
        "$defs": defs,
    }


def render_schema() -> str:
    """:func:`report_schema` as the committed file's text.

    Returns
    -------
    str
    """
    return json.dumps(report_schema(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    from dictopt.atomic import write_text

    path = write_text(schema_path(), render_schema())
    sys.stderr.write(f"wrote {path}\n")
