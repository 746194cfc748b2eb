"""``dictopt convert``: rewrite a dictionary/SAE from any supported format into another."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an SAE/dictionary between SAELens, dictionary_learning and dictopt layouts",
        description="Load SRC in any supported format (SAELens, dictionary_learning, sparsify, "
        "OpenAI sparse_autoencoder, .npz, dictopt native; detected from the files present) "
        "and write it to OUT in the chosen layout. Reconstructions are preserved exactly.",
    )
    p.add_argument("src", help="folder or file to read")
    p.add_argument("--to", required=True, choices=("saelens", "dictionary_learning", "native"),
                   help="layout to write")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--format", default="auto", help="force the input format (default: auto)")
    p.add_argument("--lam", type=float, default=None, help="set or override λ")
    p.add_argument("--overwrite", action="store_true",
                   help="allow --out to be SRC itself (it is read completely, then replaced)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.atomic import check_output_folder
    from dictopt.io import export, load
    from dictopt.io.native import DICTIONARY_FILES
    from dictopt.validation import check_lambda

    lam = check_lambda(args.lam, "--lam") if args.lam is not None else None
    check_output_folder(args.out, owned=DICTIONARY_FILES, inputs=[args.src],
                        overwrite=args.overwrite)
    dictionary = load(args.src, args.format, lam=lam)
    out = export(dictionary, args.out, args.to)
    fmt = dictionary.meta.get("format", args.format)
    sys.stdout.write(
        f"{args.src} ({fmt}, K={dictionary.K}, d={dictionary.d}, lam={dictionary.lam}) "
        f"-> {out} ({args.to})\n"
    )
    return 0
