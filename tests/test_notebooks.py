"""The notebooks in ``notebooks/``: committed without outputs (default run), and executed top to
bottom (``-m notebooks``; CI runs them).

Each notebook asserts the predictions it shows, so executing it is the test. The kernel is
``python3`` (ipykernel in this interpreter's environment), started in the repository root with
``PYTHONPATH`` pointing at it so the notebooks import this checkout's dictopt, and with
``OMP_NUM_THREADS=1`` (torch's threads stall on small shared CPUs).

``06_real_lm_activations`` always runs: with cached activations (``$DICTOPT_ACTS`` or
``$DICTOPT_CACHE/acts/smollm2-l6-wiki-120k``) or the ``lm`` extra it checks real SmolLM2
activations; otherwise it prints how to get them and runs nothing else.
``07_absorption_probe_vs_dictopt`` likewise: with ``$DICTOPT_ABSORPTION_RESULTS`` or the ``lm``
extra it compares the probe-based absorption with dictopt's findings (the quick pipeline of
``benchmarks/absorption_probe.py``); otherwise it prints how to get the model.
``08_hook_to_report_in_memory`` always runs: on SmolLM2 when the ``lm`` extra and the packaged
model are installed, else on a small synthetic stand-in model (it prints which).
``DICTOPT_NB_OUT=DIR`` keeps the executed notebooks (with outputs) in ``DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {
    "01_check_a_trained_sae",
    "02_hierarchy_splitting_absorption",
    "03_dense_antipodal_1d",
    "04_wide_limit",
    "05_structures_from_practice",
    "06_real_lm_activations",
    "07_absorption_probe_vs_dictopt",
    "08_hook_to_report_in_memory",
}
CELL_TIMEOUT_S = 300


def test_every_notebook_is_present() -> None:
    assert {p.stem for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.get("outputs") == [], f"{path.name}: cell {i} has outputs (strip them)"
        assert cell.get("execution_count") is None, f"{path.name}: cell {i} has a count"
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and kinds[-1] == "markdown", "open and close with prose"
    assert any("assert" in c.source for c in nb.cells if c.cell_type == "code"), (
        f"{path.name}: a notebook must assert the predictions it shows"
    )


def kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path) -> None:
    import nbclient
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    # nbclient passes extra keyword arguments to the kernel manager's start_kernel
    client.execute(env=kernel_env(), cwd=str(ROOT))
    if os.environ.get("DICTOPT_NB_OUT"):  # keep the executed notebook for reading
        out = Path(os.environ["DICTOPT_NB_OUT"])
        out.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out / path.name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
