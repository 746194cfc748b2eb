"""The checker vs the brute-force reference and vs one encode+decode pass; how its cost grows.

Problem: ``K`` random unit atoms in ``R^d``, data = sparse nonnegative combinations (4 atoms per
point) + bias + noise, a ReLU encoder ``relu((x − b) Dᵀ − θ)`` (the SAE's own codes, τ = 0).
Three sides, each in its own process:

* ``check``: :func:`dictopt.check.check` (``codes="own"``, ``hull=False``, no amortisation
  gap): two streamed passes, C1–C5 over all ordered pairs, certificates of what it finds;
* ``brute``: encode, then :func:`dictopt.check.reference.brute_force` (``O(K² N)``, the
  definitions of THEORY §2 evaluated directly; the tests' reference);
* ``encdec``: one pass of ``encode`` + ``decode`` over the same data (what any use of the SAE
  costs): the unit of the cost ratio.

Equal accuracy: at every size the check's verdicts (C1, C4, C5 upper/lower sets) must equal the
brute force's (compared as digests). Growth: the slope of log(time) against log(K) at fixed N
and against log(N) at fixed K. Full mode adds the scale point of the checker's own target
(K=4096, d=256, N=200k: check ≤ 3× one encode+decode pass) and the memory growth from N=100k
to N=1M on a lazily generated source (target < 10 %), and the same on a real ``.npy`` file
(``file_memory``: dictopt's explicit chunk reads, next to the memory map it replaced, which
kept the file's pages in the process; target < 10 %). The file is written once per size into
a temporary folder (d small, 4 MiB per 100k rows at d = 10) and deleted afterwards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from benchmarks.harness import (
    Result,
    Row,
    Timing,
    fit_exponent,
    fmt_ratio,
    fmt_speed,
    mark_baseline,
    mib,
    ratio,
    run_side,
    target_cell,
    time_repeats,
)

LAM = 0.05
L0 = 4
SIZES = {
    "smoke": dict(d=8, k_sweep=[8, 16], n_fixed=300, n_sweep=[300, 600], k_fixed=8, repeats=1,
                  scale=None, memory=None),
    "quick": dict(d=32, k_sweep=[32, 64, 128], n_fixed=2000, n_sweep=[2000, 4000, 8000],
                  k_fixed=64, repeats=3, scale=dict(K=1024, d=128, N=20_000), memory=None),
    "full": dict(d=32, k_sweep=[64, 128, 256], n_fixed=4000, n_sweep=[4000, 16_000, 64_000],
                 k_fixed=64, repeats=3, scale=dict(K=4096, d=256, N=200_000),
                 memory=dict(K=256, d=64, N=[100_000, 1_000_000]),
                 file_memory=dict(K=64, d=16, N=[100_000, 1_000_000])),
}
THETA = 0.4
"""Encoder threshold: with 4 atoms per point the ReLU codes are a few % dense."""


class ReluEncoder:
    """``relu((x − b) Dᵀ − θ)``: a ReLU SAE whose encoder is the decoder transposed."""

    architecture = "bench-relu"

    def __init__(self, atoms, bias, theta: float) -> None:
        self.W = atoms.t().contiguous()
        self.b = bias
        self.theta = theta

    def encode(self, x):
        import torch

        return torch.relu((x - self.b) @ self.W - self.theta)


def make_dictionary(K: int, d: int, dtype_name: str = "float64", seed: int = 0,
                    theta: float = THETA):
    """Random unit atoms, a small bias and a ReLU encoder with threshold ``theta``."""
    import torch

    from dictopt.problem import Dictionary

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(K, d, generator=g, dtype=dtype)
    atoms /= atoms.norm(dim=1, keepdim=True)
    bias = 0.1 * torch.randn(d, generator=g, dtype=dtype)
    return Dictionary(atoms=atoms, bias=bias, lam=LAM, encoder=ReluEncoder(atoms, bias, theta))


def make_chunk(atoms, bias, m: int, seed: int, l0: int = L0):
    """``m`` points: ``l0`` random atoms each with magnitudes in [0.5, 1.5), + bias + noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    K, d = atoms.shape
    idx = torch.randint(0, K, (m, l0), generator=g)
    val = torch.rand(m, l0, generator=g, dtype=atoms.dtype) + 0.5
    codes = torch.zeros(m, K, dtype=atoms.dtype).scatter_add_(1, idx, val)
    return codes @ atoms + bias + 0.05 * torch.randn(m, d, generator=g, dtype=atoms.dtype)


def make_data(dic, n: int, chunk: int = 8192):
    import torch

    return torch.cat([make_chunk(dic.atoms, dic.bias, min(chunk, n - lo), 1000 + i)
                      for i, lo in enumerate(range(0, n, chunk))])


def digest(c1, c4, up, lo) -> str:
    """A short hash of the verdicts (sets of atoms / ordered pairs)."""
    blob = json.dumps([sorted(c1), sorted(c4), sorted(map(list, up)), sorted(map(list, lo))])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def _check(dic, x):
    from dictopt.check import Tolerances, check

    return check(dic, x, codes="own", hull=False, amortisation=False, tol=Tolerances(tau=0.0))


def _sizes(s: dict[str, Any]) -> list[tuple[int, int]]:
    out = [(k, s["n_fixed"]) for k in s["k_sweep"]] + [(s["k_fixed"], n) for n in s["n_sweep"]]
    return list(dict.fromkeys(out))


# -- sides ------------------------------------------------------------------------------------


def side(method: str, sizes: list[list[int]], d: int, repeats: int,
         dtype_name: str = "float64") -> dict[str, Any]:
    """Time ``method`` (check / brute / encdec) at every ``(K, N)``; peak memory at the last."""
    import torch

    from dictopt.check.reference import brute_force

    torch.set_num_threads(1)
    out: dict[str, Any] = {"sizes": []}
    for i, (K, N) in enumerate(sizes):
        dic = make_dictionary(K, d, dtype_name)
        x = make_data(dic, N)
        if method == "check":
            def fn(dic=dic, x=x):
                rep = _check(dic, x)
                return digest({v.i for v in rep.by_condition("C1")},
                              {v.i for v in rep.by_condition("C4")},
                              {(v.i, v.j) for v in rep.by_condition("C5")
                               if v.detail["side"] == "upper"},
                              {(v.i, v.j) for v in rep.by_condition("C5")
                               if v.detail["side"] == "lower"}), rep.summary["l0"]
        elif method == "brute":
            def fn(dic=dic, x=x):
                A = dic.encode(x)
                ref = brute_force(x, A, dic.atoms, dic.bias, LAM, 0.0)
                return digest(ref.c1, ref.c4, ref.c5_upper, ref.c5_lower), None
        else:
            def fn(dic=dic, x=x):
                for lo in range(0, x.shape[0], 8192):  # the checker's chunk size
                    dic.decode(dic.encode(x[lo:lo + 8192]))
                return None, None
        fn(dic, x[:64])  # warm-up (not timed)
        if i == len(sizes) - 1:
            mark_baseline()
        timing, (dig, l0) = time_repeats(fn, repeats)
        out["sizes"].append({"K": K, "N": N, "timing": timing.as_dict(), "digest": dig,
                             "l0": l0})
    return out


def side_stream(K: int, d: int, N: int) -> dict[str, Any]:
    """Check a lazily generated source of N rows (the data never sit in memory)."""
    import torch

    from dictopt.data.sources import ActivationSource

    torch.set_num_threads(1)
    dic = make_dictionary(K, d, "float32")

    class Lazy(ActivationSource):
        def __init__(self) -> None:
            self.d, self.n, self.chunk_size, self.dtype = d, N, 8192, torch.float32

        def _raw_chunks(self) -> Iterator[tuple[Any, str]]:
            for i, lo in enumerate(range(0, N, 8192)):
                yield make_chunk(dic.atoms, dic.bias, min(8192, N - lo), 1000 + i), f"chunk {i}"

    _check(dic, make_data(dic, 64).float())  # warm-up
    mark_baseline()
    timing, _ = time_repeats(lambda: _check(dic, Lazy()), 1)
    return {"timing": timing.as_dict()}


def write_npy(dic: Any, N: int, path: str) -> None:
    """``N`` rows of the benchmark's data as a float32 ``.npy`` file, written chunk by chunk."""
    import numpy as np

    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (N, dic.d)})
        for i, lo in enumerate(range(0, N, 8192)):
            rows = make_chunk(dic.atoms, dic.bias, min(8192, N - lo), 1000 + i)
            fh.write(np.ascontiguousarray(rows.numpy(), dtype="<f4").tobytes())


def side_file(K: int, d: int, N: int, path: str, reader: str = "dictopt",
              work: str = "check") -> dict[str, Any]:
    """Check (``work="check"``) or only stream (``"stream"``: every chunk read, validated and
    summed) a real ``.npy`` file of N rows: ``reader="dictopt"`` is :class:`NpySource`
    (explicit chunk reads); ``"mmap"`` the memory map it replaced (one map held open)."""
    import numpy as np
    import torch

    from dictopt.data.sources import ActivationSource, NpySource

    torch.set_num_threads(1)
    dic = make_dictionary(K, d, "float32")

    class MemoryMapped(ActivationSource):
        """The reader before issue 18: ``np.load(mmap_mode="r")`` kept open for the pass."""

        def __init__(self) -> None:
            self.d, self.n, self.chunk_size, self.dtype = d, N, 8192, torch.float32

        def _raw_chunks(self) -> Iterator[tuple[Any, str]]:
            arr = np.load(path, mmap_mode="r")
            for lo in range(0, N, 8192):
                yield np.array(arr[lo: lo + 8192]), f"rows {lo}+"

    _check(dic, make_data(dic, 64).float())  # warm-up
    mark_baseline()
    source = NpySource(path, dtype=torch.float32) if reader == "dictopt" else MemoryMapped()

    def stream() -> float:
        return sum(float(c.data.sum()) for c in source.iter_chunks())

    timing, _ = time_repeats(lambda: _check(dic, source) if work == "check" else stream(), 1)
    return {"timing": timing.as_dict()}


def file_sides(K: int, d: int, sizes: list[int]) -> dict[str, Any]:
    """Both readers at every size; each file written once, then deleted."""
    import os
    import tempfile

    sides = {}
    dic = make_dictionary(K, d, "float32")
    with tempfile.TemporaryDirectory(prefix="dictopt-bench-") as folder:
        for n in sizes:
            path = os.path.join(folder, f"x_{n}.npy")
            write_npy(dic, n, path)
            for reader in ("dictopt", "mmap"):
                for work in ("stream", "check"):
                    key = f"file_{reader}_{n}" + ("_stream" if work == "stream" else "")
                    sides[key] = run_side(__name__, "side_file", K=K, d=d, N=n, path=path,
                                          reader=reader, work=work)
            os.unlink(path)
    return sides


def file_memory_row(fm: dict[str, Any], sides: dict[str, Any]) -> tuple[list[Row], float]:
    """The README rows of the file-backed memory growth (streaming the file; checking it), and
    dictopt's growth in % while streaming."""
    lo_n, hi_n = fm["N"][0], fm["N"][-1]

    def peak(reader: str, n: int, tag: str = "") -> float:
        return sides[f"file_{reader}_{n}{tag}"]["memory"]["peak_rss_mib"]

    sg = {r: 100 * (peak(r, hi_n, "_stream") / peak(r, lo_n, "_stream") - 1)
          for r in ("dictopt", "mmap")}
    stream_row = Row(
        "reading a real `.npy` file: chunk reads vs the memory map they replaced",
        f"d={fm['d']}, N {lo_n} → {hi_n} (float32 file, {hi_n * fm['d'] * 4 / 2**20:.0f} MiB "
        f"at N={hi_n}); every chunk read, validated, summed",
        f"peak RSS {peak('dictopt', lo_n, '_stream'):.0f} → "
        f"{peak('dictopt', hi_n, '_stream'):.0f} MiB ({sg['dictopt']:+.1f} %); memory map "
        f"{peak('mmap', lo_n, '_stream'):.0f} → {peak('mmap', hi_n, '_stream'):.0f} MiB "
        f"({sg['mmap']:+.1f} %)",
        f"over baseline at N={hi_n}: {mib(sides[f'file_dictopt_{hi_n}_stream'])} vs "
        f"{mib(sides[f'file_mmap_{hi_n}_stream'])}", "—",
        target_cell("< 10 % growth", sg["dictopt"] < 10, f"{sg['dictopt']:+.1f} %"))
    growth = {r: 100 * (peak(r, hi_n) / peak(r, lo_n) - 1) for r in ("dictopt", "mmap")}
    row = Row(
        "checker peak memory, real `.npy` file (chunk reads vs the memory map they replaced)",
        f"K={fm['K']}, d={fm['d']}, N {lo_n} → {hi_n} (float32 file, "
        f"{hi_n * fm['d'] * 4 / 2**20:.0f} MiB at N={hi_n})",
        f"peak RSS {peak('dictopt', lo_n):.0f} → {peak('dictopt', hi_n):.0f} MiB "
        f"({growth['dictopt']:+.1f} %); memory map {peak('mmap', lo_n):.0f} → "
        f"{peak('mmap', hi_n):.0f} MiB ({growth['mmap']:+.1f} %)",
        f"over baseline: {mib(sides[f'file_dictopt_{hi_n}'])} (chunk reads) vs "
        f"{mib(sides[f'file_mmap_{hi_n}'])} (memory map) at N={hi_n}", "—",
        target_cell("< 10 % growth", growth["dictopt"] < 10, f"{growth['dictopt']:+.1f} %"))
    return [stream_row, row], sg["dictopt"]


# -- the comparison ---------------------------------------------------------------------------


def _t(side: dict[str, Any], K: int, N: int) -> Timing:
    row = next(r for r in side["sizes"] if (r["K"], r["N"]) == (K, N))
    return Timing.from_dict(row["timing"])


def run_sides(mode: str) -> dict[str, Any]:
    s = SIZES[mode]
    sides = {m: run_side(__name__, "side", method=m, sizes=_sizes(s), d=s["d"],
                         repeats=s["repeats"]) for m in ("check", "brute", "encdec")}
    if s["scale"]:
        sc = s["scale"]
        for m in ("check", "encdec"):
            sides[f"scale_{m}"] = run_side(__name__, "side", method=m, sizes=[[sc["K"], sc["N"]]],
                                           d=sc["d"], repeats=2, dtype_name="float32")
    if s["memory"]:
        mm = s["memory"]
        for n in mm["N"]:
            sides[f"stream_{n}"] = run_side(__name__, "side_stream", K=mm["K"], d=mm["d"], N=n)
    if s.get("file_memory"):
        fm = s["file_memory"]
        sides.update(file_sides(fm["K"], fm["d"], fm["N"]))
    return sides


def summarise(mode: str, sides: dict[str, Any]) -> Result:
    s = SIZES[mode]
    sizes = _sizes(s)
    d = s["d"]
    agree = all(a["digest"] == b["digest"]
                for a, b in zip(sides["check"]["sizes"], sides["brute"]["sizes"], strict=True))
    ratios: dict[str, Any] = {"per_size": []}
    for K, N in sizes:
        ratios["per_size"].append({
            "K": K, "N": N,
            "brute_over_check": ratio(_t(sides["brute"], K, N), _t(sides["check"], K, N)),
            "check_over_encdec": ratio(_t(sides["check"], K, N), _t(sides["encdec"], K, N)),
        })
    exps = {}
    for m in ("check", "brute", "encdec"):
        exps[m] = {
            "K": fit_exponent(s["k_sweep"], [_t(sides[m], k, s["n_fixed"]).median
                                            for k in s["k_sweep"]]),
            "N": fit_exponent(s["n_sweep"], [_t(sides[m], s["k_fixed"], n).median
                                            for n in s["n_sweep"]]),
        }
    ratios["exponents"] = exps
    kmax, nfix = s["k_sweep"][-1], s["n_fixed"]
    big = next(r for r in ratios["per_size"] if (r["K"], r["N"]) == (kmax, nfix))
    l0 = next(r["l0"] for r in sides["check"]["sizes"] if (r["K"], r["N"]) == (kmax, nfix))
    prob = (f"K ∈ {s['k_sweep']} at N={nfix}; N ∈ {s['n_sweep']} at K={s['k_fixed']}; d={d}; "
            "ReLU encoder, own codes, float64")
    acc = ("verdicts (C1, C4, C5 upper/lower sets) identical to the brute force at every size"
           if agree else "NOT identical to the brute force at some size (see JSON)")
    growth = (f"cost ∝ K^{exps['check']['K']:.2f} N^{exps['check']['N']:.2f} (check), "
              f"K^{exps['brute']['K']:.2f} N^{exps['brute']['N']:.2f} (brute force), "
              f"K^{exps['encdec']['K']:.2f} N^{exps['encdec']['N']:.2f} (encode+decode)")
    rows = [
        Row("checker `check` vs the brute-force reference `brute_force`", prob,
            f"{fmt_speed(big['brute_over_check'])} at K={kmax}, N={nfix}; {growth}",
            f"check {mib(sides['check'])} vs brute force {mib(sides['brute'])} "
            f"(at K={s['k_fixed']}, N={s['n_sweep'][-1]})", acc, "—"),
        Row("checker `check` vs one encode+decode pass (cost ratio)", prob,
            f"{fmt_ratio(big['check_over_encdec'])} the cost at K={kmax}, N={nfix} "
            f"(L0 {l0:.1f}); "
            + ", ".join(f"{r['check_over_encdec']['median']:.1f}× at K={r['K']}, N={r['N']}"
                        for r in ratios["per_size"]),
            f"encode+decode {mib(sides['encdec'])}", "—", "—"),
    ]
    notes = []
    if s["scale"]:
        sc = s["scale"]
        big_sides = {m: sides[f"scale_{m}"] for m in ("check", "encdec")}
        r = ratio(_t(big_sides["check"], sc["K"], sc["N"]), _t(big_sides["encdec"], sc["K"],
                                                             sc["N"]))
        ratios["scale"] = r
        l0 = big_sides["check"]["sizes"][0]["l0"]
        met = r["median"] <= 3
        rows.append(Row(
            "checker `check` vs one encode+decode pass, at scale",
            f"K={sc['K']}, d={sc['d']}, N={sc['N']}, float32, L0 {l0:.1f} "
            f"({100 * l0 / sc['K']:.1f} % of K)",
            f"{fmt_ratio(r)} the cost (check {_t(big_sides['check'], sc['K'], sc['N']).median:.1f}"
            f" s, encode+decode {_t(big_sides['encdec'], sc['K'], sc['N']).median:.1f} s)",
            f"check {mib(big_sides['check'])} vs encode+decode {mib(big_sides['encdec'])}",
            "—", target_cell("≤ 3×", met, f"{r['median']:.2f}× (median)")))
    if s["memory"]:
        mm = s["memory"]
        mem = {n: sides[f"stream_{n}"] for n in mm["N"]}
        lo_n, hi_n = mm["N"][0], mm["N"][-1]
        lo_m, hi_m = (mem[n]["memory"]["peak_rss_mib"] for n in (lo_n, hi_n))
        growth_pct = 100 * (hi_m / lo_m - 1)
        ratios["memory_growth_pct"] = growth_pct
        rows.append(Row(
            "checker peak memory, streamed source", f"K={mm['K']}, d={mm['d']}, N {lo_n} → "
            f"{hi_n} (lazily generated, float32)",
            f"peak RSS {lo_m:.0f} → {hi_m:.0f} MiB ({growth_pct:+.1f} %); check "
            f"{mem[hi_n]['timing']['median']:.0f} s at N={hi_n}",
            f"over baseline: {mib(mem[lo_n])} → {mib(mem[hi_n])}", "—",
            target_cell("< 10 % growth", growth_pct < 10, f"{growth_pct:+.1f} %")))
        notes.append("check memory growth: the process's absolute peak RSS (imports included) "
                     "during the check, one run per N.")
    if s.get("file_memory"):
        file_rows, growth = file_memory_row(s["file_memory"], sides)
        ratios["file_stream_memory_growth_pct"] = growth
        rows.extend(file_rows)
    return Result("check", mode, {"sizes": sizes, "d": d, "lam": LAM, "theta": THETA,
                                  "scale": s["scale"], "memory": s["memory"]},
                  sides, ratios, rows, notes)


def compare(mode: str) -> Result:
    """Run every side (each in a fresh process) and summarise them."""
    return summarise(mode, run_sides(mode))
