"""``dictopt repair``: certified descent from a saved dictionary; saves the repaired one."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "repair",
        help="apply certified descent moves until no certificate lowers the loss",
        description="Check with optimal codes, apply the best certified move, re-solve the "
        "codes, repeat. The loss never increases. Writes the repaired dictionary (codes = "
        "optimal lasso codes, no encoder) to --out.",
    )
    p.add_argument("dir", help="dictionary or SAE in any format `check` reads (folder or file)")
    p.add_argument("--activations", required=True, help=".npy file [N, d] or folder of shards")
    p.add_argument("--out", required=True, help="output folder for the repaired dictionary")
    p.add_argument("--lam", type=float, default=None, help="supply or override λ")
    p.add_argument("--max-rounds", type=int, default=100, help="accepted moves at most")
    p.add_argument("--overwrite", action="store_true",
                   help="allow --out to be the input folder (replaced once the repair is done)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (rounds and loss)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.atomic import check_output_folder
    from dictopt.check.repair import repair
    from dictopt.data.sources import as_source
    from dictopt.io import load
    from dictopt.io.native import DICTIONARY_FILES, save_dictionary
    from dictopt.validation import check_lambda, check_positive_int

    lam = check_lambda(args.lam, "--lam") if args.lam is not None else None
    rounds = check_positive_int(args.max_rounds, "--max-rounds")
    check_output_folder(args.out, owned=DICTIONARY_FILES, inputs=[args.dir, args.activations],
                        overwrite=args.overwrite)
    dictionary = load(args.dir)
    source = as_source(args.activations, dtype=dictionary.dtype)
    res = repair(dictionary, source, lam=lam, max_rounds=rounds, progress=not args.quiet)
    out = save_dictionary(res.dictionary, args.out)
    counts = res.report.summary["counts"]
    sys.stdout.write(
        f"repair: {len(res.moves)} moves, loss {res.losses[0]:.6g} -> {res.losses[-1]:.6g}; "
        f"remaining violations {counts}; saved to {out}\n"
    )
    return 0
