"""Per-row artifacts stored as segments: the rows of the last full build plus the rows updates appended.

An incremental update adds rows; it never changes a row already written. So instead of
rewriting hundreds of megabytes per update, a version lists each per-row artifact as parts
(manifest `segments`): the build's file, hard-linked unchanged from version to version, then
one small part per update. The artifact is the concatenation of its parts along the first
axis (CSR `indptr` and string-offset parts after the first hold global offsets, so they
concatenate too).

Concatenating without copying: the parts' data are mapped at consecutive addresses of one
reserved region, so the artifact is one contiguous read-only array whose pages are the files'
page-cache pages, shared by every process that maps them (N API workers hold one copy, and
loading an update's version maps its new part instead of copying the build's rows). A file
can only be mapped page by page, so each appended part is written with its .npy header padded
to end at the offset within a page where the parts before it end (`save`, `append_offset`);
only the page on each boundary, which holds the end of one part and the start of the next,
is copied. A part written without that padding is copied whole: slower, same result.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path
from typing import IO

import numpy as np

from index.errors import CorruptArtifactError

PAGE = mmap.PAGESIZE
_POPULATE_BYTES = 1 << 20
_LINUX = sys.platform.startswith("linux")
_MAP_FIXED = 0x10  # Linux; the mmap module does not export it
_MAP_NORESERVE = 0x4000  # Linux: reserving the address range commits no memory
_MAP_FAILED = ctypes.c_void_p(-1).value

if _LINUX:
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)


def allocate(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array whose pages are mapped in one call (MAP_POPULATE), not one fault
    per 4 KiB page on first write: copying hundreds of megabytes into fresh memory is several
    times faster so (measured: 100 MB in 65 ms instead of 250 ms on the 2-core VM)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < _POPULATE_BYTES or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(shape, dtype)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)  # the array keeps the mapping alive


def header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of a .npy file (C order only: that is what np.save writes)."""
    with open(path, "rb") as fh:
        major, _ = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh, max_header_size=2 * PAGE)
        if fortran or dtype.hasobject:
            raise CorruptArtifactError(f"segment {path} is not a plain C-order array")
        return shape, dtype, fh.tell()


def part_lengths(paths: list[Path]) -> list[int]:
    """Rows of each part."""
    return [header(p)[0][0] for p in paths]


def append_offset(paths: list[Path]) -> int:
    """Where in a page the data of a part appended after `paths` starts once they are mapped (for `save`)."""
    headers = [header(p) for p in paths]
    data = sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize for shape, dtype, _ in headers)
    return (headers[0][2] + data) % PAGE


def save(fh: IO[bytes], array: np.ndarray, page_offset: int | None = None) -> None:
    """np.save without pickle; with `page_offset`, the header is padded so that the data starts at
    that offset within a page (an appended part whose pages can be mapped in place)."""
    array = np.asarray(array)
    if page_offset is None or array.dtype.hasobject:
        np.save(fh, array, allow_pickle=False)  # refuses object arrays
        return
    array = np.ascontiguousarray(array)
    fields = np.lib.format.header_data_from_array_1_0(array)
    text = "{" + "".join(f"'{key}': {value!r}, " for key, value in sorted(fields.items())) + "}"
    shortest = len(np.lib.format.MAGIC_PREFIX) + 4 + len(text) + 1  # magic, version, length, text, newline
    padding = (page_offset - shortest) % PAGE
    body = (text + " " * padding + "\n").encode("latin1")
    fh.write(np.lib.format.MAGIC_PREFIX + bytes([1, 0]) + len(body).to_bytes(2, "little") + body)
    fh.write(memoryview(array.reshape(-1).view(np.uint8)))


def _read_into(path: Path, offset: int, out: memoryview) -> None:
    """Read bytes of a part from `offset` into `out`: one copy from the page cache."""
    with open(path, "rb", buffering=0) as fh:
        fh.seek(offset)
        done = 0
        while done < len(out):
            count = fh.readinto(out[done:])
            if not count:
                raise CorruptArtifactError(f"segment {path} is shorter than its header says")
            done += count


def _map_fixed(address: int, length: int, path: Path, offset: int) -> bool:
    """Map `length` bytes of a file from `offset` at `address`, over the reserved region; False if refused."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mapped = _libc.mmap(address, length, mmap.PROT_READ, mmap.MAP_PRIVATE | _MAP_FIXED, fd, offset)
    finally:
        os.close(fd)  # the mapping keeps the file
    return mapped not in (None, _MAP_FAILED)


def concatenate(paths: list[Path]) -> np.ndarray:
    """Rows of all `paths` (.npy) in order as one read-only array; one part is returned memory-mapped as is."""
    if len(paths) == 1:
        return np.load(paths[0], mmap_mode="r", allow_pickle=False)
    headers = [header(p) for p in paths]
    shape, dtype, first_offset = headers[0]
    for (part_shape, part_dtype, _), path in zip(headers, paths):
        if part_dtype != dtype or part_shape[1:] != shape[1:]:
            raise CorruptArtifactError(
                f"segment {path} has dtype {part_dtype} and row shape {part_shape[1:]}, "
                f"the first part {dtype} and {shape[1:]}"
            )
    sizes = [int(np.prod(h[0], dtype=np.int64)) * dtype.itemsize for h in headers]
    start = first_offset % PAGE  # where the first part's data lies in its first page
    region = mmap.mmap(-1, max(1, start + sum(sizes)), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                       | (_MAP_NORESERVE if _LINUX else 0))
    view = memoryview(region)
    pointer = ctypes.c_char.from_buffer(region)
    address = ctypes.addressof(pointer)
    del pointer  # an export would keep the region from being unmapped with the array
    position = start
    for path, size, (_, _, offset) in zip(paths, sizes, headers):
        end = position + size
        first, last = -(-position // PAGE) * PAGE, end // PAGE * PAGE  # whole pages inside the part
        if _LINUX and (position - offset) % PAGE == 0 and last > first and _map_fixed(
            address + first, last - first, path, offset + first - position
        ):
            _read_into(path, offset, view[position:first])
            _read_into(path, offset + last - position, view[last:end])
        else:
            _read_into(path, offset, view[position:end])
        position = end
    view.release()
    rows = sum(h[0][0] for h in headers)
    array = np.frombuffer(region, dtype=dtype, count=rows * int(np.prod(shape[1:], dtype=np.int64)), offset=start)
    array = array.reshape((rows, *shape[1:]))
    array.flags.writeable = False
    return array


def read_rows(paths: list[Path], extra: np.ndarray | None = None) -> np.ndarray:
    """Rows of all `paths` then `extra`, in one new writable array (read, not mapped: one copy)."""
    headers = [header(p) for p in paths]
    shape, dtype, _ = headers[0]
    tail = np.empty((0, *shape[1:]), dtype) if extra is None else np.asarray(extra, dtype=dtype)
    total = sum(h[0][0] for h in headers) + len(tail)
    out = allocate((total, *shape[1:]), dtype)
    filled = 0
    for path, (part_shape, part_dtype, offset) in zip(paths, headers):
        if part_dtype != dtype or part_shape[1:] != shape[1:] or tail.shape[1:] != shape[1:]:
            raise CorruptArtifactError(f"segment {path} does not match the first part's dtype and row shape")
        _read_into(path, offset, memoryview(out[filled : filled + part_shape[0]].reshape(-1).view(np.uint8)))
        filled += part_shape[0]
    out[filled:] = tail
    return out
