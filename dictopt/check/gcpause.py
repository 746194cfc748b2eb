"""The cyclic garbage collector paused while a report's records are built.

A large check builds hundreds of thousands of small acyclic objects (a violation, its move and
its detail per entry; a row per atom; their JSON dicts). Each allocation burst triggers the
collector, which then walks every tracked object again: at K = 32,768 that was about a
second of the check. The records hold no reference cycles, so nothing is left for the
collector to find; it runs again as soon as the block ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Disable the cyclic collector within the block (re-enabled after it, if it was on).

    Yields
    ------
    None
    """
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
