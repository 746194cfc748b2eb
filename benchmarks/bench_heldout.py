"""Cost of the held-out validation (THEORY §5) against today's check with certificates.

At the "check at scale" size of ``benchmarks/compare/check.py`` (``--full``: K=4096, d=256,
N=200,000, float32, ReLU SAE, own codes; ``--quick``: K=1024, d=128, N=20,000) this times, in
one process and on the same data:

- ``check`` followed by ``certify`` of the 20 largest certificates (what ``dictopt check``
  does by default), and
- the held-out stage alone (``summary.timings.heldout`` of ``check(..., heldout=True)``: its
  fit and measure passes),

and prints the ratio (target ≤ 1.5×), the number of candidates measured and the headline.
The check runs once, with the held-out stage (its own timing), and ``certify`` runs on that
report, so the baseline ``check + certify`` is ``wall − heldout + certify`` of the same run
(one check instead of two: the full size then fits a loaded machine). ``--out FILE`` writes
the figures as each part ends (a run killed midway leaves what it measured); ``--K/--d/--N``
override the size.
Usage: ``python benchmarks/bench_heldout.py [--quick|--full] [--N 50000] [--out f.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIZES = {"quick": dict(K=1024, d=128, N=20_000), "full": dict(K=4096, d=256, N=200_000)}


def main(argv: list[str] | None = None) -> int:
    import torch

    from benchmarks.compare.check import make_data, make_dictionary
    from dictopt.check import Tolerances, check
    from dictopt.check.certify import certify

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--quick", action="store_true")
    for name in ("K", "d", "N"):
        ap.add_argument(f"--{name}", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the figures here as each part ends")
    args = ap.parse_args(argv)
    s = dict(SIZES["full" if args.full else "quick"])
    s.update({k: getattr(args, k) for k in ("K", "d", "N") if getattr(args, k) is not None})
    out: dict = {**s, "target": "≤ 1.5×"}

    def emit(**kv: object) -> None:
        out.update(kv)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

    torch.manual_seed(0)
    dic = make_dictionary(s["K"], s["d"], "float32")
    x = make_data(dic, s["N"]).float()
    kw = dict(codes="own", hull=False, amortisation=False, tol=Tolerances(tau=0.0))
    emit(stage="check with held-out stage running")
    t0 = time.perf_counter()
    rep = check(dic, x, heldout=True, **kw)
    wall = time.perf_counter() - t0
    ho = rep.summary["timings"]["heldout"]
    emit(stage="certify running", check_s=wall - ho, heldout_s=ho,
         candidates=rep.summary["heldout"]["candidates"],
         tests=rep.summary["heldout"]["tests"],
         significant=rep.summary["heldout"]["significant"],
         significant_raw=rep.summary["heldout"]["significant_raw"],
         headline=rep.summary["heldout"]["headline"])
    t1 = time.perf_counter()
    certify(dic, x, rep, codes="own", top=20)
    cert = time.perf_counter() - t1
    base = wall - ho + cert
    emit(stage="done", certify_s=cert, check_with_certificates_s=base, ratio=ho / base,
         met=ho / base <= 1.5)
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
