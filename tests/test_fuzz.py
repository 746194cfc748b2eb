"""Property-based fuzzing (issue 18) of ``cfg.json``, ``manifest.json``, safetensors headers,
``.npy``/``.npz`` headers and command-line arguments.

The only allowed outcomes are success or a :class:`DictoptInputError` (exit 2 with one line
from the command line): never another exception (a traceback), never a hang (each example runs
under a 20 s alarm), never a read outside the folder given (an audit hook records every file
opened; a sentinel folder next to the input, ``/etc`` and ``/dev`` must never be opened).
The default run tries a few examples per target; the ``slow`` run many more.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dictopt.cli import main
from dictopt.data.sources import NpySource, as_source
from dictopt.io import load
from dictopt.io.native import save_dictionary
from dictopt.problem import Dictionary
from dictopt.validation import DictoptInputError

FEW = settings(max_examples=15, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
MANY = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# ---- the guard: timeout and reads outside the folder -----------------------------------------

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], str | bytes):
        _OPENED.append(args[0].decode() if isinstance(args[0], bytes) else args[0])


sys.addaudithook(_audit)

ROOT = Path(tempfile.mkdtemp(prefix="dictopt-fuzz-"))
OUTSIDE = ROOT / "outside"  # a valid shard that no input may reach
OUTSIDE.mkdir(exist_ok=True)
np.save(OUTSIDE / "outside.npy", np.ones((3, 4), dtype=np.float32))
(OUTSIDE / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")  # stands for /etc/passwd
FORBIDDEN = (str(OUTSIDE), "/etc/", "/dev/zero", "/dev/random")


@contextlib.contextmanager
def guarded(seconds: int = 20, named: frozenset[str] = frozenset()) -> Iterator[None]:
    """Fail on a hang or on opening anything under :data:`FORBIDDEN` that the caller did not
    name itself (``named``: paths given explicitly on a command line may be opened)."""
    global _OPENED

    def hang(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    _OPENED = []
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        opened, _OPENED = _OPENED, None
        bad = [p for p in opened if any(str(Path(p)).startswith(f) for f in FORBIDDEN)
               and str(Path(p)) not in named]
        assert not bad, f"opened outside the folder: {bad}"


def outcome(fn, *args, **kwargs) -> str:
    """``"ok"`` or ``"refused"`` (DictoptInputError); anything else propagates (a bug)."""
    with guarded():
        try:
            fn(*args, **kwargs)
        except DictoptInputError:
            return "refused"
    return "ok"


def fresh(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT))


# ---- cfg.json ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=6,
)
CFG_KEYS = ["architecture", "d_in", "d_sae", "lam", "has_bias", "encoder", "dtype", "meta",
            "dictopt_format_version", "k", "apply_b_dec_to_input", "normalize_activations"]
ARCHS = st.sampled_from(["lasso", "relu", "topk", "jumprelu", "standard", "gated", "nope", ""])
cfg_objects = st.fixed_dictionaries(
    {}, optional={k: (ARCHS if k == "architecture" else json_values) for k in CFG_KEYS})
cfg_payloads = st.one_of(cfg_objects.map(lambda c: json.dumps(c).encode()),
                         st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode()))


def _saved_folder() -> Path:
    folder = fresh("cfg-")
    W = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    return save_dictionary(Dictionary.from_decoder(W, None, lam=0.1), folder / "d")


def _fuzz_cfg(payload: bytes, keep_version: bool) -> None:
    folder = _saved_folder()
    if keep_version and payload[:1] == b"{":
        try:
            cfg = json.loads(payload)
            cfg["dictopt_format_version"] = 1
            payload = json.dumps(cfg).encode()
        except (ValueError, TypeError):
            pass
    (folder / "cfg.json").write_bytes(payload)
    outcome(load, folder)


@FEW
@given(payload=cfg_payloads, keep_version=st.booleans())
def test_fuzz_cfg_json(payload, keep_version):
    _fuzz_cfg(payload, keep_version)


@pytest.mark.slow
@MANY
@given(payload=cfg_payloads, keep_version=st.booleans())
def test_fuzz_cfg_json_many(payload, keep_version):
    _fuzz_cfg(payload, keep_version)


# ---- manifest.json ----------------------------------------------------------------------------

ENTRIES = st.sampled_from([
    "a.npy", "b.npy", "./a.npy", "../outside/outside.npy", str(OUTSIDE / "outside.npy"),
    "/etc/passwd", "/dev/zero", "", "missing.npy", "sub", "sub/../a.npy", "link.npy",
    "pipe.npy", "a.npy/..", "\x00", "..", ".",
]) | st.text(max_size=10)
manifests = st.one_of(
    st.lists(ENTRIES, max_size=5).map(lambda s: json.dumps({"shards": s}).encode()),
    json_values.map(lambda v: json.dumps({"shards": v}).encode()),
    st.binary(max_size=40),
)


def _shard_folder() -> Path:
    import os

    folder = fresh("acts-")
    np.save(folder / "a.npy", np.ones((4, 4), dtype=np.float32))
    np.save(folder / "b.npy", np.zeros((2, 4), dtype=np.float32))
    (folder / "sub").mkdir()
    (folder / "link.npy").symlink_to(OUTSIDE / "outside.npy")
    os.mkfifo(folder / "pipe.npy")
    return folder


def _fuzz_manifest(payload: bytes) -> None:
    folder = _shard_folder()
    (folder / "manifest.json").write_bytes(payload)
    outcome(lambda: as_source(folder).to_tensor())
    from dictopt.distributed.sources import partition_source

    outcome(partition_source, folder)


@FEW
@given(payload=manifests)
def test_fuzz_manifest_json(payload):
    _fuzz_manifest(payload)


@pytest.mark.slow
@MANY
@given(payload=manifests)
def test_fuzz_manifest_json_many(payload):
    _fuzz_manifest(payload)


# ---- safetensors headers ----------------------------------------------------------------------

DTYPES = st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "XX", ""])
SHAPES = st.lists(st.integers(-2, 12), max_size=3) | json_values
tensor_entries = st.fixed_dictionaries({"dtype": DTYPES | json_values, "shape": SHAPES,
                                        "data_offsets": st.lists(st.integers(-4, 400),
                                                                 max_size=3) | json_values})
headers = st.dictionaries(st.sampled_from(["W_dec", "b_dec", "W_enc", "b_enc", "__metadata__",
                                           "threshold", "x"]), tensor_entries, max_size=4)


def _fuzz_safetensors(header: dict, payload: bytes, raw: bytes | None) -> None:
    folder = _saved_folder()
    if raw is None:
        text = json.dumps(header).encode()
        blob = struct.pack("<Q", len(text)) + text + payload
    else:
        blob = raw
    (folder / "sae_weights.safetensors").write_bytes(blob)
    outcome(load, folder)


@FEW
@given(header=headers, payload=st.binary(max_size=200), raw=st.none() | st.binary(max_size=40))
def test_fuzz_safetensors_header(header, payload, raw):
    _fuzz_safetensors(header, payload, raw)


@pytest.mark.slow
@MANY
@given(header=headers, payload=st.binary(max_size=200), raw=st.none() | st.binary(max_size=40))
def test_fuzz_safetensors_header_many(header, payload, raw):
    _fuzz_safetensors(header, payload, raw)


# ---- .npy / .npz headers ----------------------------------------------------------------------

DESCRS = st.sampled_from(["<f4", ">f8", "<f2", "<i2", "|u1", "|b1", "<c8", "|O", "<U3", "V8",
                          "<f16", "zz"]) | json_values
npy_headers = st.fixed_dictionaries({
    "descr": DESCRS,
    "fortran_order": st.booleans() | json_values,
    "shape": st.lists(st.integers(-3, 2**40), max_size=3).map(tuple) | json_values,
})


def _npy_bytes(header: dict, payload: bytes) -> bytes:
    text = repr(header).encode("latin1", "replace")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + payload


def _fuzz_npy(header: dict, payload: bytes, as_npz: bool) -> None:
    folder = fresh("npy-")
    blob = _npy_bytes(header, payload)
    if as_npz:
        path = folder / "d.npz"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("atoms.npy", blob)
            z.writestr("unused.npy", _npy_bytes({"descr": "|O", "fortran_order": False,
                                                 "shape": (2,)}, b"\x80\x04junk"))
        outcome(load, path)
    else:
        path = folder / "x.npy"
        path.write_bytes(blob)
        outcome(lambda: NpySource(path, chunk_size=3).to_tensor())


@FEW
@given(header=npy_headers, payload=st.binary(max_size=96), as_npz=st.booleans())
def test_fuzz_npy_and_npz_headers(header, payload, as_npz):
    _fuzz_npy(header, payload, as_npz)


@pytest.mark.slow
@MANY
@given(header=npy_headers, payload=st.binary(max_size=96), as_npz=st.booleans())
def test_fuzz_npy_and_npz_headers_many(header, payload, as_npz):
    _fuzz_npy(header, payload, as_npz)


# ---- command-line arguments -------------------------------------------------------------------

_CLI_DATA: dict[str, Path] = {}


def _cli_inputs() -> dict[str, Path]:
    if not _CLI_DATA:
        folder = fresh("cli-")
        x = np.abs(np.random.default_rng(0).normal(size=(60, 4))).astype(np.float32)
        np.save(folder / "x.npy", x)
        W = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
        save_dictionary(Dictionary.from_decoder(W, None, lam=0.1), folder / "d")
        _CLI_DATA.update(folder=folder, x=folder / "x.npy", d=folder / "d")
    return _CLI_DATA


VALUES = st.sampled_from(["-1", "0", "1", "2", "1e309", "nan", "-inf", "abc", "", "implied",
                          "own", "optimal", "0.5", "x.npy", "d", "out", "saelens", "native",
                          "../outside", "/etc/passwd", "r.json"])
FLAGS = st.sampled_from(["--top", "--certify", "--lam", "--codes", "--json", "--no-hull",
                         "--quiet", "--to", "--out", "--format", "--activations",
                         "--partition-rows", "--overwrite"])
argvs = st.tuples(st.sampled_from(["check", "convert"]),
                  st.lists(st.tuples(FLAGS, VALUES), max_size=4))


def _fuzz_cli(command: str, pairs: list[tuple[str, str]]) -> None:
    paths = _cli_inputs()
    out = fresh("out-")

    def resolve(v: str) -> str:
        # "/etc/passwd" stands for a file outside every folder the command was given: a copy
        # in the sentinel folder, so a fuzzed --json or --out can never replace a system file
        return {"x.npy": str(paths["x"]), "d": str(paths["d"]), "out": str(out / "o"),
                "r.json": str(out / "r.json"), "/etc/passwd": str(OUTSIDE / "passwd")}.get(v, v)

    argv = [command, str(paths["d"])]
    if command == "check":
        argv += ["--activations", str(paths["x"]), "--no-hull", "--quiet"]
    for flag, value in pairs:
        argv += [flag] if flag in ("--no-hull", "--quiet", "--overwrite") else [flag,
                                                                              resolve(value)]
    stderr = io.StringIO()
    # a path named on the command line is the user's own choice: opening it is no escape
    named = frozenset(str(Path(a)) for a in argv[1:] if a.startswith("/"))
    # relative paths such as "-1" or "nan" land in the example's own folder
    with guarded(named=named), contextlib.chdir(out), contextlib.redirect_stderr(stderr), \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: a usage error
            rc = exc.code
    assert rc in (0, 2), (argv, rc, stderr.getvalue())
    if rc == 2:
        assert "Traceback" not in stderr.getvalue()


@FEW
@given(spec=argvs)
def test_fuzz_cli_arguments(spec):
    _fuzz_cli(*spec)


@pytest.mark.slow
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=argvs)
def test_fuzz_cli_arguments_many(spec):
    _fuzz_cli(*spec)


def test_the_guard_catches_a_read_outside_and_a_hang():
    """The fuzz guard itself: opening the sentinel fails the example, and so does a hang."""
    with pytest.raises(AssertionError, match="opened outside the folder"):
        with guarded():
            (OUTSIDE / "outside.npy").read_bytes()
    with pytest.raises(TimeoutError):
        with guarded(seconds=1):
            signal.pause()
