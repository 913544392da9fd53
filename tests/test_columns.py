"""index.columns: string columns and key lookups over plain arrays (what the service memory-maps)."""
from __future__ import annotations

import numpy as np
import pytest

from index import columns
from index.columns import NO_CODE, KeyIndex, StringColumn, key_code, key_codes


def test_string_column_rows_bytes_and_parts() -> None:
    values = ["a-1", "", "Ärger/ü", "x" * 300]
    column = StringColumn.from_strings(values)
    assert list(column) == values and len(column) == 4 and column[2] == "Ärger/ü" and column[-1] == values[-1]
    assert column.raw_rows([2, 0]) == ["Ärger/ü".encode(), b"a-1"]
    with pytest.raises(IndexError):
        column[4]
    # A part appended after the first two rows: global offsets without the leading one, so parts concatenate.
    head_blob, head_offsets = StringColumn.from_strings(values[:2]).part(0)
    tail_blob, tail_offsets = column.part(2, after=len(head_blob))
    joined = StringColumn(np.concatenate([head_blob, tail_blob]), np.concatenate([head_offsets, tail_offsets]))
    assert list(joined) == values


def test_key_codes_are_stable_non_negative_and_none_for_missing() -> None:
    assert key_code(None) == key_code("") == NO_CODE
    assert key_code("en") == key_code("en") >= 0 and key_code("en") != key_code("de")
    assert columns.key_hash("en") == 0x805F024E64E12AA9  # blake2b: the same in every process and release
    assert key_code("en") == 0x005F024E64E12AA9
    np.testing.assert_array_equal(key_codes(["en", None, "de"]), [key_code("en"), NO_CODE, key_code("de")])


def index_of(ids: list[str], parts: list[int]) -> KeyIndex:
    """A KeyIndex stored as parts of `parts` rows each (as an update appends them)."""
    keys = StringColumn.from_strings(ids)
    hashes, rows, start = [], [], 0
    for size in parts:
        h, r = KeyIndex.sorted_hashes(ids[start : start + size], start)
        hashes.append(h)
        rows.append(r)
        start += size
    return KeyIndex(keys, np.concatenate(hashes), np.concatenate(rows), np.cumsum(parts).tolist())


def test_last_row_of_a_key_wins_within_and_across_parts() -> None:
    ids = ["a", "b", "a", "c", "b", "d"]
    for parts in ([6], [3, 3], [2, 1, 3], [5, 1]):
        index = index_of(ids, parts)
        assert {k: index[k] for k in "abcd"} == {"a": 2, "b": 4, "c": 3, "d": 5}, parts
        assert "z" not in index and index.get("z") is None and index.get(5) is None
        with pytest.raises(KeyError):
            index["z"]
        assert list(index) == ["a", "b", "c", "d"] and len(index) == 4


def test_hash_collisions_are_told_apart_by_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(columns, "key_hash", lambda key: 7)  # every key collides
    index = index_of(["a", "b", "a", "c"], [2, 2])
    assert (index["a"], index["b"], index["c"]) == (2, 1, 3)
    assert index.get("d") is None
