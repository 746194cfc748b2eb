"""Atomic outputs: a file or a folder is either the old one, or the complete new one.

Every writer of dictopt goes through this module:

- :func:`atomic_file` / :func:`write_text` / :func:`write_bytes` write a single file to a hidden
  temporary sibling, flush it to disk and ``os.replace`` it over the target. A kill or a full
  disk at any moment leaves the previous file untouched (and no temporary behind, except after
  a kill: a hidden ``.NAME.dictopt-tmp-*`` sibling that no loader reads).
- :func:`atomic_folder` builds a whole output folder (``cfg.json`` + weights, ...) in a hidden
  temporary sibling and swaps it into place in one step (``renameat2(RENAME_EXCHANGE)`` on
  Linux; elsewhere two renames, the old folder kept under a hidden name until the new one is in
  place). Weights and config are therefore never from two different runs.
- :func:`check_output_file` / :func:`check_output_folder` validate an output path *before* any
  work starts (a file where a folder is wanted, a read-only location, an output that is one of
  the inputs, a folder holding files the writer does not own).

Symbolic links are never followed on write: a link at the target is replaced by the new file or
folder, and what it pointed to is left alone. Failures raise :class:`DictoptOutputError` (a
:class:`~dictopt.validation.DictoptInputError`, so the command line exits with status 2) naming
the path and saying that the previous output is unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import uuid
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from dictopt.validation import DictoptInputError

TMP_TAG = ".dictopt-tmp-"
OLD_TAG = ".dictopt-old-"


class DictoptOutputError(DictoptInputError):
    """An output could not be written (full disk, read-only, not a folder, ...)."""


def _tmp_sibling(path: Path, tag: str = TMP_TAG) -> Path:
    return path.parent / f".{path.name}{tag}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems do not open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a file, link or folder (never following a link); ignore what is already gone."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except FileNotFoundError:
        pass


#: How writers that are not Python's own report an I/O failure (safetensors, torch.save).
_IO_FAILURE_TEXT = ("os error", "i/o error", "file write failed", "no space left")


def _is_io_failure(err: BaseException) -> bool:
    """An ``OSError``, or a library's own exception for a failed write (a full disk makes
    safetensors raise ``SafetensorError`` and ``torch.save`` a ``RuntimeError``)."""
    if isinstance(err, OSError):
        return True
    text = str(err).lower()
    return isinstance(err, Exception) and any(t in text for t in _IO_FAILURE_TEXT)


def _fail(path: Path, err: BaseException) -> DictoptOutputError:
    if isinstance(err, OSError):
        reason = err.strerror or str(err)
    else:
        reason = " ".join(str(err).split())[:200]
    return DictoptOutputError(
        f"{path}: cannot write ({reason}); the previous output, if any, is unchanged"
    )


def _require_parent(path: Path, *, create: bool) -> None:
    parent = path.parent
    if parent.is_dir():
        return
    if parent.exists() or parent.is_symlink():
        raise DictoptOutputError(f"{path}: {parent} is not a folder")
    if not create:
        raise DictoptOutputError(f"{path}: the folder {parent} does not exist; create it first")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(path, err) from err


@contextlib.contextmanager
def atomic_file(path: str | Path, *, create_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one step.

    Parameters
    ----------
    path:
        The file to (re)write. An existing folder there is an error; an existing link is
        replaced, not followed.
    create_parents:
        Create missing parent folders (else a missing parent is an error).

    Yields
    ------
    Path
        A hidden sibling of ``path``. Write it completely; it is flushed to disk, renamed over
        ``path`` when the block ends, and removed if the block raises.
    """
    target = Path(path)
    if target.is_dir() and not target.is_symlink():
        raise DictoptOutputError(f"{target}: is a folder; give a file name")
    _require_parent(target, create=create_parents)
    tmp = _tmp_sibling(target)
    try:
        yield tmp
        if not tmp.is_file():
            raise DictoptOutputError(f"{target}: the writer produced no file")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as err:
        _remove(tmp)
        if _is_io_failure(err) and not isinstance(err, DictoptInputError):
            raise _fail(target, err) from err
        raise


def write_bytes(path: str | Path, data: bytes, *, create_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); returns ``path``."""
    target = Path(path)
    with atomic_file(target, create_parents=create_parents) as tmp, open(tmp, "xb") as fh:
        fh.write(data)
    return target


def write_text(path: str | Path, text: str, *, create_parents: bool = True) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"), create_parents=create_parents)


# --------------------------------------------------------------------------------------------
# Folders.
# --------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); ``False`` where unsupported."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _foreign_entries(folder: Path, owned: Collection[str] | None) -> list[str]:
    if owned is None or folder.is_symlink() or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in owned)


def check_output_folder(
    path: str | Path,
    *,
    owned: Collection[str] | None = None,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> Path:
    """Validate an output folder before any work starts; returns it as a :class:`Path`.

    Parameters
    ----------
    path:
        The folder the command will write (replaced as a whole).
    owned:
        Names the writer may replace in an existing folder; anything else there is an error
        (the folder is replaced as a whole, so those files would be lost). ``None``: no limit.
    inputs:
        Paths the command reads. The output may not be one of them, contain one, or lie inside
        one, unless ``overwrite`` (then only equality is allowed: the input is read completely
        before the swap).
    overwrite:
        Allow the output to be the input folder (``repair``/``convert`` in place).

    Raises
    ------
    DictoptOutputError
        Naming the path and the fix.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DictoptOutputError(f"{out}: is a file, not a folder; give a folder for --out")
    resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        src = Path(item).resolve()
        if src == resolved:
            if not overwrite:
                raise DictoptOutputError(
                    f"{out}: is also the input; write to another folder, or pass --overwrite "
                    "to replace the input (it is read completely first)"
                )
        elif resolved in src.parents:
            raise DictoptOutputError(
                f"{out}: contains the input {item}; it would be replaced. Write elsewhere"
            )
        elif src in resolved.parents and src.is_file():
            raise DictoptOutputError(f"{out}: lies inside the input file {item}")
    foreign = _foreign_entries(out, owned)
    if foreign:
        raise DictoptOutputError(
            f"{out}: holds files dictopt did not write ({', '.join(foreign[:5])}); the folder "
            "is replaced as a whole, so choose a new or empty folder"
        )
    _check_writable(out)
    return out


def check_output_file(
    path: str | Path, *, inputs: Iterable[str | Path | None] = (), create_parents: bool = True
) -> Path:
    """Validate an output file before any work starts (not a folder, writable, not an input)."""
    out = Path(path)
    if out.is_dir() and not out.is_symlink():
        raise DictoptOutputError(f"{out}: is a folder; give a file name")
    resolved = out.resolve()
    for item in inputs:
        if item is not None and Path(item).resolve() == resolved:
            raise DictoptOutputError(f"{out}: is also an input; write to another file")
    if not create_parents and not out.parent.is_dir():
        raise DictoptOutputError(f"{out}: the folder {out.parent} does not exist; create it first")
    _check_writable(out)
    return out


def _check_writable(out: Path) -> None:
    """The first existing ancestor of ``out``'s parent must be a writable folder."""
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DictoptOutputError(f"{out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DictoptOutputError(f"{out}: {probe} is not writable (read-only or no permission)")


@contextlib.contextmanager
def atomic_folder(path: str | Path, *, owned: Collection[str] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``path`` as a whole.

    Parameters
    ----------
    path:
        The output folder. An existing one is replaced in one step (the old one is removed
        afterwards); an existing link is replaced, not followed.
    owned:
        As in :func:`check_output_folder`: an existing folder holding other names is an error.

    Yields
    ------
    Path
        A hidden sibling folder to fill; removed if the block raises.
    """
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise DictoptOutputError(f"{target}: is a file, not a folder")
    foreign = _foreign_entries(target, owned)
    if foreign:
        raise DictoptOutputError(
            f"{target}: holds files dictopt did not write ({', '.join(foreign[:5])}); the "
            "folder is replaced as a whole, so choose a new or empty folder"
        )
    _require_parent(target, create=True)
    tmp = _tmp_sibling(target)
    try:
        tmp.mkdir()
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb+") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _swap_in(tmp, target)
    except BaseException as err:
        _remove(tmp)
        if _is_io_failure(err) and not isinstance(err, DictoptInputError):
            raise _fail(target, err) from err
        raise


def _swap_in(tmp: Path, target: Path) -> None:
    """Put folder ``tmp`` at ``target``; the old ``target`` (if any) ends up removed."""
    if not (target.exists() or target.is_symlink()):
        os.rename(tmp, target)
    elif _exchange(tmp, target):
        _remove(tmp)  # now the old folder (or link)
    else:
        old = _tmp_sibling(target, OLD_TAG)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        _remove(old)
    _fsync_dir(target.parent)
