"""index.segments: per-row artifacts as parts, concatenated by mapping the parts' pages in place."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from index import segments
from index.errors import CorruptArtifactError


def part(path: Path, array: np.ndarray, after: list[Path] | None = None) -> Path:
    """Save `array`; appended `after` those parts (page-aligned for mapping) when given."""
    with open(path, "wb") as fh:
        segments.save(fh, array, segments.append_offset(after) if after else None)
    return path


def mapped_files(array: np.ndarray) -> set[str]:
    """Files mapped in the address range of `array` (Linux)."""
    start = array.__array_interface__["data"][0]
    end = start + array.nbytes
    names = set()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if lo < end and hi > start and len(fields) > 5:
            names.add(fields[5])
    return names


def test_one_part_is_mapped_and_several_are_concatenated(tmp_path: Path) -> None:
    a = part(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    b = part(tmp_path / "b.npy", np.arange(100, 104, dtype=np.float32).reshape(2, 2))
    assert isinstance(segments.concatenate([a]), np.memmap)
    both = segments.concatenate([a, b])  # b was saved plainly: copied, same rows
    np.testing.assert_array_equal(both, np.vstack([np.load(a), np.load(b)]))
    assert not both.flags.writeable


@pytest.mark.parametrize("dtype, width", [(np.uint8, None), (np.float32, 256), (np.uint64, 4), (np.int64, None)])
def test_appended_parts_are_saved_to_be_mapped_in_place(tmp_path: Path, dtype, width) -> None:
    rng = np.random.default_rng(0)
    paths: list[Path] = []
    arrays = []
    for i, rows in enumerate([50_001, 3, 0, 20_000, 1]):  # odd sizes: boundaries fall anywhere in a page
        shape = (rows,) if width is None else (rows, width)
        array = rng.integers(0, 200, size=shape).astype(dtype)
        paths.append(part(tmp_path / f"p{i}.npy", array, after=list(paths)))
        arrays.append(array)
        np.testing.assert_array_equal(np.load(paths[-1]), array)  # still a plain .npy file
    whole = segments.concatenate(paths)
    np.testing.assert_array_equal(whole, np.concatenate(arrays))
    assert segments.part_lengths(paths) == [len(a) for a in arrays]
    if sys.platform.startswith("linux"):
        assert {str(paths[0]), str(paths[3])} <= mapped_files(whole)  # the large parts' pages, not copies


def test_data_of_an_appended_part_starts_where_the_parts_before_end_in_a_page(tmp_path: Path) -> None:
    a = part(tmp_path / "a.npy", np.zeros(1000, np.uint8))
    b = part(tmp_path / "b.npy", np.ones(5, np.uint8), after=[a])
    _, _, offset_a = segments.header(a)
    _, _, offset_b = segments.header(b)
    assert offset_b % segments.PAGE == (offset_a + 1000) % segments.PAGE
    assert segments.append_offset([a, b]) == (offset_a + 1005) % segments.PAGE


def test_parts_must_agree_on_dtype_and_row_shape(tmp_path: Path) -> None:
    a = part(tmp_path / "a.npy", np.zeros((2, 2), np.float32))
    b = part(tmp_path / "b.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CorruptArtifactError, match="row shape"):
        segments.concatenate([a, b])


def test_read_rows_copies_the_parts_and_extra_rows_into_a_writable_array(tmp_path: Path) -> None:
    a = part(tmp_path / "a.npy", np.zeros((3, 2), np.int32))
    b = part(tmp_path / "b.npy", np.ones((1, 2), np.int32), after=[a])
    rows = segments.read_rows([a, b], np.full((2, 2), 7, np.int32))
    np.testing.assert_array_equal(rows, [[0, 0]] * 3 + [[1, 1]] + [[7, 7]] * 2)
    rows[0, 0] = 5  # writable, and not the files
    assert np.load(a)[0, 0] == 0
