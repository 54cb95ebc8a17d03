"""Giving freed heap memory back to the kernel.

glibc keeps the pages it frees inside its heap: at 100k mobile nodes a bulk edit (parsed, validated,
copied) leaves ~300 MB of them resident, a get-config of everything ~80 MB, although nothing holds
them.  ``malloc_trim(0)`` returns them: ~4 ms after such a burst, microseconds when nothing was freed,
so the daemon calls it every few seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

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
