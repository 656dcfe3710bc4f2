"""Keep freed memory in the process while Outpost runs (glibc only; elsewhere a no-op).

Outpost makes many short-lived arrays of millions of rows. glibc serves each of them with a fresh ``mmap``
and unmaps it on free, so every temporary is zero-filled by the kernel page by page again: on a 5M-event
trace that costs about a quarter of the work after parsing. Inside ``reuse_freed_memory`` large blocks
come from the heap and freed ones are reused; afterwards glibc's defaults are restored and the spare
memory is handed back. Results do not depend on where memory comes from."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_depth = 0  # open reuse_freed_memory blocks in this process: only the outermost sets and restores glibc's


@contextmanager
def reuse_freed_memory() -> Iterator[None]:
    global _depth
    libc = _libc() if _depth == 0 else None
    if libc is not None:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # the largest int: the free top of the heap is kept
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if libc is not None:
            libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)
