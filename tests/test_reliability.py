"""Issue 18: hostile and broken inputs. One test (or more) per numbered item of the issue.

Each test failed on the code before the fix; the item is named in the test's docstring.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

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
    from dictopt.atomic import DictoptOutputError

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
    from dictopt.atomic import DictoptOutputError, write_text

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
    from dictopt.atomic import write_text

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
    from dictopt.atomic import DictoptOutputError, atomic_folder

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
    from dictopt.atomic import (
        DictoptOutputError,
        check_output_file,
        check_output_folder,
    )

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


# --------------------------------------------------------------------------------------------
# Shared small inputs for the command-line items.
# --------------------------------------------------------------------------------------------


def trained_sae(arch: str = "relu", d: int = 6, K: int = 10):
    """A small dictopt SAE with nonzero random weights (no training needed)."""
    from dictopt.solvers.sae import make_sae

    opts = {"relu": {"l1_coefficient": 0.2}, "topk": {"k": 2}}[arch]
    return make_sae(make_config(arch, d_in=d, d_sae=K, **opts), seed=0).to_dictionary()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# 4. Half-precision SAEs.
# --------------------------------------------------------------------------------------------


def to_half(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite every floating tensor of a saved folder in ``dtype`` (as bf16/fp16 SAEs ship)."""

    from safetensors.torch import load_file, save_file

    for f in folder.iterdir():
        if f.suffix == ".safetensors":
            t = load_file(str(f))
            save_file({k: v.to(dtype) for k, v in t.items()}, str(f))
        elif f.suffix == ".pt":
            t = torch.load(f, weights_only=True)
            torch.save({k: v.to(dtype) if v.is_floating_point() else v for k, v in t.items()}, f)
        elif f.name == "cfg.json":
            cfg = json.loads(f.read_text())
            cfg["dtype"] = str(dtype).removeprefix("torch.")
            f.write_text(json.dumps(cfg))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["saelens", "dictionary_learning", "native"])
def test_half_precision_saes_load_canonically(tmp_path, layout, dtype):
    """Item 4: bf16/fp16 SAEs load (canonicalised in float64), atoms unit-norm, and the
    canonical reconstruction equals the stored half-precision decoder's exactly (in float64)."""
    from dictopt.io import export, load

    folder = export(trained_sae(), tmp_path / layout, layout)
    to_half(folder, dtype)
    D = load(folder)
    assert D.dtype == torch.float32
    assert torch.allclose(D.atoms.double().norm(dim=1), torch.ones(D.K, dtype=torch.float64),
                          atol=1e-6)
    from safetensors.torch import load_file

    if layout == "dictionary_learning":
        W = torch.load(folder / "ae.pt", weights_only=True)["decoder.weight"].T
    else:
        W = load_file(str(folder / "sae_weights.safetensors"))["W_dec"]
    assert W.dtype == dtype
    assert torch.allclose(D.decoder.double(), W.double(), rtol=1e-6, atol=0)
    x = torch.rand(20, 6)
    codes = D.encode(x)
    assert codes.dtype == torch.float32 and bool(torch.isfinite(codes).all())


def test_half_precision_sae_checks_from_the_command_line(tmp_path, capsys):
    """Item 4: ``dictopt check`` on a bf16 SAELens folder runs (exit 0)."""
    from dictopt.io import export

    folder = export(trained_sae(), tmp_path / "sae", "saelens")
    to_half(folder, torch.bfloat16)
    np.save(tmp_path / "x.npy", data(0, n=300))
    rc, err = run_cli(["check", folder, "--activations", tmp_path / "x.npy", "--no-hull",
                       "--certify", "0", "--quiet"], capsys)
    assert rc == 0, err


# --------------------------------------------------------------------------------------------
# 5. Every command that takes a dictionary reads every format.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, layout", [
    ("relu", "saelens"), ("topk", "saelens"), ("relu", "dictionary_learning"),
])
def test_repair_and_report_read_every_format(tmp_path, capsys, arch, layout):
    """Item 5: ``repair`` and ``report --dictionary`` accept SAELens (standard, topk) and
    dictionary_learning folders, as ``check`` does."""
    from dictopt.io import export

    folder = export(trained_sae(arch), tmp_path / "sae", layout)
    x = tmp_path / "x.npy"
    np.save(x, data(0, n=200))
    rc, err = run_cli(["repair", folder, "--activations", x, "--out", tmp_path / "rep",
                       "--lam", "0.1", "--max-rounds", "1"], capsys)
    assert rc == 0, err
    assert load_dictionary(tmp_path / "rep").lam == pytest.approx(0.1)
    rc, err = run_cli(["check", folder, "--activations", x, "--lam", "0.1", "--no-hull",
                       "--certify", "0", "--quiet", "--json", tmp_path / "c.json"], capsys)
    assert rc == 0, err
    rc, err = run_cli(["report", tmp_path / "c.json", "--dictionary", folder, "--activations",
                       x, "--out", tmp_path / "r.md", "--quiet"], capsys)
    assert rc == 0, err
    assert (tmp_path / "r.md").stat().st_size > 0


# --------------------------------------------------------------------------------------------
# 6. Output paths are validated before any work.
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def no_work(monkeypatch):
    """Make every solver and the checker fail loudly: a test using this proves that the
    command stopped before any work."""
    import dictopt.check as check_pkg
    from dictopt.solvers import registry

    def boom(*args, **kwargs):
        raise AssertionError("work started before the output path was validated")

    registry.load_providers()
    for name, spec in list(registry.SOLVERS.items()):
        monkeypatch.setitem(registry.SOLVERS, name, dataclasses.replace(spec, fit=boom))
    monkeypatch.setattr(check_pkg, "check", boom)


def test_bad_outputs_exit_2_before_any_work(tmp_path, capsys, no_work, monkeypatch):
    """Item 6: --out a file, --out the input .npy, --json a folder, a read-only location,
    repair/convert in place without --overwrite: exit 2 before the solver or checker runs."""

    x = tmp_path / "x.npy"
    np.save(x, data(0, n=100))
    (tmp_path / "file").write_text("x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    dict_dir = save_dictionary(tiny_dictionary(0.1, seed=0).to(torch.float32), tmp_path / "d")
    D6 = save_dictionary(Dictionary.from_decoder(torch.randn(5, 6), None, lam=0.1),
                         tmp_path / "d6")
    train = ["train", "--activations", x, "--solver", "classical", "--K", "3", "--lam", "0.1"]
    cases = [
        (train + ["--out", tmp_path / "file"], "is a file, not a folder"),
        (train + ["--out", x], "is a file, not a folder"),
        (["check", D6, "--activations", x, "--json", tmp_path], "is a folder; give a file"),
        (["check", D6, "--activations", x, "--json", x], "is also an input"),
        (["repair", dict_dir, "--activations", x, "--out", dict_dir], "is also the input"),
        (["convert", dict_dir, "--to", "native", "--out", dict_dir], "is also the input"),
        (["convert", dict_dir, "--to", "native", "--out", tmp_path / "other"],
         "holds files dictopt"),
        (["report", tmp_path / "c.json", "--out", tmp_path / "file" / "r.html"], "is a file"),
        (["wide", "--activations", x, "--K", "2,3", "--lam", "0.1", "--out", tmp_path / "file"],
         "is a file, not a folder"),
    ]
    for argv, message in cases:
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and message in err and err.count("\n") == 1, (argv, err)
    import dictopt.atomic

    monkeypatch.setattr(dictopt.atomic.os, "access", lambda *a, **k: False)  # read-only
    rc, err = run_cli(train + ["--out", tmp_path / "new"], capsys)
    assert rc == 2 and "is not writable" in err


def test_convert_in_place_with_overwrite(tmp_path, capsys):
    """Item 6: --overwrite replaces the input folder once it was read completely."""
    from dictopt.io import detect_format, export, load

    folder = export(trained_sae(), tmp_path / "sae", "saelens")
    rc, err = run_cli(["convert", folder, "--to", "native", "--out", folder, "--overwrite"],
                      capsys)
    assert rc == 0, err
    assert detect_format(folder) == "native" and load(folder).K == 10


# --------------------------------------------------------------------------------------------
# 7. .npz: only the keys used are read; declared shapes are bounded.
# --------------------------------------------------------------------------------------------


def test_npz_reads_only_the_keys_it_uses(tmp_path):
    """Item 7: an unused member is never read (here a pickled object array, which would fail
    to load; before the fix every member was read)."""
    from dictopt.io.arrays import load_npz

    atoms = np.random.default_rng(0).normal(size=(4, 3))
    np.savez(tmp_path / "d.npz", atoms=atoms, lam=0.5,
             unused=np.array([{"a": 1}], dtype=object))
    D = load_npz(tmp_path / "d.npz")
    assert D.K == 4 and D.lam == 0.5


def test_npz_declared_shape_is_bounded_before_allocation(tmp_path):
    """Item 7: a member whose header declares far more bytes than it stores is refused
    before numpy allocates them."""
    import zipfile

    from dictopt.io.arrays import load_npz

    header = {"descr": "<f8", "fortran_order": False, "shape": (200_000, 100_000)}
    import io as _io

    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(b"\0" * 64)
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("atoms.npy", buf.getvalue())
    with pytest.raises(DictoptInputError, match=r"'atoms' declares shape \(200000, 100000\)"):
        load_npz(tmp_path / "bomb.npz")


# --------------------------------------------------------------------------------------------
# 8. A native cfg.json without its architecture.
# --------------------------------------------------------------------------------------------


def test_native_config_without_architecture_is_an_error(tmp_path):
    """Item 8: dropping ``architecture`` no longer silently replaces the SAE's encoder by
    optimal codes."""

    folder = save_dictionary(trained_sae(), tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["architecture"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(DictoptInputError, match="has no 'architecture'"):
        load_dictionary(folder)


# --------------------------------------------------------------------------------------------
# 10. Finite data that overflows.
# --------------------------------------------------------------------------------------------


def test_overflowing_data_is_refused_naming_the_scale(tmp_path, capsys):
    """Item 10: values near 1e300 are finite but their squares are not: exit 2 naming the
    scale problem (before: exit 0, infinite loss, NaN certificates)."""
    D = save_dictionary(Dictionary.from_decoder(torch.randn(5, 6, dtype=torch.float64), None,
                                                lam=0.1), tmp_path / "d")
    x = data(0, n=100).astype(np.float64)
    x[42] *= 1e300
    np.save(tmp_path / "x.npy", x)
    rc, err = run_cli(["check", D, "--activations", tmp_path / "x.npy", "--quiet"], capsys)
    assert rc == 2 and "row 42" in err and "the data's scale is the problem" in err, err


# --------------------------------------------------------------------------------------------
# 11. Every documented bad input exits 2 with one line.
# --------------------------------------------------------------------------------------------


def test_documented_bad_inputs_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    """Item 11: non-UTF-8 cfg.json, --set unknown key / bad type for the classical solver,
    --workers without Dask, a diverging run, a full disk."""
    x = tmp_path / "x.npy"
    np.save(x, data(0, n=200))
    bad_cfg = save_dictionary(trained_sae(), tmp_path / "bad")
    (bad_cfg / "cfg.json").write_bytes(b'{"architecture": "\xff\xfe"}')
    good = save_dictionary(Dictionary.from_decoder(torch.randn(5, 6), None, lam=0.1),
                           tmp_path / "good")
    train = ["train", "--activations", x, "--K", "3", "--lam", "0.1", "--quiet"]
    cases = [
        (["check", bad_cfg, "--activations", x], "not valid JSON"),
        (train + ["--solver", "classical", "--set", "foo=1", "--out", tmp_path / "o"],
         "unknown option 'foo'"),
        (train + ["--solver", "classical", "--set", "max_iter=abc", "--out", tmp_path / "o"],
         "expected an integer"),
        (train + ["--solver", "sae-relu", "--set", "lr=1e6", "--set", "total_steps=30",
                  "--out", tmp_path / "o"], "training loss is"),
    ]
    for argv, message in cases:
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and message in err and err.count("\n") == 1, (argv, err)
    import importlib.util

    real = importlib.util.find_spec
    def no_dask(name, *args):
        return None if name in ("dask", "distributed") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_dask)
    rc, err = run_cli(["check", good, "--activations", x, "--workers", "2"], capsys)
    assert rc == 2 and "pip install 'dictopt[dask]'" in err, err
    monkeypatch.undo()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    import dictopt.io.native as native

    monkeypatch.setattr(native, "save_file", full_disk)
    rc, err = run_cli(train + ["--solver", "classical", "--out", tmp_path / "o2"], capsys)
    assert rc == 2 and "No space left on device" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o2").exists()


# --------------------------------------------------------------------------------------------
# 12. Messages.
# --------------------------------------------------------------------------------------------


def test_dask_partitions_number_nan_rows_globally(tmp_path):
    """Item 12: a NaN row in the third partition is named by its global index."""
    from dictopt.distributed.cluster import _run_partition
    from dictopt.distributed.sources import partition_source

    x = data(0, n=50).astype(np.float64)
    x[25, 1] = np.nan
    np.save(tmp_path / "x.npy", x)
    psrc = partition_source(tmp_path / "x.npy", rows=10)
    part = psrc.partitions[2]

    def consume(src, start):
        return [c.start for c in src.iter_chunks()]

    with pytest.raises(DictoptInputError, match=r"row 25 contains a non-finite"):
        _run_partition(consume, part, part.data, psrc.d, 4, None)
    with pytest.raises(DictoptInputError, match=r"row 25 contains a non-finite"):
        list(psrc.source(part, part.data, 4, None).iter_chunks())


class Evil:
    """A class a pickle would have to import: ``weights_only`` loading refuses it."""


def test_pickle_hints_are_replaced_by_dictopts_own(tmp_path):
    """Item 12: no message suggests ``allow_pickle`` or ``weights_only=False``."""
    from dictopt.io import load

    torch.save({"W_dec": Evil()}, tmp_path / "ae.pt")
    with pytest.raises(DictoptInputError) as err:
        load(tmp_path / "ae.pt")
    assert "weights_only" not in str(err.value) and "never loads" in str(err.value)
    np.savez(tmp_path / "d.npz", atoms=np.array([[{"a": 1}]], dtype=object))
    with pytest.raises(DictoptInputError) as err:
        load(tmp_path / "d.npz")
    assert "allow_pickle" not in str(err.value) and "never loads" in str(err.value)


def test_transposed_activations_get_the_hint(tmp_path, capsys):
    """Item 12: a width mismatch asks whether the data is transposed."""
    D = save_dictionary(Dictionary.from_decoder(torch.randn(5, 6), None, lam=0.1),
                        tmp_path / "d")
    np.save(tmp_path / "xt.npy", data(0, n=300).T.copy())
    rc, err = run_cli(["check", D, "--activations", tmp_path / "xt.npy", "--quiet"], capsys)
    assert rc == 2 and "is it transposed?" in err, err


@pytest.mark.parametrize("argv, message", [
    (["check", "D", "--activations", "x", "--top", "-1"], "--top: must be ≥ 0"),
    (["check", "D", "--activations", "x", "--certify", "-5"], "--certify: must be ≥ 0"),
    (["wide", "--world", "rays", "--K", "2", "--lam", "0.1", "--out", "o", "--ray-cos", "2"],
     "--ray-cos: must be in (0, 1]"),
])
def test_out_of_range_arguments_are_refused(argv, message, capsys):
    """Item 12: --top -1, --certify -5, --ray-cos 2 exit 2 (argparse) instead of running."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_more_atoms_than_rows_warns(tmp_path, caplog):
    """Item 12: K > N trains with a warning."""
    np.save(tmp_path / "x.npy", data(0, n=20))
    with caplog.at_level("WARNING"):
        rc = main(["train", "--activations", str(tmp_path / "x.npy"), "--solver", "classical",
                   "--K", "30", "--lam", "0.1", "--out", str(tmp_path / "o"), "--quiet",
                   "--set", "max_iter=2"])
    assert rc == 0 and "--K 30 exceeds the 20 data rows" in caplog.text
