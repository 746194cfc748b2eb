"""The architecture of DESIGN.md, enforced: imports point down the layers (import-linter
contracts in pyproject.toml), every top-level module is in a layer, and no module imports a
private name (``_x``) of another package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dictopt"


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"]


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert f"{len(_contracts())} kept, 0 broken" in out.stdout


def test_every_top_level_module_has_a_layer():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace(":", "|").split("|")}
    top = {f"dictopt.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    top |= {f"dictopt.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    assert top <= named, f"not in a layer: {sorted(top - named)}"


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_cross_package_import_of_a_private_name():
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                    "dictopt"):
                continue
            if _package_of(node.module) == _package_of(module):
                continue
            found += [f"{module}: from {node.module} import {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found
