"""``dictopt wide``: width sweep against the wide-dictionary limit ``L_∞`` (THEORY §3)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dictopt.cli._common import add_data_arguments, load_data, parse_options, unit_interval


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wide",
        help="train dictionaries of growing width and compare them with the wide-limit bound",
        description="Compute L_inf = min_b (1/N) sum_n huber_lam(|x_n - b|), train classical "
        "dictionaries at each width K and seed, and write DIR/wide.json with, per width, the "
        "best and median loss, the gap to L_inf, feature splitting, ray ownership and C5 "
        "violations.",
    )
    add_data_arguments(p)
    p.add_argument("--K", required=True, help="strictly increasing widths, e.g. 2,4,8,16")
    p.add_argument(
        "--seeds",
        default="3",
        help="a count S (seeds --seed .. --seed+S-1) or a comma list of seeds (default 3)",
    )
    p.add_argument("--lam", type=float, required=True, help="λ in THEORY §1's convention")
    p.add_argument("--out", required=True, help="output folder (wide.json is written there)")
    p.add_argument("--solver", default="classical", help="solver name (default classical)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="solver option (repeatable), e.g. --set max_iter=200",
    )
    p.add_argument("--no-limit-init", action="store_true", help="skip the limit-initialised runs")
    p.add_argument(
        "--ray-cos",
        type=unit_interval,
        default=0.9999,
        help="a data ray owns an atom when their cosine is at least this (default 0.9999)",
    )
    p.add_argument(
        "--split-cos",
        type=unit_interval,
        default=0.9,
        help="cosine for counting learned atoms aligned with a true feature (default 0.9)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_widths(text: str) -> list[int]:
    """``"2,4,8"`` → ``[2, 4, 8]`` (clear error otherwise; monotonicity is checked by the sweep)."""
    from dictopt.validation import DictoptInputError

    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DictoptInputError(f"--K: expected comma-separated integers, got {text!r}") from None


def parse_seeds(text: str, base: int) -> list[int]:
    """A count ``"3"`` → ``[base, base+1, base+2]``; a list ``"0,5"`` → ``[0, 5]``."""
    from dictopt.validation import DictoptInputError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DictoptInputError(
            f"--seeds: expected a count or a comma list, got {text!r}"
        ) from None
    if len(values) == 1 and "," not in text:
        if values[0] < 1:
            raise DictoptInputError(f"--seeds: the count must be ≥ 1, got {values[0]}")
        return list(range(base, base + values[0]))
    if not values:
        raise DictoptInputError("--seeds: no seeds given")
    return values


def run(args: argparse.Namespace) -> int:
    from dictopt.atomic import check_output_file
    from dictopt.solvers.registry import get_solver
    from dictopt.validation import check_lambda
    from dictopt.wide.sweep import sweep

    check_output_file(Path(args.out) / "wide.json", inputs=[args.activations])
    lam = check_lambda(args.lam, "--lam")
    widths = parse_widths(args.K)
    seeds = parse_seeds(args.seeds, args.seed)
    spec = get_solver(args.solver)
    x = load_data(args).to_tensor()
    truth = None
    if args.world:
        from dictopt.data.worlds import make_world

        truth = make_world(args.world, seed=args.seed, **parse_options(args.world_set)).atoms
    result = sweep(
        x,
        widths,
        seeds,
        lam,
        truth=truth,
        fit=spec.fit,
        fit_options=parse_options(args.set),
        limit_init=not args.no_limit_init,
        ray_cos=args.ray_cos,
        split_cos=args.split_cos,
        progress=not args.quiet,
    )
    result.solver = spec.name
    result.meta["data"] = args.activations or f"world:{args.world}"
    path = result.to_json(args.out)
    print(
        f"L_inf = {result.l_inf:.6g} (N={result.n}, {result.n_outside} points outside the "
        f"λ-ball, {result.n_rays} limit rays)"
    )
    print(f"{'K':>6} {'best':>12} {'median':>12} {'gap':>10} {'rays':>6} {'C5':>5}")
    for row in result.rows:
        c5 = "-" if row.c5_violations is None else str(row.c5_violations)
        print(
            f"{row.K:>6} {row.best:>12.6g} {row.median:>12.6g} {row.gap:>10.3g} "
            f"{row.ray_ownership:>6.2f} {c5:>5}" + ("  attained" if row.attained else "")
        )
    print(f"wrote {path}")
    return 0
