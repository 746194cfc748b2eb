"""Golden check reports: fixed, small, deterministic inputs whose JSON reports must not change.

``python scripts/golden.py`` (from the repository root) regenerates every file under
``tests/golden/``; ``tests/test_golden.py`` recomputes each report and compares its JSON text
byte for byte. Regenerate only when a change is *meant* to alter report content, and say in the
commit what changed and why.

The cases (all on the hierarchy world below, float64, one torch thread):

- ``truth_given``: the world's true dictionary with its true codes (an array of given codes);
- ``truth_optimal``: the same dictionary with the exact nonnegative-lasso codes;
- ``relu``: a ReLU SAE (dictopt's own, weights set from the truth plus seeded noise), own codes;
- ``topk``: a TopK SAE (k = 1: the world has ~0.5 active atoms a row, so larger k gives a
  negative implied λ) built the same way, at its implied λ (the median active
  ``d_k·r_n``, :func:`dictopt.io.conventions.implied_lambda`).

Each case except ``truth_given`` is also run on a 2-worker Dask ``LocalCluster`` from a folder
of uneven ``.npy`` shards (``*_dask.json``): given code arrays are not shipped to workers, so
``truth_given`` has no Dask twin. A Dask report equals the local one up to the order of
floating-point additions, so it has its own golden file.

Normalisation (the only one): wall-clock fields are replaced by ``0.0``, keeping their keys:
every value of ``summary.timings`` and ``summary.hull.seconds``. Nothing else is touched.
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
LAM = 0.1
N, D_IN = 1200, 16
CUTS = [0, 300, 700, 950, N]  # uneven shards for the Dask cases
CHUNK = 256
CASES = ("truth_given", "truth_optimal", "relu", "topk")
DASK_CASES = ("truth_optimal", "relu", "topk")


def world() -> Any:
    """The hierarchy world every case uses (3 roots, 2 children each, a bias)."""
    from dictopt.data.worlds import make_world

    return make_world("hierarchy", seed=0, n=N, d=D_IN, n_roots=3, branching=2, bias_norm=1.0)


def _sae(kind: str, w: Any) -> Any:
    """A float64 SAE of ``kind`` whose decoder is the truth plus seeded noise."""
    from dictopt.solvers.sae.relu import ReLUSAE, ReLUSAEConfig
    from dictopt.solvers.sae.topk import TopKSAE, TopKSAEConfig

    truth = w.truth(LAM)
    K = truth.K
    rng = np.random.default_rng(1)
    W_dec = truth.atoms.numpy() + 0.05 * rng.standard_normal((K, D_IN))
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    W_enc = W_dec.T + 0.05 * rng.standard_normal((D_IN, K))
    gen = torch.Generator().manual_seed(0)
    if kind == "relu":
        sae = ReLUSAE(ReLUSAEConfig(d_in=D_IN, d_sae=K, dtype="float64",
                                    l1_coefficient=2 * LAM, unit_norm_decoder=True),
                      generator=gen)
    else:
        sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=K, dtype="float64", k=1), generator=gen)
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(W_dec))
        sae.W_enc.copy_(torch.from_numpy(W_enc))
        sae.b_enc.fill_(-0.05)
        sae.b_dec.copy_(truth.bias)
    return sae


def inputs(case: str, w: Any) -> tuple[Any, Any]:
    """``(dictionary, codes)`` of a case."""
    from dictopt.io.conventions import implied_lambda

    if case == "truth_given":
        return w.truth(LAM), w.codes
    if case == "truth_optimal":
        return w.truth(LAM), "optimal"
    dic = _sae(case, w).to_dictionary()
    if case == "topk":
        dic = dic.with_lam(implied_lambda(dic, w.x).lam)
    return dic, "own"


def normalise(report_json: dict[str, Any]) -> dict[str, Any]:
    """Replace the wall-clock fields (``summary.timings.*``, ``summary.hull.seconds``) by 0."""
    summary = report_json["summary"]
    summary["timings"] = {k: 0.0 for k in summary["timings"]}
    if isinstance(summary.get("hull"), dict) and "seconds" in summary["hull"]:
        summary["hull"]["seconds"] = 0.0
    return report_json


def render(report: Any) -> str:
    """The normalised JSON text of a report, as ``CheckReport.save_json`` lays it out."""
    return json.dumps(normalise(report.to_json()), indent=1) + "\n"


def local_report(case: str, w: Any) -> str:
    """The normalised JSON of ``case`` checked in this process."""
    from dictopt.check import check

    dic, codes = inputs(case, w)
    return render(check(dic, w.x, codes=codes, chunk_size=CHUNK))


def write_shards(w: Any, folder: Path) -> Path:
    """The world's rows as uneven ``.npy`` shards (the Dask cases' source)."""
    for i, (lo, hi) in enumerate(zip(CUTS[:-1], CUTS[1:], strict=True)):
        np.save(folder / f"shard_{i:05d}.npy", w.x[lo:hi])
    return folder


def dask_report(case: str, w: Any, client: Any, shards: Path) -> str:
    """The normalised JSON of ``case`` checked on ``client``'s cluster from ``shards``."""
    from dictopt.distributed import check_distributed

    dic, codes = inputs(case, w)
    return render(check_distributed(dic, shards, client=client, codes=codes, chunk_size=CHUNK))


@contextmanager
def local_cluster() -> Iterator[Any]:
    """A 2-worker, 1-thread-each ``LocalCluster`` and its client."""
    from distributed import Client, LocalCluster

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def main() -> int:
    torch.set_num_threads(1)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    w = world()
    for case in CASES:
        (GOLDEN / f"{case}.json").write_text(local_report(case, w))
    with tempfile.TemporaryDirectory() as tmp, local_cluster() as client:
        shards = write_shards(w, Path(tmp))
        for case in DASK_CASES:
            (GOLDEN / f"{case}_dask.json").write_text(dask_report(case, w, client, shards))
    names = sorted(p.name for p in GOLDEN.glob("*.json"))
    sys.stderr.write(f"wrote {len(names)} golden reports to {GOLDEN}: {', '.join(names)}\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
