"""Giving freed heap memory back to the kernel.

glibc keeps the pages it frees inside its heap: at 100k mobile nodes a bulk edit (parsed, validated,
copied) leaves ~300 MB of them resident, a get-config of everything ~80 MB, although nothing holds
them.  ``malloc_trim(0)`` returns them: ~4 ms after such a burst, microseconds when nothing was freed,
so the daemon calls it every few seconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator

#: Seconds between two trims.
TRIM_EVERY = 2.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> None:
    """``malloc_trim(0)`` where the C library has it (glibc); nothing elsewhere."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off while a whole configuration is built: 100k mobile nodes are ~1M new
    tracked objects, which set off full collections (~0.2 s at the first load) that find no garbage
    (the objects are acyclic and long-lived; the glue freezes them afterwards)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
