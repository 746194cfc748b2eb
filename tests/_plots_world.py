"""A small planted problem for the plot/report tests: atom 1 fires only with atom 0 (a strict
hierarchy, C5 upper-violated for (1, 0)), atoms 2 and 3 are independent."""

from __future__ import annotations

import numpy as np
import torch

from dictopt.check import check
from dictopt.problem import Dictionary


def planted(n: int = 600, seed: int = 0):  # noqa: ANN201
    rng = np.random.default_rng(seed)
    d, K = 6, 4
    atoms = rng.normal(size=(K, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, K))
    parent = rng.random(n) < 0.4
    codes[parent, 0] = rng.exponential(1.0, parent.sum()) + 0.2
    child = parent & (rng.random(n) < 0.5)
    codes[child, 1] = rng.exponential(1.0, child.sum()) + 0.1
    for k in (2, 3):
        on = rng.random(n) < 0.3
        codes[on, k] = rng.exponential(1.0, on.sum())
    x = codes @ atoms + 0.01 * rng.normal(size=(n, d))
    D = Dictionary(atoms=torch.tensor(atoms), bias=torch.zeros(d), lam=0.05)
    report = check(D, x, codes=codes, hull=False)
    return D, x, codes, report
