"""Run every comparison of dictopt against what users would use instead; one JSON, one table.

    python benchmarks/run.py [--smoke|--quick|--full] [--only NAME ...] [--json PATH]
                             [--update-readme [--readme PATH]] [--from-json PATH]

Comparisons (``benchmarks/compare/``): ``coder`` (exact coder vs cvxpy and scikit-learn
``Lasso``), ``classical`` (dictionary learning vs scikit-learn's), ``wide`` (wide-limit bound vs
cvxpy), ``check`` (checker vs the brute-force reference and vs one encode+decode pass, with the
growth of its cost), ``sae`` (SAE trainer vs SAELens's). ``--quick`` (default) takes a few
minutes and runs in CI (no timing asserts); ``--full`` is the size of the README table;
``--smoke`` is tiny (tests). ``--full`` writes ``benchmarks/results.json`` unless ``--json``
says otherwise. ``--update-readme`` rewrites the block between the ``benchmarks`` markers of
README.md. Every side runs in a fresh process with ``--threads`` threads (default 1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare import COMPARISONS  # noqa: E402
from benchmarks.harness import ROOT, Row, machine_info, render_block, update_readme  # noqa: E402

log = logging.getLogger("benchmarks")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    for m in ("smoke", "quick", "full"):
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m)
    p.set_defaults(mode="quick")
    p.add_argument("--only", nargs="+", choices=COMPARISONS, metavar="NAME",
                   help=f"run only these comparisons ({', '.join(COMPARISONS)})")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--update-readme", action="store_true",
                   help="regenerate the README block between the benchmark markers")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--from-json", type=Path,
                   help="do not run anything: recompute the rows from the measurements stored "
                        "in this JSON and print (or, with --update-readme, write) the table")
    p.add_argument("--threads", type=int, default=1, help="threads per side (default 1)")
    return p.parse_args(argv)


def run(mode: str, names: list[str], threads: int) -> dict:
    """Run the comparisons ``names`` in ``mode``; the results document (JSON-serialisable)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    doc = {"schema": 1, "mode": mode, "machine": machine_info(), "results": [], "failed": []}
    t0 = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        print(f"[{name}] running ({mode})...", flush=True)
        try:
            res = importlib.import_module(f"benchmarks.compare.{name}").compare(mode)
        except Exception as err:  # noqa: BLE001 - a failed comparison is reported, not fatal
            traceback.print_exc()
            doc["failed"].append({"name": name, "error": str(err)[-2000:]})
            fail = Row(name, "—", f"failed: {type(err).__name__}", "—", "—", "—")
            doc["results"].append({"name": name, "mode": mode, "problem": {}, "sides": {},
                                   "ratios": {}, "rows": [fail.__dict__], "notes": [],
                                   "seconds": time.perf_counter() - t})
            continue
        res.seconds = time.perf_counter() - t
        doc["results"].append(res.as_dict())
        for row in res.rows:
            print(f"  {row.comparison}: {row.figure}; memory {row.memory}; {row.accuracy}; "
                  f"target {row.target}", flush=True)
        print(f"[{name}] {res.seconds:.0f} s", flush=True)
    doc["seconds"] = time.perf_counter() - t0
    doc["machine"]["load_average_end"] = list(os.getloadavg())
    return doc


def resummarise(doc: dict) -> dict:
    """Recompute every row, ratio and note from the stored measurements (the sides): the table
    can change wording without rerunning anything, and every figure stays derived from them."""
    for i, res in enumerate(doc["results"]):
        if not res.get("sides") or any(f["name"] == res["name"] for f in doc["failed"]):
            continue
        mod = importlib.import_module(f"benchmarks.compare.{res['name']}")
        new = mod.summarise(res["mode"], res["sides"])
        new.seconds = res["seconds"]
        doc["results"][i] = new.as_dict()
    return doc


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json:
        doc = resummarise(json.loads(args.from_json.read_text()))
        out = args.json
    else:
        doc = run(args.mode, list(args.only or COMPARISONS), args.threads)
        out = args.json or (ROOT / "benchmarks" / "results.json" if args.mode == "full" else None)
    if out is not None:
        out.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"results written to {out}")
    print(render_block(doc))
    if args.update_readme:
        update_readme(args.readme, doc)
        print(f"{args.readme} updated")
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
