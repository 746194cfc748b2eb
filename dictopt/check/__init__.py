"""The checker layer: first-order conditions of THEORY §2 with certificates, streamed.

Public entry points: :func:`check` (→ :class:`CheckReport`),
:func:`dictopt.check.certify.certify` (measure certificates on data),
:func:`dictopt.check.repair.repair` (apply certified moves until none lowers the loss) and
:func:`dictopt.check.reference.brute_force` (the ``O(K² N)`` in-memory reference used by the
tests). The streaming engine's seam: :class:`StreamPass`, :class:`Executor`,
:class:`LocalExecutor` (``dictopt.distributed.DaskExecutor`` is the other).
"""

from dictopt.check.checker import check, run_check
from dictopt.check.executor import (
    Chunked,
    Executor,
    LocalExecutor,
    StreamPass,
    first_rows,
    run_partition,
)
from dictopt.check.options import DEFAULT_OPTIONS, CheckOptions
from dictopt.check.report import CheckReport, Label, Violation
from dictopt.check.tolerances import LabelThresholds, Tolerances

__all__ = [
    "DEFAULT_OPTIONS",
    "CheckOptions",
    "CheckReport",
    "Chunked",
    "Executor",
    "Label",
    "LabelThresholds",
    "LocalExecutor",
    "StreamPass",
    "Tolerances",
    "Violation",
    "check",
    "first_rows",
    "run_check",
    "run_partition",
]
