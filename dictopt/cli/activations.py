"""``dictopt activations``: residual-stream activations of a language model, as shards."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "activations",
        help="extract a language model's residual-stream activations into .npy shards",
        description="Run a language model on text and write its layer-L residual stream as "
        ".npy shards plus manifest.json (model, layer, tokens, dtype, normalisation) to --out; "
        "the folder is what --activations takes. Needs the lm extra (scripts/setup_lm.sh).",
    )
    p.add_argument("--model", required=True,
                   help="smollm2, minilm, a Hugging Face model folder, or a .gguf file")
    p.add_argument("--layer", type=int, required=True,
                   help="residual stream after this many blocks (0 = embeddings)")
    p.add_argument("--text", required=True,
                   help="'wiki' (packaged Wikipedia summaries), a .txt file (blank-line "
                   "separated documents) or a .jsonl file ({\"text\": ...} per line)")
    p.add_argument("--tokens", type=int, required=True, help="number of token rows to write")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--context", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    p.add_argument("--shard-rows", type=int, default=16384, help="rows per shard (default 16384)")
    p.add_argument("--normalise", choices=("mean_squared_norm", "none"),
                   default="mean_squared_norm",
                   help="scale rows by one factor so that the mean squared norm is d (default; "
                   "the factor is recorded) or keep raw activations")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--keep-first", action="store_true",
                   help="keep position 0 of each window (an attention sink; dropped by default)")
    p.add_argument("--keep-special", action="store_true",
                   help="keep special tokens such as BOS/CLS/SEP (dropped by default)")
    p.add_argument("--seed", type=int, default=0, help="document shuffling seed (default 0)")
    p.add_argument("--no-shuffle", action="store_true", help="read documents in file order")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace activations in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.data.lm import extract_activations

    result = extract_activations(
        args.model, args.layer, args.text, args.tokens, args.out,
        context=args.context, batch_size=args.batch_size, shard_rows=args.shard_rows,
        normalisation=args.normalise, dtype=args.dtype, drop_first=not args.keep_first,
        keep_special=args.keep_special, seed=None if args.no_shuffle else args.seed,
        device=args.device, overwrite=args.overwrite, progress=not args.quiet,
    )
    m = result.manifest
    norm = m["normalisation"]
    print(
        f"wrote {m['tokens']} tokens × {m['d']} (layer {m['layer']} of {m['model']['name']}, "
        f"{m['text']['documents_used']} documents) in {len(m['shards'])} shards to "
        f"{result.folder}\n"
        f"normalisation {norm['method']}: factor {norm['factor']:.6g} (raw mean squared norm "
        f"{norm['raw_mean_squared_norm']:.6g}, max norm {norm['raw_max_norm']:.4g}); "
        f"{m['tokens_per_second']} tokens/s"
    )
    return 0
