"""``dictopt check``: every first-order condition of a saved dictionary on your activations."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check a dictionary/SAE against the first-order optimality conditions",
        description="Stream the activations twice and check C1-C5, the joint hull condition "
        "and the labels of THEORY.md §2; print a summary and optionally write JSON. Exit "
        "status 0 whenever the check ran, whatever it found; 2 on bad input.",
    )
    p.add_argument("dir", help="dictionary or SAE: a dictopt/SAELens/sparsify/dictionary_learning "
                   "folder, a .pt state dict or a .npz file (format detected)")
    p.add_argument("--activations", required=True, help=".npy file [N, d] or folder of shards")
    p.add_argument("--codes", choices=("own", "optimal"), default="own",
                   help="the dictionary's own encoder (default) or exact lasso codes")
    p.add_argument("--lam", default=None,
                   help="supply or override λ; 'implied' infers it from the SAE's own codes "
                   "(median d_k·r_n on active codes) for objectives without L1")
    p.add_argument("--json", default=None, help="write the full report as JSON here")
    p.add_argument("--certify", type=int, default=20, metavar="N",
                   help="measure the N largest certificates on the data (default 20; 0: none)")
    p.add_argument("--no-hull", action="store_true", help="skip the joint hull LPs")
    p.add_argument("--top", type=int, default=10, help="violations to print (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    dist = p.add_mutually_exclusive_group()
    dist.add_argument("--scheduler", metavar="ADDRESS", default=None,
                      help="run both passes on a running Dask cluster, e.g. tcp://host:8786 "
                      "(workers read the shards themselves: the path must be visible to them)")
    dist.add_argument("--workers", type=int, default=None, metavar="N",
                      help="run on a local Dask cluster of N single-threaded worker processes")
    p.add_argument("--partition-rows", type=int, default=None, metavar="R",
                   help="rows per Dask partition (default: one per shard, at most 65536)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.check import check
    from dictopt.check.certify import certify
    from dictopt.data.sources import as_source
    from dictopt.io import load
    from dictopt.validation import DictoptInputError, check_lambda

    dictionary = load(args.dir)
    if args.scheduler or args.workers is not None:
        return _run_distributed(args, dictionary)
    source = as_source(args.activations, dtype=dictionary.dtype)
    lam = implied = None
    if args.lam == "implied":
        from dictopt.io.conventions import implied_lambda

        implied = implied_lambda(dictionary, source)
        if not implied.lam > 0:
            raise DictoptInputError(
                f"--lam implied: the median of d_k·r_n over active codes is {implied.lam:.4g} "
                "≤ 0 (the codes overshoot: no L1 objective has them as its codes); supply "
                "--lam explicitly"
            )
        lam = implied.lam
        sys.stdout.write(
            f"implied λ = {lam:.6g} (median d·r over {implied.n_active} active codes; "
            f"5-95%: {implied.quantiles[0.05]:.3g}..{implied.quantiles[0.95]:.3g})\n"
        )
    elif args.lam is not None:
        lam = check_lambda(args.lam, "--lam")
    report = check(dictionary, source, codes=args.codes, lam=lam,
                   hull=False if args.no_hull else "auto", progress=not args.quiet)
    if implied is not None:
        report.summary["implied_lambda"] = implied.as_dict()
    if args.certify > 0 and report.violations:
        certify(dictionary.with_lam(report.summary["lam"]), source, report, codes=args.codes,
                top=args.certify, progress=not args.quiet)
    _finish(args, report)
    return 0


def _finish(args: argparse.Namespace, report: Any) -> None:
    """The report, the JSON file, and the triage as the last lines."""
    from dictopt.check.triage import triage

    sys.stdout.write(report.format(top=args.top) + "\n")
    if args.json:
        sys.stdout.write(f"report written to {report.save_json(args.json)}\n")
    sys.stdout.write("\n".join(triage(report, top=3).lines()) + "\n")


def _run_distributed(args: argparse.Namespace, dictionary: Any) -> int:
    """``check`` (and ``certify``) mapped over partitions on a Dask cluster."""
    from dictopt.distributed import certify_distributed, check_distributed, dask_client
    from dictopt.validation import DictoptInputError, check_lambda

    if args.lam == "implied":
        raise DictoptInputError(
            "--lam implied is not available with --scheduler/--workers (it needs a median "
            "over all active codes); compute it once with `dictopt check` on a sample, then "
            "pass --lam VALUE"
        )
    lam = check_lambda(args.lam, "--lam") if args.lam is not None else None
    common = {"codes": args.codes, "progress": not args.quiet,
              "partition_rows": args.partition_rows}
    with dask_client(scheduler=args.scheduler, workers=args.workers) as client:
        report = check_distributed(dictionary, args.activations, client=client, lam=lam,
                                   hull=False if args.no_hull else "auto", **common)
        if args.certify > 0 and report.violations:
            certify_distributed(dictionary.with_lam(report.summary["lam"]),
                                args.activations, report, client=client, top=args.certify,
                                **common)
    _finish(args, report)
    return 0
