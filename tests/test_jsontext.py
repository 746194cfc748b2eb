"""The reports' fast JSON writer writes exactly ``json.dumps(obj, indent=n)``."""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dictopt.check.jsontext import dumps_indented

GOLDEN = Path(__file__).parent / "golden"


class Colour(enum.StrEnum):
    RED = "red"


class Rank(enum.IntEnum):
    TOP = 3


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from([Colour.RED, Rank.TOP, np.float64(0.1), -0.0, 1e300, 5e-324]),
)
keys = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.floats(allow_nan=False),
                 st.booleans(), st.none())
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.tuples(inner, inner),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(doc=documents, indent=st.sampled_from([0, 1, 2, 4]))
def test_the_same_text_as_json_dumps(doc, indent):
    assert dumps_indented(doc, indent) == json.dumps(doc, indent=indent)


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.json")))
def test_the_golden_reports_written_again_are_the_same_text(name):
    doc = json.loads((GOLDEN / name).read_text())
    assert dumps_indented(doc, 1) == json.dumps(doc, indent=1)


def test_deep_nesting_and_what_json_refuses():
    deep: list = []
    for n in range(100):
        deep = [n, {"a": deep}]
    assert dumps_indented(deep, 2) == json.dumps(deep, indent=2)
    for bad in ({"x": {1, 2}}, [object()], {(1, 2): 3}):
        with pytest.raises(TypeError):
            json.dumps(bad, indent=1)
        with pytest.raises(TypeError):
            dumps_indented(bad, 1)
    assert dumps_indented(math.nan) == "NaN"
