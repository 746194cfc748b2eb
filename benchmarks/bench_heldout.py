"""Cost of the held-out validation (THEORY §5) against today's check with certificates.

At the "check at scale" size of ``benchmarks/compare/check.py`` (``--full``: K=4096, d=256,
N=200,000, float32, ReLU SAE, own codes; ``--quick``: K=1024, d=128, N=20,000) this times, in
one process and on the same data:

- ``check`` followed by ``certify`` of the 20 largest certificates (what ``dictopt check``
  does by default), and
- the held-out stage alone (``summary.timings.heldout`` of ``check(..., heldout=True)``: its
  fit and measure passes),

and prints the ratio (target ≤ 1.5×), the number of candidates measured and the headline.
Usage: ``python benchmarks/bench_heldout.py [--quick|--full]``.
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
    args = ap.parse_args(argv)
    s = SIZES["full" if args.full else "quick"]
    torch.manual_seed(0)
    dic = make_dictionary(s["K"], s["d"], "float32")
    x = make_data(dic, s["N"]).float()
    kw = dict(codes="own", hull=False, amortisation=False, tol=Tolerances(tau=0.0))
    t0 = time.perf_counter()
    rep = check(dic, x, **kw)
    certify(dic, x, rep, codes="own", top=20)
    base = time.perf_counter() - t0
    rep2 = check(dic, x, heldout=True, **kw)
    ho = rep2.summary["timings"]["heldout"]
    out = {**s, "check_with_certificates_s": base, "heldout_s": ho, "ratio": ho / base,
           "candidates": rep2.summary["heldout"]["candidates"],
           "significant": rep2.summary["heldout"]["significant"],
           "headline": rep2.summary["heldout"]["headline"], "target": "≤ 1.5×",
           "met": ho / base <= 1.5}
    sys.stdout.write(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
