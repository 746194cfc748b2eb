"""A check with optimal codes solves them once: pass 2 reads the codes pass 1 solved (held
sparse, exact), and the report is the one a check that solves them twice gives."""

from __future__ import annotations

import json

import torch

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
    monkeypatch.setattr(checker.CodeCache, "put", lambda self, start, codes: None)
    twice = check(d, w.x, codes="optimal", chunk_size=256, hull=True)
    assert rows_once == 700 and sum(calls) == 2 * 700  # one solve per row instead of two
    assert _report_json(once, tmp_path, "a.json") == _report_json(twice, tmp_path, "b.json")
    assert once.summary["pairs_in_pass2"] > 0  # pass 2 did stream (and read the cache)
