"""``dictopt train``: learn a dictionary with any registered solver and save it."""

from __future__ import annotations

import argparse
import logging

from dictopt.cli._common import (
    add_data_arguments,
    check_solver_options,
    load_data,
    parse_options,
)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="learn a dictionary (classical or SAE) and save it in SAELens layout",
        description="Learn a dictionary on a synthetic world or your activations and write "
        "cfg.json + sae_weights.safetensors to --out.",
    )
    add_data_arguments(p)
    p.add_argument("--solver", required=True, help="solver name (see `dictopt solvers`)")
    p.add_argument("--K", type=int, required=True, help="number of atoms")
    p.add_argument("--lam", type=float, default=None, help="λ in THEORY §1's convention")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="solver option (repeatable), e.g. --set max_iter=200",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.atomic import check_output_folder
    from dictopt.data.evaluate import evaluate
    from dictopt.io.native import DICTIONARY_FILES, save_dictionary
    from dictopt.solvers.registry import get_solver
    from dictopt.validation import DictoptInputError, check_lambda, check_positive_int

    spec = get_solver(args.solver)
    K = check_positive_int(args.K, "--K")
    if spec.needs_lam and args.lam is None:
        raise DictoptInputError(f"--lam: solver {spec.name!r} needs λ (a number > 0)")
    lam = check_lambda(args.lam, "--lam") if args.lam is not None else None
    options = check_solver_options(spec.fit, parse_options(args.set), spec.name)
    check_output_folder(args.out, owned=DICTIONARY_FILES, inputs=[args.activations])
    source = load_data(args)
    if source.n is not None and K > source.n:
        log.warning("--K %d exceeds the %d data rows: some atoms cannot be supported by the "
                    "data (expect dead or duplicate atoms)", K, source.n)
    dictionary = spec.fit(
        source, K=K, lam=lam, seed=args.seed, progress=not args.quiet, **options
    )
    dictionary.meta.setdefault("data", args.activations or f"world:{args.world}")
    out = save_dictionary(dictionary, args.out)
    if dictionary.lam is not None:
        stats = evaluate(dictionary, source)
        print(
            f"saved {spec.name} dictionary (K={dictionary.K}, d={dictionary.d}) to {out}\n"
            f"loss {stats.loss:.6g}  (reconstruction {stats.reconstruction:.6g}, "
            f"sparsity {stats.sparsity:.6g})  L0 {stats.l0:.2f}  "
            f"explained variance {stats.explained_variance:.4f}"
        )
    else:
        print(f"saved {spec.name} dictionary (K={dictionary.K}, d={dictionary.d}) to {out}")
    return 0
