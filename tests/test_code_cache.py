"""A check with optimal codes solves them once: pass 2 reads the codes pass 1 solved (held
sparse, exact), and the report is the one a check that solves them twice gives."""

from __future__ import annotations

import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dictopt.check.checker as checker
from dictopt.check import check
from dictopt.check.codecache import CodeCache
from dictopt.data.worlds import make_world

LAM = 0.05


def _report_json(rep, tmp_path, name):
    data = json.loads(rep.save_json(tmp_path / name).read_text())
    data["summary"].pop("timings")
    data["summary"]["hull"].pop("seconds")
    return data


def test_cache_round_trip_is_exact_and_respects_the_budget():
    a = torch.zeros(5, 7, dtype=torch.float64)
    a[1, 3], a[4, 0], a[4, 6] = 0.25, 1e-300, 3.0
    cache = CodeCache(budget_bytes=10_000)
    cache.put(10, a)
    assert torch.equal(cache.get(10, 5), a) and cache.get(10, 4) is None
    assert cache.get(15, 5) is None and cache.hits == 1
    small = CodeCache(budget_bytes=8)
    small.put(0, a)
    assert small.get(0, 5) is None and small.used_bytes == 0


def test_optimal_codes_check_solves_once_and_reports_the_same(tmp_path, monkeypatch):
    w = make_world("hierarchy", seed=0, n=700)
    d = w.truth(LAM)
    calls = []
    solve = d.optimal_codes

    def counting(dic_self, x, **kw):
        calls.append(x.shape[0])
        return solve.__func__(dic_self, x, **kw)

    monkeypatch.setattr(type(d), "optimal_codes", counting)
    once = check(d, w.x, codes="optimal", chunk_size=256, hull=True)
    rows_once = sum(calls)
    calls.clear()
    monkeypatch.setattr(checker.CodeCache, "put", lambda self, start, codes, nonzero=None: None)
    twice = check(d, w.x, codes="optimal", chunk_size=256, hull=True)
    assert rows_once == 700 and sum(calls) == 2 * 700  # one solve per row instead of two
    assert _report_json(once, tmp_path, "a.json") == _report_json(twice, tmp_path, "b.json")
    assert once.summary["pairs_in_pass2"] > 0  # pass 2 did stream (and read the cache)


def _relu_sae(K: int, d: int, seed: int):
    from dictopt.solvers.sae.relu import ReLUSAE, ReLUSAEConfig

    g = torch.Generator().manual_seed(seed)
    D = torch.randn(K, d, generator=g, dtype=torch.float64)
    D /= D.norm(dim=1, keepdim=True)
    sae = ReLUSAE(ReLUSAEConfig(d_in=d, d_sae=K, l1_coefficient=2 * LAM, dtype="float64"))
    with torch.no_grad():
        sae.W_dec.copy_(D)
        sae.W_enc.copy_(D.T)
        sae.b_enc.fill_(-0.6)
        sae.b_dec.zero_()
    return sae.to_dictionary()


def test_own_codes_are_encoded_once_and_report_the_same(tmp_path, monkeypatch):
    # a wide SAE's encoder is a [n, d] x [d, K] matmul per chunk: pass 2 and the held-out
    # passes read pass 1's codes instead of encoding again, and nothing in the report changes
    d = _relu_sae(40, 12, seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.relu(torch.randn(600, 40, generator=g, dtype=torch.float64) - 1.2) @ d.atoms
    calls = []
    encode = type(d).encode

    def counting(dic_self, xs):
        calls.append(xs.shape[0])
        return encode(dic_self, xs)

    monkeypatch.setattr(type(d), "encode", counting)
    once = check(d, x, chunk_size=200, hull=False, heldout=True, amortisation="off")
    rows_once = sum(calls)
    calls.clear()
    monkeypatch.setattr(checker.CodeCache, "put", lambda self, start, codes, nonzero=None: None)
    every = check(d, x, chunk_size=200, hull=False, heldout=True, amortisation="off")
    assert rows_once == 600 and sum(calls) > 2 * 600
    assert _report_json(once, tmp_path, "a.json") == _report_json(every, tmp_path, "b.json")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 12), K=st.integers(1, 9), block=st.integers(1, 30),
       seed=st.integers(0, 2**16))
def test_blocked_nonzero_scan_holds_exactly_the_codes(n, K, block, seed):
    # put() scans the codes for nonzeros a block of rows at a time (bounded memory at large K);
    # whatever the block, the held codes are the chunk's codes exactly
    import dictopt.check.codecache as cc

    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, K, generator=g, dtype=torch.float32).clamp(min=0)
    old = cc.NONZERO_BLOCK_ELEMENTS
    cc.NONZERO_BLOCK_ELEMENTS = block
    try:
        cache = CodeCache()
        cache.put(3, a)
    finally:
        cc.NONZERO_BLOCK_ELEMENTS = old
    assert torch.equal(cache.get(3, n), a)
    assert cache.used_bytes == int((a != 0).sum()) * 12


def test_put_with_the_callers_nonzeros_holds_the_same_chunk():
    """Pass 1 hands the cache the active list it computed (τ = 0, codes ≥ 0): the held chunk
    is the one the cache's own scan finds, and a chunk already held is not held twice."""
    from dictopt.check.codecache import CodeCache

    g = torch.Generator().manual_seed(1)
    a = torch.rand(37, 11, generator=g) * (torch.rand(37, 11, generator=g) < 0.3)
    own, given = CodeCache(1 << 20), CodeCache(1 << 20)
    own.put(5, a)
    given.put(5, a, (a > 0).nonzero(as_tuple=True))
    for u, v in zip(own.chunks[(5, 37)], given.chunks[(5, 37)], strict=True):
        assert (u == v) if isinstance(u, int) else torch.equal(u, v)
    used = given.used_bytes
    given.put(5, a)
    assert given.used_bytes == used and torch.equal(given.get(5, 37), a)
