"""``dictopt check``: every first-order condition of a saved dictionary on your activations."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check a dictionary/SAE against the first-order optimality conditions",
        description="Stream the activations twice and check C1-C5, the joint hull condition "
        "and the labels of THEORY.md §2; print a summary and optionally write JSON. Exit "
        "status 0 whenever the check ran, whatever it found; 2 on bad input.",
    )
    p.add_argument("dir", help="dictionary folder (cfg.json + sae_weights.safetensors)")
    p.add_argument("--activations", required=True, help=".npy file [N, d] or folder of shards")
    p.add_argument("--codes", choices=("own", "optimal"), default="own",
                   help="the dictionary's own encoder (default) or exact lasso codes")
    p.add_argument("--lam", type=float, default=None, help="supply or override λ")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    p.add_argument("--certify", type=int, default=20, metavar="N",
                   help="measure the N largest certificates on the data (default 20; 0: none)")
    p.add_argument("--no-hull", action="store_true", help="skip the joint hull LPs")
    p.add_argument("--top", type=int, default=10, help="violations to print (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.check import check
    from dictopt.check.certify import certify
    from dictopt.data.sources import as_source
    from dictopt.io.native import load_dictionary
    from dictopt.validation import check_lambda

    dictionary = load_dictionary(args.dir)
    lam = check_lambda(args.lam, "--lam") if args.lam is not None else None
    source = as_source(args.activations, dtype=dictionary.dtype)
    report = check(dictionary, source, codes=args.codes, lam=lam,
                   hull=False if args.no_hull else "auto", progress=not args.quiet)
    if args.certify > 0 and report.violations:
        certify(dictionary.with_lam(report.summary["lam"]), source, report, codes=args.codes,
                top=args.certify, progress=not args.quiet)
    sys.stdout.write(report.format(top=args.top) + "\n")
    if args.json:
        sys.stdout.write(f"report written to {report.save_json(args.json)}\n")
    return 0
