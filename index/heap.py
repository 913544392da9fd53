"""Handing freed heap back to the system (glibc's malloc_trim; a no-op elsewhere).

glibc keeps the memory of freed small and mid-sized objects in its arenas for reuse, one arena
per thread that allocated: a build stage that freed gigabytes, or a serving worker that ran an
update in a thread and dropped an old version, would otherwise keep that memory as its own
(private, counted in its USS) for as long as it lives.
"""
from __future__ import annotations

import ctypes
import os

# The running process's own symbols (as index/prefault.py reaches madvise): glibc's malloc_trim where
# there is one. Not ctypes.util.find_library, which runs ldconfig (15 ms on every import).
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None) if os.name == "posix" else None


def release_freed_heap() -> None:
    """Return the free pages of every arena to the system (malloc_trim(0) walks them all)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
