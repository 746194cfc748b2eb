"""Shared fixtures and settings of the test suite.

- ``one_thread``: torch on one thread for the test (tiny matrices: a thread pool only adds
  contention on a shared machine, and sums stay in one order).
- Hypothesis profiles: ``ci`` (derandomised, no example database, no deadline) is selected when
  ``CI=true`` or ``HYPOTHESIS_PROFILE=ci`` (``.ci/run`` sets both); ``dev`` otherwise.
- Every report a test serialises (``CheckReport.to_json``) is validated against the committed
  JSON schema of :mod:`dictopt.check.schema`.
"""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, settings

from dictopt.check.report import CheckReport
from dictopt.check.schema import schema_path

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None)
_CI = os.environ.get("CI", "").lower() == "true"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if _CI else "dev"))


@pytest.fixture
def one_thread():
    """torch on one thread for the duration of the test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_VALIDATOR = jsonschema.Draft202012Validator(json.loads(schema_path().read_text()))
SCHEMA_CHECKS = {"reports": 0}
"""How many serialised reports this session validated (read by tests/test_schema.py)."""


@pytest.fixture(autouse=True, scope="session")
def _reports_match_their_schema():
    """Validate every ``CheckReport.to_json`` result of the session against the schema."""
    original = CheckReport.to_json

    def checked(self: CheckReport) -> dict:
        out = original(self)
        _VALIDATOR.validate(out)
        SCHEMA_CHECKS["reports"] += 1
        return out

    CheckReport.to_json = checked
    yield
    CheckReport.to_json = original
