"""``dictopt check``: every first-order condition of a saved dictionary on your activations."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dictopt.cli._common import nonnegative_int, positive_int


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
    p.add_argument("--certify", type=nonnegative_int, default=20, metavar="N",
                   help="measure the N largest certificates on the data (default 20; 0: none)")
    p.add_argument("--no-hull", action="store_true", help="skip the joint hull LPs")
    p.add_argument("--heldout", action="store_true",
                   help="validate every finding on held-out rows (THEORY §5): finite steps "
                   "chosen on half of the rows, measured on the other half with a standard "
                   "error; ranks significant findings first and prints the certified "
                   "improvement (two more passes)")
    p.add_argument("--z", type=float, default=None, metavar="Z",
                   help="significance level of --heldout in standard errors (default 3; "
                   "implies --heldout)")
    p.add_argument("--amortisation", nargs="+", default=None, metavar="all|sample N|off",
                   help="the amortisation gap (own codes' loss − exact lasso codes' loss): "
                   "exact codes for all rows, for a sample of about N rows (chosen by row "
                   "index; reported with its standard error) or off. Default with own codes: "
                   "sample 512")
    p.add_argument("--coder-memory", default=None, metavar="SIZE",
                   help="memory budget of the exact lasso coder, e.g. 2G or 512M (default: "
                   "$DICTOPT_CODER_MEMORY, else 1/16 of the available memory)")
    p.add_argument("--correction", choices=("holm", "none"), default=None,
                   help="multiple testing of --heldout: holm (default) keeps the chance of "
                   "any false finding among all tests at Φ(−z); none tests each at z alone "
                   "(implies --heldout)")
    p.add_argument("--top", type=nonnegative_int, default=10,
                   help="violations to print (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    dist = p.add_mutually_exclusive_group()
    dist.add_argument("--scheduler", metavar="ADDRESS", default=None,
                      help="run both passes on a running Dask cluster, e.g. tcp://host:8786 "
                      "(workers read the shards themselves: the path must be visible to them)")
    dist.add_argument("--workers", type=positive_int, default=None, metavar="N",
                      help="run on a local Dask cluster of N single-threaded worker processes")
    p.add_argument("--partition-rows", type=positive_int, default=None, metavar="R",
                   help="rows per Dask partition (default: one per shard, at most 65536)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.atomic import check_output_file
    from dictopt.check import LocalExecutor, check
    from dictopt.check.certify import certify

    if args.json:
        check_output_file(args.json, inputs=[args.dir, args.activations])
    if args.scheduler or args.workers is not None:
        _require_dask()
    heldout = _heldout(args)
    amortisation = _amortisation(args)
    dictionary = load_dictionary(args.dir)
    executor: Any = LocalExecutor()
    if args.scheduler or args.workers is not None:
        from dictopt.distributed import DaskExecutor

        executor = DaskExecutor(scheduler=args.scheduler, workers=args.workers,
                                partition_rows=args.partition_rows)
    lam = _given_lam(args, executor)  # bad input fails before a cluster starts
    with executor.session():
        source = executor.open(args.activations, dtype=dictionary.dtype, chunk_size=None)
        implied = _implied_lam(dictionary, source) if args.lam == "implied" else None
        lam = implied.lam if implied is not None else lam
        _print_plan(args, dictionary, source.n, amortisation)
        report = check(dictionary, source, codes=args.codes, lam=lam, executor=executor,
                       hull=False if args.no_hull else "auto", progress=not args.quiet,
                       heldout=heldout, amortisation=amortisation)
        if implied is not None:
            report.summary["implied_lambda"] = implied.as_dict()
        if args.certify > 0 and report.violations:
            certify(dictionary.with_lam(report.summary["lam"]), source, report,
                    codes=args.codes, top=args.certify, progress=not args.quiet,
                    executor=executor)
    sys.stdout.write(report.format(top=args.top) + "\n")
    if args.json:
        sys.stdout.write(f"report written to {report.save_json(args.json)}\n")
    from dictopt.check.triage import triage

    sys.stdout.write("\n".join(triage(report, top=3).lines()) + "\n")  # the last lines
    return 0


def _require_dask() -> None:
    import importlib.util

    from dictopt.validation import DictoptInputError

    if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
        raise DictoptInputError(
            "--workers/--scheduler need Dask: install the extra with `pip install "
            "'dictopt[dask]'` (or run without them)"
        )


def load_dictionary(path: str) -> Any:
    """The dictionary saved at ``path`` (any format :func:`dictopt.io.load` reads)."""
    from dictopt.io import load

    return load(path)


def _given_lam(args: argparse.Namespace, executor: Any) -> float | None:
    """λ from ``--lam`` (``None`` when absent or ``implied``)."""
    from dictopt.validation import DictoptInputError, check_lambda

    if args.lam != "implied":
        return check_lambda(args.lam, "--lam") if args.lam is not None else None
    if not executor.ships_arrays:
        raise DictoptInputError(
            "--lam implied is not available with --scheduler/--workers (it needs a median "
            "over all active codes); compute it once with `dictopt check` on a sample, then "
            "pass --lam VALUE"
        )
    return None


def _implied_lam(dictionary: Any, source: Any) -> Any:
    """The implied λ of the dictionary's own codes (printed)."""
    from dictopt.io.conventions import implied_lambda
    from dictopt.validation import DictoptInputError

    implied = implied_lambda(dictionary, source)
    if not implied.lam > 0:
        raise DictoptInputError(
            f"--lam implied: the median of d_k·r_n over active codes is {implied.lam:.4g} "
            "≤ 0 (the codes overshoot: no L1 objective has them as its codes); supply "
            "--lam explicitly"
        )
    sys.stdout.write(
        f"implied λ = {implied.lam:.6g} (median d·r over {implied.n_active} active codes; "
        f"5-95%: {implied.quantiles[0.05]:.3g}..{implied.quantiles[0.95]:.3g})\n"
    )
    return implied


def _amortisation(args: argparse.Namespace) -> Any:
    """``--amortisation`` and ``--coder-memory``, validated before any work (exit 2 on a bad
    value); the budget reaches every coder, local Dask workers included, through the
    environment."""
    import os

    from dictopt.check.amortisation import parse_amortisation
    from dictopt.lasso import MEMORY_ENV, coder_memory_budget

    if args.coder_memory is not None:
        os.environ[MEMORY_ENV] = str(coder_memory_budget(args.coder_memory))
    if args.amortisation is None:
        return None
    mode, n = parse_amortisation(list(args.amortisation))
    return mode if mode != "sample" else n


def _print_plan(args: argparse.Namespace, dictionary: Any, n_rows: int | None,
                amortisation: Any) -> None:
    """Say what the amortisation gap will compute before pass 1, with its estimated cost and
    the way out when that is large (the library's own log line would repeat it)."""
    import logging

    from dictopt.check.amortisation import plan_amortisation

    mode = args.codes if args.codes != "own" or dictionary.encoder is not None else "optimal"
    plan = plan_amortisation(amortisation, codes_mode=mode, population=n_rows)
    if not plan.active:
        return
    line = plan.describe(dictionary.K, dictionary.d)
    if plan.cost(dictionary.K, dictionary.d).large:
        line += "; use --amortisation sample N (or off) to bound it"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if getattr(args, "verbose", 0) == 0:
        logging.getLogger("dictopt.check.amortisation").setLevel(logging.ERROR)


def _heldout(args: argparse.Namespace) -> Any:
    """The held-out options of ``--heldout``/``--z``/``--correction`` (validated before any
    work)."""
    from dictopt.check.heldout import HeldoutOptions
    from dictopt.validation import DictoptInputError

    correction = getattr(args, "correction", None)
    if args.z is None and correction is None:
        return HeldoutOptions() if args.heldout else None
    try:
        return HeldoutOptions(z=3.0 if args.z is None else args.z,
                              correction=correction or "holm")
    except DictoptInputError as err:
        raise DictoptInputError(f"--z: {err} (e.g. --z 3)") from None
