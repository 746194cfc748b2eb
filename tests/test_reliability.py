"""Issue 18: hostile and broken inputs. One test (or more) per numbered item of the issue.

Each test failed on the code before the fix; the item is named in the test's docstring.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dictopt.atomic import (
    DictoptOutputError,
    atomic_folder,
    check_output_file,
    check_output_folder,
    write_text,
)
from dictopt.cli import main
from dictopt.data.sources import ShardFolderSource, as_source
from dictopt.io.native import load_dictionary, save_dictionary
from dictopt.problem import Dictionary
from dictopt.solvers.sae import make_config
from dictopt.solvers.train import TrainConfig, train_sae
from dictopt.validation import DictoptInputError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cfg(**overrides) -> TrainConfig:
    sae = make_config("topk", d_in=6, d_sae=12, k=2)
    settings = {"total_steps": 10, "batch_size": 32, "init_rows": 64,
                "b_dec_init_method": "mean", "checkpoint_every": 5, "log_every": 5}
    settings.update(overrides)
    return TrainConfig(sae=sae, **settings)


def data(seed: int, n: int = 400, d: int = 6) -> np.ndarray:
    return np.abs(np.random.default_rng(seed).normal(size=(n, d))).astype(np.float32)


def ckpts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("checkpoint_*.pt"))


# --------------------------------------------------------------------------------------------
# 1. Checkpoints carry a run identity.
# --------------------------------------------------------------------------------------------


def test_resume_never_continues_another_runs_checkpoint(tmp_path):
    """Item 1: B started into A's folder is refused; with overwrite, B resumed equals an
    uninterrupted B bit for bit, A's checkpoints survive B, and B keeps its own last ones."""
    ck = tmp_path / "ck"
    x, y = data(0), data(1)
    train_sae(x, small_cfg(total_steps=15), progress=False, checkpoint_dir=ck)
    a_files = ckpts(ck)
    assert len(a_files) == 2
    with pytest.raises(DictoptInputError, match="holds checkpoints of another run"):
        train_sae(y, small_cfg(), progress=False, checkpoint_dir=ck)
    with pytest.raises(DictoptInputError, match=r"another run only \(different data"):
        train_sae(y, small_cfg(), progress=False, checkpoint_dir=ck, resume=True)
    # B "killed" after 5 steps (its run stops there), then resumed to 10.
    train_sae(y, small_cfg(total_steps=5), progress=False, checkpoint_dir=ck,
              overwrite_checkpoints=True)
    resumed, _ = train_sae(y, small_cfg(), progress=False, checkpoint_dir=ck, resume=True)
    full, _ = train_sae(y, small_cfg(), progress=False)
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    after = ckpts(ck)
    assert set(a_files) <= set(after)  # A's files were not pruned by B
    assert len(set(after) - set(a_files)) == 2  # B kept its own two newest


def test_resume_names_a_different_seed_and_configuration(tmp_path):
    """Item 1: the refusal names what differs."""
    x = data(0)
    train_sae(x, small_cfg(), seed=0, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(DictoptInputError, match=r"seed 0 vs 3"):
        train_sae(x, small_cfg(), seed=3, progress=False, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(DictoptInputError, match=r"config \(batch_size\)"):
        train_sae(x, small_cfg(batch_size=16), progress=False, checkpoint_dir=tmp_path,
                  resume=True)


def test_truncated_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    """Item 1: a truncated newest checkpoint is skipped (warning), the previous one resumes."""
    x = data(0)
    cfg = small_cfg(total_steps=15, keep_checkpoints=3)
    full, _ = train_sae(x, cfg, progress=False, checkpoint_dir=tmp_path / "a")
    newest = max((tmp_path / "a").glob("checkpoint_*_step_15.pt"))
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable checkpoint.*falling back"):
        resumed, _ = train_sae(x, cfg, progress=False, checkpoint_dir=tmp_path / "a",
                               resume=True)
    for name, tensor in full.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


def test_stray_files_in_the_checkpoint_folder_are_ignored(tmp_path):
    """Items 1 and 11: files that are not checkpoints are ignored; a checkpoint-named file of
    wrong content is refused with a message (exit 2 from the CLI), not a traceback."""
    x = data(0)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "checkpoint_step_x.pt").write_text("not a step number")
    (tmp_path / "checkpoint_abc.tmp").write_text("junk")
    train_sae(x, small_cfg(), progress=False, checkpoint_dir=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "hello"
    own = next(tmp_path.glob("checkpoint_*_step_10.pt"))
    torch.save({"step": "ten"}, own)  # wrong content under the run's own name
    with pytest.warns(UserWarning, match="falling back"):
        train_sae(x, small_cfg(total_steps=12), progress=False, checkpoint_dir=tmp_path,
                  resume=True)
    (tmp_path / "b").mkdir()
    torch.save([1, 2, 3], tmp_path / "b" / "checkpoint_step_4.pt")  # legacy name, garbage
    with pytest.raises(DictoptInputError, match="not a dictopt checkpoint"):
        train_sae(x, small_cfg(), progress=False, checkpoint_dir=tmp_path / "b", resume=True)


# --------------------------------------------------------------------------------------------
# 2. Atomic outputs.
# --------------------------------------------------------------------------------------------


def tiny_dictionary(lam: float, seed: int = 0) -> Dictionary:
    W = torch.randn(5, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Dictionary.from_decoder(W, torch.zeros(4, dtype=torch.float64), lam=lam)


def test_a_failing_folder_write_keeps_the_previous_dictionary(tmp_path, monkeypatch):
    """Item 2: a failure between writing the weights and the config (here: the config write
    runs out of disk) leaves the previous folder, not new weights with the old λ."""
    out = tmp_path / "dict"
    save_dictionary(tiny_dictionary(0.1, seed=0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import dictopt.io.native as native

    real_dumps = json.dumps

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(native.json, "dumps", full_disk)
    with pytest.raises(DictoptOutputError, match="No space left on device.*unchanged"):
        save_dictionary(tiny_dictionary(0.7, seed=1), out)
    monkeypatch.setattr(native.json, "dumps", real_dumps)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert load_dictionary(out).lam == pytest.approx(0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict"]  # no temporary left


def test_a_failing_file_write_keeps_the_previous_report(tmp_path, monkeypatch):
    """Item 2: a full disk during ``--json`` leaves the previous report, not 0 bytes."""
    path = tmp_path / "report.json"
    path.write_text('{"old": true}\n')
    real_fsync = os.fsync

    def enospc(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", enospc)
    with pytest.raises(DictoptOutputError, match="report.json: cannot write"):
        write_text(path, '{"new": true}\n')
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_symlinked_targets_are_not_followed(tmp_path):
    """Item 2: writing over a link replaces the link; the file it pointed to is untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    write_text(link, "{}\n")
    assert victim.read_text() == "precious" and not link.is_symlink()
    (tmp_path / "precious_dir").mkdir()
    (tmp_path / "precious_dir" / "keep.txt").write_text("keep")
    (tmp_path / "out").symlink_to(tmp_path / "precious_dir")
    save_dictionary(tiny_dictionary(0.1), tmp_path / "out")
    assert (tmp_path / "precious_dir" / "keep.txt").read_text() == "keep"
    assert not (tmp_path / "out").is_symlink() and load_dictionary(tmp_path / "out").lam == 0.1


def test_folder_writer_refuses_folders_holding_other_files(tmp_path):
    """Item 2: the folder is replaced as a whole, so a folder with the user's files is refused."""
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(DictoptOutputError, match=r"holds files dictopt did not write \(mine.txt"):
        save_dictionary(tiny_dictionary(0.1), tmp_path)
    with pytest.raises(DictoptOutputError, match="is a file"):
        with atomic_folder(tmp_path / "mine.txt"):
            pass


# --------------------------------------------------------------------------------------------
# 3. Shard paths are confined to their folder.
# --------------------------------------------------------------------------------------------


def shard_folder(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "acts"
    folder.mkdir()
    np.save(folder / "a.npy", data(0, n=20))
    np.save(folder / "b.npy", data(1, n=20))
    np.save(tmp_path / "outside.npy", data(2, n=20))
    (folder / "manifest.json").write_text(json.dumps({"shards": names}))
    return folder


@pytest.mark.parametrize("entry, message", [
    ("../outside.npy", "points outside the folder"),
    ("/etc/passwd", "must be a file name inside"),
    ("/dev/zero", "must be a file name inside"),
    ("missing.npy", "does not exist"),
    ("", "must be a file name inside"),
])
def test_manifest_entries_must_stay_inside_the_folder(tmp_path, entry, message):
    """Item 3: ``..``, absolute paths and devices are refused, naming the entry."""
    folder = shard_folder(tmp_path, ["a.npy", entry])
    with pytest.raises(DictoptInputError, match=f"shard entry {entry!r} {message}"):
        ShardFolderSource(folder)


def test_manifest_links_out_of_the_folder_and_duplicates_are_refused(tmp_path):
    """Item 3: a link leading outside is refused; a shard listed twice is refused."""
    folder = shard_folder(tmp_path, ["a.npy", "link.npy"])
    (folder / "link.npy").symlink_to(tmp_path / "outside.npy")
    with pytest.raises(DictoptInputError, match="'link.npy' points outside the folder"):
        ShardFolderSource(folder)
    (folder / "manifest.json").write_text(json.dumps({"shards": ["a.npy", "b.npy", "./a.npy"]}))
    with pytest.raises(DictoptInputError, match=r"'./a.npy' names the same file as 'a.npy'"):
        ShardFolderSource(folder)


def test_a_fifo_named_like_a_shard_does_not_hang(tmp_path):
    """Item 3: a FIFO in the manifest or among ``*.npy`` is refused at once (subprocess, so a
    regression shows as a timeout rather than a hung test run); also under ``--workers``'s
    partitioning."""
    folder = shard_folder(tmp_path, ["a.npy", "pipe.npy"])
    os.mkfifo(folder / "pipe.npy")
    code = (
        "import sys; from dictopt.data.sources import ShardFolderSource, as_source\n"
        "from dictopt.distributed.sources import partition_source\n"
        "from dictopt.validation import DictoptInputError\n"
        "for f in (ShardFolderSource, partition_source):\n"
        "    try: f(sys.argv[1]); print('accepted')\n"
        "    except DictoptInputError as e: print('refused:', e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                         text=True, timeout=60, env=env)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all("not a regular file" in line for line in lines), out
    (folder / "manifest.json").unlink()  # natural order: the FIFO is skipped, not opened
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.stdout.splitlines() == ["accepted", "accepted"], out


def test_glob_order_skips_links_out_of_the_folder(tmp_path):
    """Item 3: without a manifest, ``*.npy`` links leading outside are not read."""
    folder = tmp_path / "acts"
    folder.mkdir()
    np.save(folder / "a.npy", data(0, n=20))
    np.save(tmp_path / "outside.npy", data(2, n=30))
    (folder / "z.npy").symlink_to(tmp_path / "outside.npy")
    assert as_source(folder).n == 20


# --------------------------------------------------------------------------------------------
# Output paths (item 6) and helpers.
# --------------------------------------------------------------------------------------------


def test_output_checks_name_the_problem(tmp_path):
    """Item 6 (helpers): a file where a folder is wanted, a folder where a file is wanted, the
    input as output, a missing or read-only parent."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(DictoptOutputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(DictoptOutputError, match="is a folder; give a file name"):
        check_output_file(tmp_path)
    with pytest.raises(DictoptOutputError, match="is also an input"):
        check_output_file(tmp_path / "f", inputs=[tmp_path / "f"])
    with pytest.raises(DictoptOutputError, match="is also the input.*--overwrite"):
        check_output_folder(tmp_path, inputs=[tmp_path])
    assert check_output_folder(tmp_path, inputs=[tmp_path], overwrite=True) == tmp_path
    with pytest.raises(DictoptOutputError, match="does not exist; create it first"):
        check_output_file(tmp_path / "missing" / "r.json", create_parents=False)
    with pytest.raises(DictoptOutputError, match="f is a file, not a folder"):
        check_output_file(tmp_path / "f" / "r.json")
