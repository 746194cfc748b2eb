"""Pass 2 is skipped when it has nothing to stream (no tracked pair, no absorption candidate,
no hull), and the report is then byte for byte the one the streamed pass gives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.check.checker as checker
from dictopt.check import check
from dictopt.check.passes import PassTwo
from dictopt.problem import Dictionary

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dictopt_golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)


def _world(seed: int, K: int, N: int, density: float, spread: bool):
    g = np.random.default_rng(seed)
    d = K + 2
    if spread:  # orthonormal atoms: no cosine reaches any label or absorption threshold
        D = np.linalg.qr(g.standard_normal((d, K)))[0].T
    else:  # random atoms: some pairs close
        D = g.standard_normal((K, d))
        D /= np.linalg.norm(D, axis=1, keepdims=True)
    A = g.exponential(size=(N, K)) * (g.random((N, K)) < density)
    x = A @ D + 0.2 + 0.01 * g.standard_normal((N, d))
    dic = Dictionary(atoms=torch.tensor(D), bias=torch.full((d,), 0.2, dtype=torch.float64),
                     lam=0.05)
    return dic, torch.tensor(x), torch.tensor(A)


def _reports(dic, x, A, monkeypatch):
    """(report text, pass-2 runs) as the checker decides, and with pass 2 forced."""
    runs = []
    real_update = PassTwo.update

    def counted(self, state, x_, start):
        runs.append(start)
        return real_update(self, state, x_, start)

    monkeypatch.setattr(PassTwo, "update", counted)
    out = []
    for force in (False, True):
        runs.clear()
        with monkeypatch.context() as m:
            if force:
                m.setattr(checker, "pass_two_needed", lambda plan, want_hull: True)
            rep = check(dic, x, codes=A, lam=0.05, hull=False, amortisation="off",
                        chunk_size=17)
        out.append((golden.render(rep), len(runs)))
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), K=st.integers(2, 9), N=st.integers(5, 60),
       density=st.sampled_from([0.2, 0.6, 1.0]), spread=st.booleans())
def test_report_with_and_without_pass_two_is_the_same(seed, K, N, density, spread):
    with pytest.MonkeyPatch.context() as mp:
        (skipped, n_skip), (forced, n_forced) = _reports(*_world(seed, K, N, density, spread), mp)
    assert skipped == forced
    assert n_forced > 0


def test_pass_two_is_skipped_when_nothing_needs_it(monkeypatch):
    # every atom active on every row: no pair is testable (H_ij, L_ij empty), and orthonormal
    # atoms give no label or absorption candidate
    (skipped, n_skip), (forced, n_forced) = _reports(*_world(0, 5, 40, 1.0, True), monkeypatch)
    assert n_skip == 0 and n_forced > 0
    assert skipped == forced
