"""``dictopt report``: a check (and optionally a wide sweep) as a self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from dictopt.cli._common import nonnegative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="turn a check JSON (and a wide sweep) into an HTML/Markdown/JSON report",
        description="Render the summary, the ranked violations and the diagnostic plots of a "
        "`dictopt check --json` result. With --dictionary and --activations the top pairs' "
        "hull plots and the co-occurrence scatter are drawn (the activations are streamed "
        "once); without them those plots are replaced by a note.",
    )
    p.add_argument("check", help="check JSON file (or a folder holding check.json)")
    p.add_argument("--dictionary", default=None, help="the checked dictionary folder")
    p.add_argument("--activations", default=None, help="the checked activations (.npy/folder)")
    p.add_argument("--wide", default=None, help="wide sweep JSON (or its folder)")
    p.add_argument("--out", required=True, help="output file (or folder: report.FORMAT)")
    p.add_argument("--format", choices=("html", "json", "md"), default=None,
                   help="default: from --out's suffix, else html")
    p.add_argument("--top", type=nonnegative_int, default=8,
                   help="pairs with a hull plot (default 8)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dictopt.atomic import check_output_file
    from dictopt.plots.html import write_report
    from dictopt.validation import DictoptInputError

    if (args.dictionary is None) != (args.activations is None):
        raise DictoptInputError(
            "--dictionary and --activations go together (the hull plots need both)"
        )
    if Path(args.out).suffix and not Path(args.out).is_dir():
        check_output_file(args.out, inputs=[args.check, args.dictionary, args.activations])
    path = write_report(args.check, args.out, data=args.activations,
                        dictionary=args.dictionary, wide=args.wide, format=args.format,
                        top=args.top, progress=not args.quiet)
    print(f"report written to {path}")
    return 0
