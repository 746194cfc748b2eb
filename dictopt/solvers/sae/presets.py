"""Hyperparameters known to work on dictopt's small synthetic worlds, in one place.

``TOY_RECOVERY[name]`` holds ``fit_sae`` options (``name`` is an architecture, or
``relu-unit`` for the ReLU SAE with a hard unit-norm decoder) under which each SAE recovers the
``independent`` toy world (d=16, 24 true atoms, K=48, about 2 active features per point) in
3000 steps of batch 256. The tests and ``benchmarks/bench_sae.py`` both use them.
"""

from __future__ import annotations

from typing import Any

TOY_RECOVERY: dict[str, dict[str, Any]] = {
    "relu": {"lam": 0.2},
    "relu-unit": {"lam": 0.2, "unit_norm_decoder": True},
    "topk": {"k": 2},
    "batchtopk": {"k": 2, "lr": 3e-3, "lr_decay_steps": 1000},
    "jumprelu": {"l0_coefficient": 0.1, "jumprelu_init_threshold": 0.1,
                 "jumprelu_bandwidth": 0.05, "lr": 3e-3, "lr_decay_steps": 1000},
    "matryoshka": {"k": 2, "matryoshka_widths": [24, 48], "lr": 3e-3, "lr_decay_steps": 1000},
    "mp": {"k": 3},
}
