"""Columns of strings and lookups by key over plain arrays, so they can be memory-mapped.

A service process that held one Python object per article (a dict of metadata, an entry of
an id -> row dict) would hold hundreds of megabytes of its own at a million articles, once
per worker. Stored as arrays in the version directory instead, the strings are a UTF-8 byte
blob with int64 offsets, and a lookup by key is a sorted array of 64-bit key hashes searched
by bisection: every worker maps the same page-cached files.

A column stored as segments (index.segments) is the concatenation of its parts: an offsets
part after the first holds global offsets without the leading 0 (as a CSR `indptr` does),
and the hashes of a key index are sorted within each part, whose rows the parts' lengths say.
"""
from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache

import numpy as np

NO_CODE = -1  # the code of a missing value
_CODE_MASK = (1 << 63) - 1


def key_hash(key: str) -> int:
    """A 64-bit hash of a string, the same in every process (unlike `hash`)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@lru_cache(maxsize=4096)
def key_code(value: str | None) -> int:
    """An int64 standing for a string value (NO_CODE for None or ""): equal values, equal codes.

    63 bits of `key_hash`: two different values share a code with probability 2^-63 per pair,
    so columns of codes compare values without a table of them that every update would extend.
    """
    return key_hash(value) & _CODE_MASK if value else NO_CODE


def key_codes(values: Iterable[str | None]) -> np.ndarray:
    return np.fromiter((key_code(v) for v in values), dtype=np.int64)


class StringColumn(Sequence[str]):
    """Strings as one UTF-8 blob (uint8) and offsets (int64, one more than rows): row i is blob[offsets[i]:offsets[i + 1]]."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob = blob
        self.offsets = offsets
        # Per-row access goes through memoryviews: their items are Python ints and their slices
        # bytes-like, at a fraction of the cost of numpy scalars and array slices.
        self._bytes = memoryview(blob)
        self._offsets = memoryview(offsets)

    @classmethod
    def from_strings(cls, values: Sequence[str]) -> StringColumn:
        return cls.from_bytes([v.encode("utf-8", "surrogatepass") for v in values])

    @classmethod
    def from_bytes(cls, values: Sequence[bytes]) -> StringColumn:
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum([len(v) for v in values], out=offsets[1:])
        return cls(np.frombuffer(b"".join(values), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def raw(self, row: int) -> bytes:
        return bytes(self._bytes[self._offsets[row] : self._offsets[row + 1]])

    def raw_rows(self, rows: Iterable[int]) -> list[bytes]:
        view, offsets = self._bytes, self._offsets
        return [bytes(view[offsets[row] : offsets[row + 1]]) for row in rows]

    def __getitem__(self, row: int) -> str:  # type: ignore[override]
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} of a column of {len(self)}")
        return self.raw(row % len(self)).decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        for row in range(len(self)):
            yield self.raw(row).decode("utf-8", "surrogatepass")

    def part(self, start: int, after: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(blob, offsets) of rows `start`.. stored as a part: the first part (`after` None) or one
        appended after `after` bytes of blob, whose offsets are global and lack the leading one."""
        lo = int(self.offsets[start])
        if after is None:
            return self.blob[lo:], self.offsets[start:] - lo
        return self.blob[lo:], self.offsets[start + 1 :] - lo + after


class KeyIndex(Mapping[str, int]):
    """Key -> row over a column of keys: sorted 64-bit hashes, each with its row, confirmed against the key.

    Where a key has several rows the last wins (an update re-adds an edited article as a new
    row). `bounds` are the (start, stop) positions of parts sorted on their own; a later
    part holds later rows, so parts are searched from the last.
    """

    def __init__(self, keys: StringColumn, hashes: np.ndarray, rows: np.ndarray, bounds: Sequence[int] | None = None) -> None:
        self.keys = keys
        stops = list(bounds) if bounds is not None else [len(hashes)]
        starts = [0, *stops[:-1]]
        hashes, rows = memoryview(hashes), memoryview(rows)  # bisect on a memoryview: no numpy call per lookup
        self._parts = [(hashes[a:b], rows[a:b]) for a, b in reversed(list(zip(starts, stops))) if b > a]

    @staticmethod
    def sorted_hashes(keys: Sequence[str], first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, rows) of keys numbered from `first_row`, sorted by hash then row: one part of an index."""
        hashes = np.fromiter((key_hash(k) for k in keys), dtype=np.uint64, count=len(keys))
        order = np.argsort(hashes, kind="stable")
        return hashes[order], (order + first_row).astype(np.int64)

    @classmethod
    def of(cls, keys: StringColumn) -> KeyIndex:
        """An index of every row of `keys`, built in memory."""
        return cls(keys, *cls.sorted_hashes(list(keys)))

    def row(self, key: str) -> int | None:
        """The last row holding `key`, or None."""
        wanted = key_hash(key)
        encoded = None
        for hashes, rows in self._parts:
            lo = hi = bisect.bisect_left(hashes, wanted)
            while hi < len(hashes) and hashes[hi] == wanted:
                hi += 1
            for at in range(hi - 1, lo - 1, -1):  # rows ascend within equal hashes: the last row first
                row = rows[at]
                encoded = encoded or key.encode("utf-8", "surrogatepass")
                if self.keys.raw(row) == encoded:
                    return row
        return None

    def get(self, key: object, default: int | None = None) -> int | None:  # type: ignore[override]
        row = self.row(key) if isinstance(key, str) else None
        return default if row is None else row

    def __getitem__(self, key: str) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        """Every key once, in the order of first rows (a pass over the column: for tools and tests)."""
        seen: set[str] = set()
        for key in self.keys:
            if key not in seen:
                seen.add(key)
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)
