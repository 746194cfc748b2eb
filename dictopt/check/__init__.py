"""The checker layer: first-order conditions of THEORY §2 with certificates, streamed.

Public entry points: :func:`check` (→ :class:`CheckReport`), :func:`certify` (measure
certificates on data), :func:`repair` (apply certified moves until none lowers the loss) and
:func:`brute_force` (the ``O(K² N)`` in-memory reference used by the tests).
"""

from dictopt.check.checker import check
from dictopt.check.report import CheckReport, Label, Violation
from dictopt.check.tolerances import LabelThresholds, Tolerances

__all__ = ["CheckReport", "Label", "LabelThresholds", "Tolerances", "Violation", "check"]
