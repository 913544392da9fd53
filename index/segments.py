"""Per-row artifacts stored as segments: the rows of the last full build plus the rows updates appended.

An incremental update adds rows; it never changes a row already written. So instead of
rewriting hundreds of megabytes per update, a version lists each per-row artifact as parts
(manifest `segments`): the build's file, hard-linked unchanged from version to version, then
one small part per update. The artifact is the concatenation of its parts along the first
axis (arrays and JSONL lines alike; CSR `indptr` parts after the first hold global offsets,
so they concatenate too).

Concatenating copies. A process that loads one version after another of the same lineage
(the API's hot reload) would copy the whole base again on every reload, so the last
concatenation of each artifact is kept with spare room and extended in place when the new
version's parts start with exactly the parts it holds (same files: device, inode, size,
mtime; parts are immutable). Only rows past everything handed out before are written, so
arrays of older versions still serving requests never change under them.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.errors import CorruptArtifactError

Identity = tuple[int, int, int, int]
_SLACK = 8  # room for 1/8 more rows than needed, so a run of small updates extends in place
_MIN_SLACK_ROWS = 4096


def identity(path: Path) -> Identity:
    """What tells one immutable file from another without reading it."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class _Grown:
    parts: tuple[Identity, ...]
    buffer: np.ndarray  # capacity rows; rows [0, filled) hold the parts, in order
    filled: int


@dataclass
class _Parsed:
    parts: tuple[Identity, ...]
    rows: list[dict[str, Any]]


_ARRAYS: dict[str, _Grown] = {}
_ROWS: dict[str, _Parsed] = {}
_LOCK = threading.Lock()


def _load(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _check_like(first: np.ndarray, part: np.ndarray, path: Path) -> None:
    if part.dtype != first.dtype or part.shape[1:] != first.shape[1:]:
        raise CorruptArtifactError(
            f"segment {path} has dtype {part.dtype} and row shape {part.shape[1:]}, "
            f"the first part {first.dtype} and {first.shape[1:]}"
        )


def _frozen(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def concatenate(key: str, paths: list[Path]) -> np.ndarray:
    """Rows of all `paths` (.npy) in order, read-only; one part is returned memory-mapped as is.

    `key` names the artifact ("dense.npy"): the extendable copy of its last concatenation is kept under it.
    """
    if len(paths) == 1:
        return _load(paths[0])
    ids = tuple(identity(p) for p in paths)
    with _LOCK:
        grown = _ARRAYS.get(key)
        if grown is not None and ids[: len(grown.parts)] == grown.parts:
            new = [_load(p) for p in paths[len(grown.parts) :]]
            for part, path in zip(new, paths[len(grown.parts) :]):
                _check_like(grown.buffer, part, path)
            rows = sum(len(part) for part in new)
            if grown.filled + rows <= len(grown.buffer):
                for part in new:
                    grown.buffer[grown.filled : grown.filled + len(part)] = part
                    grown.filled += len(part)
                grown.parts = ids
                return _frozen(grown.buffer[: grown.filled])
        arrays = [_load(p) for p in paths]
        for part, path in zip(arrays[1:], paths[1:]):
            _check_like(arrays[0], part, path)
        total = sum(len(a) for a in arrays)
        buffer = np.empty((total + max(total // _SLACK, _MIN_SLACK_ROWS), *arrays[0].shape[1:]), arrays[0].dtype)
        np.concatenate(arrays, out=buffer[:total])
        _ARRAYS[key] = _Grown(ids, buffer, total)
        return _frozen(buffer[:total])


def _parse(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def jsonl_rows(key: str, paths: list[Path]) -> list[dict[str, Any]]:
    """Parsed lines of all `paths` in order. The dicts of parts parsed before are shared: never mutate them."""
    ids = tuple(identity(p) for p in paths)
    with _LOCK:
        parsed = _ROWS.get(key)
        if parsed is not None and ids[: len(parsed.parts)] == parsed.parts:
            rows = list(parsed.rows)
            start = len(parsed.parts)
        else:
            rows, start = [], 0
        for path in paths[start:]:
            rows.extend(_parse(path))
        _ROWS[key] = _Parsed(ids, rows)
        return list(rows)
