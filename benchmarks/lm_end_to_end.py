"""Check an SAE trained on real language-model activations and print the findings.

    python benchmarks/lm_end_to_end.py SAE_DIR ACTS_DIR [--lam L | --lam implied] [--json OUT]

``ACTS_DIR`` comes from ``dictopt activations``; ``SAE_DIR`` is any SAE ``dictopt.io.load`` reads
(``dictopt train``, SAELens, dictionary_learning, ...). Runs
:func:`dictopt.check.check` with the SAE's own codes (the amortisation gap is skipped unless
``--amortisation``: exact codes for K in the thousands are slow on a CPU), measures the top
certificates on the data, and prints counts per condition, labels, the strongest certificates
(predicted / exact / measured decrease) and the top-activating tokens of the atoms involved.
``--lam implied``: :func:`dictopt.io.conventions.implied_lambda` (the median of d_k·r_n over
active codes; for TopK SAEs, which have no λ). Timings are noisy on a shared machine.
"""

# ruff: noqa: T201  (a benchmark script prints its figures)
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from dictopt.check import check
from dictopt.check.certify import certify
from dictopt.data.sources import as_source
from dictopt.io import load
from dictopt.io.conventions import implied_lambda


def top_tokens(acts_dir: Path, dictionary, atoms: list[int], n: int = 6) -> dict[int, list[str]]:
    """The tokens on which each atom's own code is largest (needs the model's tokenizer)."""
    manifest = json.loads((acts_dir / "manifest.json").read_text())
    cache = manifest["model"].get("cache") or manifest["model"]["source"]
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(cache)
    except Exception:  # noqa: BLE001 - the tokens are a nicety
        return {}
    ids = np.load(acts_dir / "tokens.npz")["ids"]
    best = {k: [] for k in atoms}
    for chunk in as_source(acts_dir).iter_chunks():
        a = dictionary.encode(chunk.data.to(dictionary.dtype))[:, atoms]
        for col, k in enumerate(atoms):
            vals, rows = a[:, col].topk(min(n, a.shape[0]))
            best[k] += [(float(v), chunk.start + int(r)) for v, r in zip(vals, rows, strict=True)]
    return {k: [repr(tok.decode([int(ids[r])])) for _, r in sorted(v, reverse=True)[:n]]
            for k, v in best.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sae")
    p.add_argument("acts")
    p.add_argument("--lam", default=None)
    p.add_argument("--rows", type=int, default=None, help="check only the first ROWS rows")
    p.add_argument("--codes", default="own", choices=("own", "optimal"))
    p.add_argument("--amortisation", action="store_true")
    p.add_argument("--certify", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(0)
    D = load(args.sae)  # any format: dictopt, SAELens, dictionary_learning, ...
    src = as_source(args.acts, dtype=D.dtype)
    if args.rows:
        src = as_source(src.to_tensor()[: args.rows])
    lam = D.lam
    if args.lam == "implied":
        lam = implied_lambda(D, src).lam
        print(f"implied λ (median d_k·r_n on active codes): {lam:.4g}")
    elif args.lam is not None:
        lam = float(args.lam)
    t0 = time.perf_counter()
    report = check(D, src, codes=args.codes, lam=lam, amortisation=args.amortisation,
                   progress=False)
    t1 = time.perf_counter()
    if args.certify and report.violations:
        certify(D.with_lam(report.summary["lam"]), src, report, codes=args.codes,
                top=args.certify)
    t2 = time.perf_counter()
    print(report.format(top=args.certify))
    s = report.summary
    print(f"check {t1 - t0:.0f} s, certify {t2 - t1:.0f} s (shared CPU)")
    by_label = Counter(v.label for v in report.violations)
    print("violations by label:", dict(by_label))
    dead = sum(1 for a in report.atoms if a["active_fraction"] == 0)
    print(f"dead atoms (never active on these {s['N']} rows): {dead} / {s['K']}")
    shown = [v for v in report.violations[:5] if v.i is not None]
    atoms = sorted({k for v in shown for k in (v.i, v.j) if k is not None})
    for k, toks in top_tokens(Path(args.acts), D, atoms).items():
        print(f"  atom {k}: top tokens {' '.join(toks)}")
    if args.json:
        report.save_json(args.json)
        print(f"report written to {args.json}")


if __name__ == "__main__":
    main()
