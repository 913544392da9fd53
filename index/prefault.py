"""Pre-faulting a loaded version's memory-mapped files: their pages mapped into this process at load.

A loaded version's arrays and FAISS index are memory-mapped files; each page enters the process
at the first request that reads it (a page fault, and a disk read when it is not in the page
cache). Under uniform traffic that goes on for minutes: the first requests after a (re)load are
slower than later ones, and the resident size keeps growing long after the load. Pre-faulting
maps them at load, in the loader's thread, up to a byte budget, files most needed first.

It works on this process's mappings of the files (/proc/self/maps), so it reaches what FAISS
mapped itself as well as numpy's arrays. The pages are the files' page-cache pages, shared by every
worker that maps them: they add to each worker's RSS (`RssFile`), not to its private memory (USS),
nor to the machine's memory once a second worker maps the same files. Linux only (elsewhere: a no-op).
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

PAGE = mmap.PAGESIZE
MADV_POPULATE_READ = 22  # Linux >= 5.14: fault the pages in, readable, in one call
MAPS = Path("/proc/self/maps")
_LINUX = sys.platform.startswith("linux")

if _LINUX:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.madvise.restype = ctypes.c_int
    _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def mapped_ranges() -> dict[str, list[tuple[int, int]]]:
    """(start, end) addresses of this process's mappings, by the path of the file mapped."""
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    with open(MAPS, encoding="utf-8", errors="surrogateescape") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges[fields[5].rstrip("\n")].append((start, end))
    return ranges


def _populate(start: int, length: int) -> None:
    """madvise(MADV_POPULATE_READ); where refused (EINVAL before Linux 5.14), read one byte per page.

    ctypes releases the GIL for the call, so requests go on being answered meanwhile."""
    if _libc.madvise(start, length, MADV_POPULATE_READ) != 0:
        pages = np.ctypeslib.as_array((ctypes.c_uint8 * length).from_address(start))
        int(pages[::PAGE].sum(dtype=np.uint64))


def prefault(paths: Iterable[Path], budget: int) -> int:
    """Map the pages of this process's mappings of `paths`, in order, until `budget` bytes; the bytes covered."""
    if not _LINUX or budget <= 0 or not MAPS.exists():
        return 0
    ranges = mapped_ranges()
    done = 0
    for path in paths:
        for start, end in ranges.get(os.path.realpath(path), []):
            length = min(end - start, (budget - done) // PAGE * PAGE)
            if length <= 0:
                return done
            _populate(start, length)
            done += length
    return done
