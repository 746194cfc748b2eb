"""Fault injection (issue 18): a kill or a full disk at any write of ``train``, ``repair``,
``convert``, ``check --json`` and a training checkpoint never leaves an output that loads as
valid but is not, and never destroys the previous output.

Each command runs in a subprocess (``tests/fault_runner.py``) that SIGKILLs itself, or gets
``OSError(ENOSPC)``, at its N-th write event (file write, flush, rename, folder swap). A first
run counts the events; the default test run injects one kill and one full disk per command,
the ``slow`` run both at every event. A real full disk is also tried on a
small tmpfs where this process may mount one (root).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from dictopt.io import export, load
from dictopt.io.native import save_dictionary
from dictopt.problem import Dictionary
from dictopt.solvers.sae import make_config, make_sae

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "tests" / "fault_runner.py"
TMP_TAG = ".dictopt-tmp-"


def run(mode: str, nth: int, args: list, tmp: Path) -> tuple[int, str, int]:
    """``(returncode, stderr, events)`` of ``dictopt ARGS`` with the fault at event ``nth``."""
    count = tmp / "events.txt"
    count.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(RUNNER), mode, str(nth), str(count), "--",
                          *map(str, args)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=tmp)
    events = int(count.read_text()) if count.exists() else -1
    return out.returncode, out.stderr, events


def state(path: Path) -> dict[str, bytes] | None:
    """Visible files of a folder (or the file itself) and their bytes; ``None`` if absent."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    if not path.is_dir():
        return None
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if not p.name.startswith(".")}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if TMP_TAG in p.name)


def points(total: int, every: bool, mode: str) -> list[int]:
    """Every event (slow run), else one per mode: the middle one for a kill (new data
    written, not yet in place), the last but one for a full disk."""
    if every:
        return list(range(1, total + 1))
    return [max(1, (total + 1) // 2)] if mode == "kill" else [max(1, total - 1)]


class Case:
    """One command: how to build its inputs and previous output, and what a valid new output
    looks like."""

    def __init__(self, tmp: Path, name: str, args: list, out: Path,
                 valid_new: Callable[[Path, dict], bool]) -> None:
        self.tmp, self.name, self.args, self.out, self.valid_new = tmp, name, args, out, valid_new


def data(seed: int, n: int = 300, d: int = 6) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=(n, d))).astype(np.float32)


def sae_dictionary(seed: int) -> Dictionary:
    sae = make_sae(make_config("relu", d_in=6, d_sae=8, l1_coefficient=0.2), seed=seed)
    return sae.to_dictionary()


def same_weights(weights_file: str) -> Callable[[Path, dict], bool]:
    """A valid new folder: loads, and its weights and λ are the uninterrupted run's."""
    def check(out: Path, reference: dict) -> bool:
        current = state(out)
        load(out)  # must load
        cfg, ref_cfg = (json.loads(s["cfg.json"]) for s in (current, reference))
        return current[weights_file] == reference[weights_file] and cfg["lam"] == ref_cfg["lam"]
    return check


def build(tmp: Path, name: str) -> Case:
    """Inputs and a previous output for command ``name`` (different from the new output)."""
    x = tmp / "x.npy"
    np.save(x, data(0))
    if name == "train":
        out = tmp / "out"
        args = ["train", "--activations", x, "--solver", "classical", "--K", "4", "--lam",
                "0.2", "--set", "max_iter=3", "--out", out, "--quiet"]
        save_dictionary(Dictionary.from_decoder(torch.randn(4, 6), None, lam=0.1), out)
        return Case(tmp, name, args, out, same_weights("sae_weights.safetensors"))
    if name == "repair":
        src = save_dictionary(Dictionary.from_decoder(
            torch.randn(4, 6, generator=torch.Generator().manual_seed(1)), None, lam=0.3),
            tmp / "src")
        out = tmp / "out"
        save_dictionary(Dictionary.from_decoder(torch.randn(4, 6), None, lam=0.1), out)
        args = ["repair", src, "--activations", x, "--out", out, "--max-rounds", "2"]
        return Case(tmp, name, args, out, same_weights("sae_weights.safetensors"))
    if name == "convert":
        src = save_dictionary(sae_dictionary(1).with_lam(0.3), tmp / "src")
        out = tmp / "out"
        export(sae_dictionary(2), out, "saelens")
        args = ["convert", src, "--to", "saelens", "--out", out]

        def valid(out: Path, reference: dict) -> bool:
            current = state(out)
            load(out)
            return current == reference  # conversion is deterministic: byte for byte
        return Case(tmp, name, args, out, valid)
    if name == "check":
        d = save_dictionary(sae_dictionary(1).with_lam(0.3), tmp / "d")
        out = tmp / "report.json"
        out.write_text('{"previous": true}\n')
        args = ["check", d, "--activations", x, "--json", out, "--no-hull", "--certify", "0",
                "--quiet"]

        def valid_report(out: Path, reference: dict) -> bool:
            report = json.loads(out.read_text())
            return report["summary"]["N"] == 300 and report["violations"] == json.loads(
                reference[out.name])["violations"]
        return Case(tmp, name, args, out, valid_report)
    raise ValueError(name)


COMMANDS = ["train", "repair", "convert", "check"]


def fault_sweep(tmp_path: Path, name: str, every: bool) -> int:
    """Inject kills and full disks at the chosen events of command ``name``; returns how many
    runs were checked."""
    (tmp_path / "ref").mkdir()
    ref_case = build(tmp_path / "ref", name)
    rc, err, total = run("count", 0, ref_case.args, ref_case.tmp)
    assert rc == 0 and total > 0, err
    reference = state(ref_case.out)
    runs = 0
    for mode in ("kill", "enospc"):
        for nth in points(total, every, mode):
            tmp = tmp_path / f"{mode}{nth}"
            tmp.mkdir()
            case = build(tmp, name)
            before = state(case.out)
            rc, err, _ = run(mode, nth, case.args, tmp)
            after = state(case.out)
            what = f"{name} {mode} at event {nth}/{total}: rc {rc}, {err[-500:]}"
            if after != before:
                assert after is not None, what
                assert case.valid_new(case.out, reference), what
            if mode == "kill":
                assert rc == -9, what
            else:
                assert rc in (0, 2), what
                if rc == 2:
                    assert after == before, what
                    errors = [line for line in err.splitlines() if ": error: " in line]
                    assert len(errors) == 1 and "No space left on device" in errors[0], what
                    assert "Traceback" not in err, what
                assert not temporaries(tmp), what  # a full disk cleans up after itself
            runs += 1
            shutil.rmtree(tmp)
    return runs


@pytest.mark.parametrize("name", COMMANDS)
def test_kill_or_full_disk_never_leaves_a_half_written_output(tmp_path, name):
    """A kill at the middle write event, a full disk at the last but one (all: slow run)."""
    assert fault_sweep(tmp_path, name, every=False) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", COMMANDS)
def test_kill_or_full_disk_at_every_write_event(tmp_path, name):
    """Kill/ENOSPC at every write event of the command."""
    assert fault_sweep(tmp_path, name, every=True) >= 4


# --------------------------------------------------------------------------------------------
# Checkpoints: a run killed at any write resumes to the uninterrupted result.
# --------------------------------------------------------------------------------------------


def checkpoint_args(tmp: Path, resume: bool) -> list:
    x = tmp.parent / "x.npy"
    args = ["train", "--activations", x, "--solver", "sae-topk", "--K", "8", "--set", "k=2",
            "--set", "total_steps=12", "--set", "batch_size=32", "--set", "init_rows=64",
            "--set", "checkpoint_every=4", "--set", f"checkpoint_dir={tmp / 'ck'}",
            "--out", tmp / "out", "--quiet"]
    return args + (["--set", "resume=true"] if resume else [])


def checkpoint_sweep(tmp_path: Path, every: bool) -> int:
    np.save(tmp_path / "x.npy", data(3, n=400))
    (tmp_path / "ref").mkdir()
    rc, err, total = run("count", 0, checkpoint_args(tmp_path / "ref", False), tmp_path / "ref")
    assert rc == 0 and total > 0, err
    reference = state(tmp_path / "ref" / "out")["sae_weights.safetensors"]
    runs = 0
    for nth in points(total, every, "kill"):
        tmp = tmp_path / f"kill{nth}"
        tmp.mkdir()
        rc, err, _ = run("kill", nth, checkpoint_args(tmp, False), tmp)
        assert rc == -9, err
        rc, err, _ = run("count", 0, checkpoint_args(tmp, True), tmp)
        assert rc == 0, f"resume after a kill at event {nth}/{total}: {err[-800:]}"
        assert state(tmp / "out")["sae_weights.safetensors"] == reference, nth
        runs += 1
        shutil.rmtree(tmp)
    return runs


def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path):
    """A kill at the middle write event (a checkpoint) resumes, and the resumed SAE equals the
    uninterrupted one byte for byte (every event: slow run)."""
    assert checkpoint_sweep(tmp_path, every=False) == 1


@pytest.mark.slow
def test_killed_training_resumes_at_every_write_event(tmp_path):
    assert checkpoint_sweep(tmp_path, every=True) >= 4


# --------------------------------------------------------------------------------------------
# A real full disk.
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); injected ENOSPC covers it")
    yield where
    subprocess.run(["umount", str(where)], check=False)


def test_a_real_full_disk_keeps_the_previous_output(small_disk, tmp_path, capsys):
    """On a 64 KiB tmpfs: a small dictionary is saved, a larger one does not fit: exit 2 with
    one line, the previous folder intact, no temporaries left; the same for ``--json``."""
    from dictopt.cli import main

    out = small_disk / "d"
    save_dictionary(Dictionary.from_decoder(torch.randn(4, 6), None, lam=0.1), out)
    before = state(out)
    big = tmp_path / "big"
    save_dictionary(Dictionary.from_decoder(torch.randn(2000, 6, dtype=torch.float64), None,
                                            lam=0.2), big)
    rc = main(["convert", str(big), "--to", "native", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and err.count("\n") == 1, err
    assert state(out) == before and not temporaries(small_disk)
    assert load(out).lam == pytest.approx(0.1)
    # a report that does not fit leaves the previous report
    (small_disk / "filler").write_bytes(b"\0" * 40_000)
    (small_disk / "r.json").write_text('{"previous": true}\n')
    from dictopt.atomic import write_text

    with pytest.raises(Exception, match="No space left on device"):
        write_text(small_disk / "r.json", "x" * 60_000)
    assert (small_disk / "r.json").read_text() == '{"previous": true}\n'
    assert not temporaries(small_disk)
