"""``codes="optimal"`` on a dictionary with an encoder warm-starts the exact coder from the own
codes (:func:`dictopt.coders.optimal_coder`): the report is the cold start's, timings aside."""

from __future__ import annotations

from unittest import mock

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.coders as coders
import dictopt.lasso as coding
from dictopt.check import check
from dictopt.problem import Dictionary


class _ReluEncoder:
    """``relu((x − b) Dᵀ − θ)``: the decoder's transpose with one threshold."""

    architecture = "test-relu"

    def __init__(self, atoms: torch.Tensor, bias: torch.Tensor, theta: float) -> None:
        self.W, self.b, self.theta = atoms.T.contiguous(), bias, theta

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.b) @ self.W - self.theta)


def _world(seed: int, K: int, d: int, N: int, theta: float):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(K, d, generator=g, dtype=torch.float64)
    atoms /= atoms.norm(dim=1, keepdim=True)
    bias = 0.1 * torch.randn(d, generator=g, dtype=torch.float64)
    idx = torch.randint(0, K, (N, 4), generator=g)
    codes = torch.zeros(N, K, dtype=torch.float64).scatter_add_(
        1, idx, torch.rand(N, 4, generator=g, dtype=torch.float64) + 0.5)
    x = codes @ atoms + bias + 0.05 * torch.randn(N, d, generator=g, dtype=torch.float64)
    dic = Dictionary(atoms=atoms, bias=bias, lam=0.05, encoder=_ReluEncoder(atoms, bias, theta))
    return dic, x


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k != "timings"}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


@given(seed=st.integers(0, 1000), theta=st.floats(0.1, 0.8))
@settings(max_examples=3, deadline=None)
def test_warm_started_optimal_codes_give_the_cold_report(seed, theta):
    """The check with optimal codes, warm-started from the encoder or not, on the face-inverse
    path (forced at small K): the same report (JSON, timings aside), and the warm start was
    really given to the coder."""
    dic, x = _world(seed, K=32, d=12, N=120, theta=theta)
    inits = []
    solve = coding.solve_codes

    def spy(*args, **kwargs):
        inits.append(kwargs.get("init") is not None)
        return solve(*args, **kwargs)

    reports = {}
    with mock.patch.object(coding, "GROW_MIN_ATOMS", 0), \
            mock.patch.object(coding, "solve_codes", spy):
        for warm in (False, True):
            with mock.patch.object(coders, "WARM_START", warm):
                inits.clear()
                rep = check(dic, x, codes="optimal", hull=False, amortisation=False)
                assert inits and all(i == warm for i in inits)
                reports[warm] = _without_timings(rep.to_json())
    _assert_same_report(reports[True], reports[False])


def _assert_same_report(a, b, path="report"):
    """Equal structure, equal non-float leaves (counts, verdicts, labels); floats to 1e-9
    relative: the warm and cold paths reach the same faces by different updates of the
    face inverses, so the codes agree to rounding (~1e-14), not bit for bit."""
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same_report(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same_report(u, v, f"{path}[{i}]")
    elif isinstance(a, float):
        assert abs(a - b) <= 1e-9 * max(abs(a), abs(b)) + 1e-12, (path, a, b)
    else:
        assert a == b, path


def test_optimal_coder_needs_an_encoder_to_warm_start():
    """Without an encoder there are no own codes to start from: the cold coder."""
    dic, x = _world(0, K=20, d=8, N=30, theta=0.3)
    bare = Dictionary(atoms=dic.atoms, bias=dic.bias, lam=dic.lam)
    with mock.patch.object(Dictionary, "optimal_codes", autospec=True,
                           side_effect=lambda self, xs, **kw: torch.zeros(len(xs), 20)) as oc:
        coders.optimal_coder(bare, warm_start=True)(x, 0)
        assert "init" not in oc.call_args.kwargs
        coders.optimal_coder(dic, warm_start=True)(x, 0)
        assert np.allclose(oc.call_args.kwargs["init"].numpy(), dic.encode(x).numpy())
