"""Code statistics of issue #15: the longest functions and the public functions of
``dictopt.check``, ``dictopt.io``, ``dictopt.solvers`` and ``dictopt.wide`` whose docstring lacks
a numpy-style ``Parameters`` or ``Returns`` section.

    python scripts/code_stats.py [ROOT]      # ROOT: a checkout (default: this one)

A public function is a module-level ``def`` without a leading underscore in a module without one.
It needs ``Parameters`` when it takes arguments and ``Returns`` (or ``Yields``) always (a
function returning ``None`` says so). Lengths count the ``def`` line to the last line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("check", "io", "solvers", "wide")


def functions(root: Path):
    for path in sorted((root / "dictopt").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(root), node, tree


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    lengths = []
    missing, public = [], 0
    for rel, node, tree in functions(root):
        lengths.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
        if node not in tree.body or node.name.startswith("_"):
            continue
        if rel.parts[1] not in PACKAGES or any(p.startswith("_") and p != "__init__.py"
                                                for p in rel.parts):
            continue
        public += 1
        doc = ast.get_docstring(node) or ""
        args = [a.arg for a in node.args.args + node.args.kwonlyargs] + (
            [node.args.vararg.arg] if node.args.vararg else []) + (
            [node.args.kwarg.arg] if node.args.kwarg else [])
        need_params = bool(args)
        ok = ("Returns" in doc or "Yields" in doc) and (not need_params or "Parameters" in doc)
        if not ok:
            missing.append(f"{rel}:{node.lineno} {node.name}")
    lengths.sort(reverse=True)
    print("ten longest functions:")
    for n, name in lengths[:10]:
        print(f"  {n:4d}  {name}")
    print(f"functions over 80 lines: {sum(n > 80 for n, _ in lengths)}")
    print(f"public functions in dictopt.{{{','.join(PACKAGES)}}}: {public}; "
          f"without Parameters/Returns: {len(missing)}")
    for m in missing:
        print(f"  {m}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
