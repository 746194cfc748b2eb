"""Every tolerance the checker uses, in one place (THEORY §2).

All tolerances are *relative* to a natural scale of the quantity they bound, so that
rescaling the data (and λ with it) does not change any verdict:

- ``tau``: a code ``a_kn ≤ τ`` counts as inactive. ``None`` means automatic: ``0`` for the
  dictionary's own codes (ReLU-style encoders give exact zeros) and
  ``tau_rel × max code of the first chunk`` for solver codes (a solver may leave ~1e-16 dust).
- C1 (code KKT): violation ``|g_kn − λ|`` (active) or ``max(g_kn − λ, 0)`` (inactive) must be
  ``≤ kkt_rel · λ``.
- C2 (atom stationarity, full form ``G_k = λ ā_k d_k``): both the tangential part
  ``‖(I − d_k d_kᵀ) G_k‖`` and the radial part ``|d_k·G_k − λ ā_k|`` must be
  ``≤ stat_rel · λ · max(ā_k, floor_rel · max_j ā_j)``.
- C3 (bias): ``‖r̄‖ ≤ stat_rel · λ``.
- C4 (always on): ``min_n a_kn`` must be ``≤ max(τ, pair_rel · ā_k)``.
- C5 (pairs): the gap ``(1 − c_ij) ā_i − H_ij`` (upper) or ``L_ij − (1 − c_ij) ā_i`` (lower)
  must be ``≤ pair_rel · ā_i + floor_rel · max_j ā_j``.
- Joint hull: the ℓ1 distance of ``v_k`` to the hull must be ``≤ hull_rel · (1 + ‖v_k‖₁)``
  (HiGHS works to ~1e-9), and a certified separating direction must have a gap above the
  C5 tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

from dictopt.check.absorption import DEFAULT_ABSORPTION, AbsorptionThresholds


@dataclass(frozen=True)
class Tolerances:
    """Tolerances of every condition (see the module docstring for their meaning)."""

    tau: float | None = None
    """Inactivity threshold τ; ``None`` = automatic (0 for own codes, relative for solvers)."""
    tau_rel: float = 1e-10
    """Automatic τ for solver codes, relative to the largest code of the first chunk."""
    kkt_rel: float = 1e-6
    """C1: largest KKT violation relative to λ."""
    stat_rel: float = 1e-5
    """C2/C3: stationarity residuals relative to λ (times ā_k for C2)."""
    pair_rel: float = 1e-6
    """C4/C5: margins relative to ā_i."""
    floor_rel: float = 1e-9
    """Absolute floor, relative to the largest mean code, so dead atoms do not divide by 0."""
    hull_rel: float = 1e-7
    """Joint hull: ℓ1 distance to the hull relative to ``1 + ‖v_k‖₁``."""


DEFAULT_TOLERANCES = Tolerances()


@dataclass(frozen=True)
class LabelThresholds:
    """Thresholds of the structural labels (C6, duplicates, absorption)."""

    duplicate_cos: float = 0.99
    """``c_ij ≥`` this: duplicate atoms."""
    antipodal_cos: float = 0.9
    """``c_ij ≤ −`` this, both atoms dense: a dense antipodal pair (THEORY C6; predicted)."""
    dense_fraction: float = 0.2
    """An atom active on at least this fraction of points is dense."""
    absorption: AbsorptionThresholds = DEFAULT_ABSORPTION
    """Thresholds of the structural absorption label (:mod:`dictopt.check.absorption`)."""


DEFAULT_LABELS = LabelThresholds()
