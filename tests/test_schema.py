"""The report's JSON schema: generated from the record types, committed, strict enough to
reject a wrong report, and met by every golden report (conftest validates every other report
the tests serialise)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from dictopt.check.report import SCHEMA_VERSION, CheckReport
from dictopt.check.schema import render_schema, report_schema, schema_path

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_committed_schema_is_the_generated_one():
    assert schema_path().read_text() == render_schema(), (
        "the report types changed: regenerate with `python -m dictopt.check.schema` and bump "
        "SCHEMA_VERSION if old reports no longer validate")


def test_schema_is_valid_and_versioned():
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == SCHEMA_VERSION
    assert schema["properties"]["schema"] == {"const": SCHEMA_VERSION}


@pytest.fixture(scope="module")
def golden():
    return {p.name: json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*.json"))}


def test_golden_reports_validate_and_round_trip(golden):
    validator = jsonschema.Draft202012Validator(report_schema())
    assert golden
    for name, data in golden.items():
        assert not list(validator.iter_errors(data)), name
        again = CheckReport.from_json(data).to_json()
        assert json.dumps(again, indent=1) == json.dumps(data, indent=1), name


def test_from_json_restores_moves(golden):
    rep = CheckReport.from_json(golden["relu.json"])
    kinds = {type(v.move).__name__ for v in rep.violations}
    assert {"CodeStep", "Rotate", "Scale", "BiasShift", "Toward"} <= kinds
    for v, raw in zip(rep.violations, golden["relu.json"]["violations"], strict=True):
        assert v.move is not None and v.move.to_json() == raw["move"]


@pytest.mark.parametrize("mutate", [
    lambda r: r["violations"][0].__setitem__("condition", "C9"),
    lambda r: r["labels"].append({"label": "twin", "i": 0, "j": 1, "detail": {}}),
    lambda r: r["summary"]["counts"].pop("C5"),
    lambda r: r["atoms"][0].__setitem__("k", "zero"),
    lambda r: r["summary"]["hull"].pop("mode"),
    lambda r: r.__setitem__("schema", "dictopt.check/0"),
])
def test_schema_rejects_a_wrong_report(golden, mutate):
    bad = copy.deepcopy(golden["truth_given.json"])
    if not bad["labels"]:
        bad["labels"] = [{"label": "dead", "i": 0, "j": None, "detail": {}}]
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, report_schema(), cls=jsonschema.Draft202012Validator)
