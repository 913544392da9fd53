"""index.segments: per-row artifacts as parts, concatenated; extended in place without disturbing earlier views."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from index import segments
from index.errors import CorruptArtifactError


def part(path: Path, array: np.ndarray) -> Path:
    np.save(path, array, allow_pickle=False)
    return path


def test_one_part_is_mapped_and_several_are_concatenated(tmp_path: Path) -> None:
    a = part(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    b = part(tmp_path / "b.npy", np.arange(100, 104, dtype=np.float32).reshape(2, 2))
    assert isinstance(segments.concatenate("t1", [a]), np.memmap)
    both = segments.concatenate("t1", [a, b])
    np.testing.assert_array_equal(both, np.vstack([np.load(a), np.load(b)]))
    assert not both.flags.writeable


def test_extension_in_place_never_changes_rows_handed_out(tmp_path: Path) -> None:
    base = part(tmp_path / "base.npy", np.zeros((5, 3), np.int32))
    one = part(tmp_path / "one.npy", np.ones((2, 3), np.int32))
    two = part(tmp_path / "two.npy", np.full((1, 3), 2, np.int32))
    first = segments.concatenate("t2", [base, one])
    second = segments.concatenate("t2", [base, one, two])
    assert np.shares_memory(first, second)  # the same buffer, extended
    np.testing.assert_array_equal(second[-1], [2, 2, 2])
    # A different lineage from the same base (e.g. after a rollback) must not overwrite rows `second` holds.
    other = part(tmp_path / "other.npy", np.full((2, 3), 7, np.int32))
    third = segments.concatenate("t2", [base, other])
    assert not np.shares_memory(third, second)
    np.testing.assert_array_equal(second[5:], [[1, 1, 1], [1, 1, 1], [2, 2, 2]])
    np.testing.assert_array_equal(third[5:], [[7, 7, 7], [7, 7, 7]])


def test_prepared_base_is_extended_by_the_first_delta_without_copying_it_again(tmp_path: Path, monkeypatch) -> None:
    base = part(tmp_path / "base.npy", np.arange(10, dtype=np.int64).reshape(5, 2))
    delta = part(tmp_path / "delta.npy", np.full((1, 2), 9, np.int64))
    mapped = segments.concatenate("t5", [base])  # the service loads the build: mapped, nothing copied
    assert segments.prepare("t5", base) is True
    assert segments.prepare("t5", base) is False  # once
    monkeypatch.setattr(segments, "allocate", lambda *a: pytest.fail("copied the base again"))
    both = segments.concatenate("t5", [base, delta])
    np.testing.assert_array_equal(both, np.vstack([mapped, [[9, 9]]]))
    assert not both.flags.writeable


def test_rewritten_part_is_not_taken_for_the_old_one(tmp_path: Path) -> None:
    base = part(tmp_path / "base.npy", np.zeros((3, 2), np.float32))
    extra = part(tmp_path / "extra.npy", np.ones((1, 2), np.float32))
    segments.concatenate("t3", [base, extra])
    os.unlink(extra)
    extra = part(tmp_path / "extra.npy", np.full((1, 2), 5, np.float32))
    np.testing.assert_array_equal(segments.concatenate("t3", [base, extra])[-1], [5, 5])


def test_parts_must_agree_on_dtype_and_row_shape(tmp_path: Path) -> None:
    a = part(tmp_path / "a.npy", np.zeros((2, 2), np.float32))
    b = part(tmp_path / "b.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(CorruptArtifactError, match="row shape"):
        segments.concatenate("t4", [a, b])


def test_jsonl_rows_reuse_parsed_parts(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(3)))
    b.write_text(json.dumps({"id": 3}) + "\n\n")
    first = segments.jsonl_rows("t5", [a])
    both = segments.jsonl_rows("t5", [a, b])
    assert [r["id"] for r in both] == [0, 1, 2, 3]
    assert both[0] is first[0] and len(first) == 3  # parsed once; earlier lists untouched
