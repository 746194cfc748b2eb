"""Run ``dictopt ARGS`` with a fault injected at the N-th write event (used by
``tests/test_fault_injection.py``; not a test module itself).

    python tests/fault_runner.py MODE N COUNT_FILE -- dictopt-args...

A *write event* is every call that puts bytes on disk or moves them into place: writing a file
(``Path.write_text``/``write_bytes``, ``torch.save``, safetensors' ``save_file``), flushing one
(``os.fsync``), and renaming (``os.replace``, ``os.rename``, the atomic folder swap). MODE:

- ``count``: inject nothing; write the number of events to COUNT_FILE at exit.
- ``kill``: the process SIGKILLs itself just before event N (as a power cut or ``kill -9``).
- ``enospc``: event N raises ``OSError(ENOSPC)`` (a full disk) instead of running.
"""

from __future__ import annotations

import errno
import functools
import os
import pathlib
import signal
import sys


def main() -> int:
    mode, nth, count_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    args = sys.argv[sys.argv.index("--") + 1:]
    state = {"n": 0}

    def event(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            state["n"] += 1
            if state["n"] == nth:
                if mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if mode == "enospc":
                    raise OSError(errno.ENOSPC, "No space left on device")
            return fn(*a, **k)
        return wrapper

    import safetensors.torch
    import torch

    import dictopt.atomic
    import dictopt.io.native

    for owner, name in [(os, "fsync"), (os, "replace"), (os, "rename"),
                        (pathlib.Path, "write_text"), (pathlib.Path, "write_bytes"),
                        (torch, "save"), (safetensors.torch, "save_file"),
                        (dictopt.io.native, "save_file"), (dictopt.atomic, "_exchange")]:
        setattr(owner, name, event(getattr(owner, name)))
    from dictopt.cli import main as cli

    try:
        rc = cli(args)
    finally:
        if mode == "count":
            pathlib.Path(count_file).write_text(str(state["n"]))
    return rc


if __name__ == "__main__":
    sys.exit(main())
