"""Rare-term postings: the candidates LSA cannot find, at a cost per article that does not grow
with the archive.

LSA vectors blur the rare names and topic words that hold a story together, so the neighbour
search also takes candidates from the postings of each article's heaviest rare terms (terms in
at most `max_df` of the articles). Read whole, those postings grow with the archive: a term in
1% of a million articles has 10,000 of them, and reading every query term's postings took the
1M build from 988 s to 1,420 s. Stories happen within days, so each term's postings are kept
in publication order and a query reads at most `budget` of them per term, the ones nearest its
own time (a binary search, then outward): a fixed cost per article, and exact wherever a term
has no more postings than the budget (every term of an archive under budget / max_df articles).

The postings of a build are stored with its version (memory-mapped by every worker); rows
appended since (updates) get postings of their own at load, so a version never rewrites them.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numba
import numpy as np
import scipy.sparse as sp

FILES = ("postings_rare", "postings_indptr", "postings_rows", "postings_weights", "postings_keys")


def timeline(times: np.ndarray, before: float = np.nan) -> np.ndarray:
    """Each row's place in publication order: its time, or where unknown the last known time
    before it (`before` for the rows ahead of the first known one, else the first known time)."""
    times = np.asarray(times, dtype=np.float64)
    known = np.isfinite(times)
    if known.all():
        return times.copy()
    if not known.any():
        return np.full(len(times), before if np.isfinite(before) else 0.0)
    last = np.maximum.accumulate(np.where(known, np.arange(len(times)), -1))
    keys = times[np.maximum(last, 0)]
    keys[last < 0] = before if np.isfinite(before) else times[known][0]
    return keys


@dataclass(frozen=True)
class Block:
    """Term-major postings of a run of rows: term t's are rows[indptr[t]:indptr[t + 1]], in timeline order."""

    indptr: np.ndarray  # int64 [V + 1]
    rows: np.ndarray  # int32, row ids of the corpus
    weights: np.ndarray  # float32: the term's weight in the row's signature
    keys: np.ndarray  # float64: timeline keys of the block's rows (row `offset + i` is keys[i])
    offset: int = 0

    @classmethod
    def of(cls, signature: sp.csr_matrix, keys: np.ndarray, rare: np.ndarray, offset: int = 0) -> Block:
        """Postings of the rare terms of `signature` (corpus rows offset..), each term's in key order."""
        signature = signature.tocsr()
        counts = np.bincount(signature.indices[rare[signature.indices]], minlength=len(rare))
        indptr = np.zeros(len(rare) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        rows, weights = _fill(
            signature.indptr.astype(np.int64, copy=False), signature.indices,
            signature.data.astype(np.float32, copy=False), np.argsort(keys, kind="stable"), rare, indptr, offset,
        )
        return cls(indptr, rows, weights, keys, offset)

    @property
    def stop(self) -> int:
        return self.offset + len(self.keys)


@dataclass(frozen=True)
class RarePostings:
    rare: np.ndarray  # bool [V]: the terms that have postings
    blocks: tuple[Block, ...]  # the build's rows, then (once rows are appended) the rest

    @classmethod
    def build(cls, signature: sp.csr_matrix, times: np.ndarray, max_df: float) -> RarePostings:
        """Postings of every row's rare terms (in at most `max_df` of the rows, and at least 2)."""
        df = np.bincount(signature.indices, minlength=signature.shape[1])
        rare = df <= max(2.0, max_df * signature.shape[0])
        return cls(rare, (Block.of(signature, timeline(times), rare),))

    @classmethod
    def stored(cls, version: Stored, signature: sp.csr_matrix, times: np.ndarray) -> RarePostings | None:
        """The build's postings in `version` (None when it has none), covering every row of `signature`."""
        if not version.has(f"{FILES[0]}.npy"):
            return None
        rare, indptr, rows, weights, keys = (version.array(f"{name}.npy") for name in FILES)
        return cls(np.asarray(rare, dtype=bool), (Block(indptr, rows, weights, keys),)).covering(signature, times)

    def arrays(self) -> dict[str, np.ndarray]:
        """The build's postings as stored (FILES); rows appended since get theirs at load (`covering`)."""
        base = self.blocks[0]
        return dict(zip(FILES, (self.rare, base.indptr, base.rows, base.weights, base.keys)))

    def covering(self, signature: sp.csr_matrix, times: np.ndarray) -> RarePostings:
        """The build's postings plus a block for the rows of `signature` past them."""
        base = self.blocks[0]
        if signature.shape[0] < base.stop:
            raise ValueError(f"postings of {base.stop} rows for a corpus of {signature.shape[0]}")
        if signature.shape[0] == self.blocks[-1].stop:
            return self
        before = base.keys[-1] if len(base.keys) else np.nan
        tail = Block.of(signature[base.stop:], timeline(times[base.stop:], before), self.rare, base.stop)
        return RarePostings(self.rare, (base, tail))

    @cached_property
    def _tail(self) -> Block:
        """The block after the build's (empty when no rows were appended): the kernel takes two."""
        if len(self.blocks) > 1:
            return self.blocks[1]
        stop = self.blocks[0].stop
        return Block(np.zeros(len(self.rare) + 1, np.int64), np.empty(0, np.int32), np.empty(0, np.float32), np.empty(0), stop)

    def query_keys(self, times: np.ndarray, self_ids: np.ndarray | None) -> np.ndarray:
        """Timeline keys of queries: a corpus row's own; else its time, or (unknown) the newest."""
        if self_ids is not None:
            keys = np.empty(len(self_ids))
            for block in self.blocks:
                inside = (self_ids >= block.offset) & (self_ids < block.stop)
                keys[inside] = block.keys[self_ids[inside] - block.offset]
            return keys
        return np.where(np.isfinite(times), times, self._newest)

    @cached_property
    def _newest(self) -> float:
        return max(float(block.keys.max(initial=0.0)) for block in self.blocks)

    def candidates(
        self, queries: sp.csr_matrix, keys: np.ndarray, *, terms: int, budget: int, width: int,
        exclude: np.ndarray | None = None,
    ) -> np.ndarray:
        """[n, width] rows (-1 padded) that share the most weight with each query over its `terms`
        heaviest rare terms, reading at most `budget` postings per term and block; exclude[i] skipped."""
        n = queries.shape[0]
        exclude = np.full(n, -1, np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64)
        base, tail = self.blocks[0], self._tail
        queries = queries.tocsr()
        return _candidates(
            queries.indptr.astype(np.int64, copy=False), queries.indices.astype(np.int32, copy=False),
            queries.data.astype(np.float32, copy=False), np.ascontiguousarray(keys, dtype=np.float64), exclude,
            self.rare, tail.stop, base.indptr, base.rows, base.weights, base.keys,
            tail.indptr, tail.rows, tail.weights, tail.keys, tail.offset, terms, budget, width,
            min(n, 2 * numba.get_num_threads()),
        )


class Stored(Protocol):
    """What `RarePostings.stored` reads: a version (index.artifacts.Version, or an update's parent)."""

    def has(self, name: str) -> bool: ...

    def array(self, name: str) -> np.ndarray: ...


@numba.njit(cache=True, nogil=True)
def _fill(indptr, indices, data, order, rare, out_indptr, offset):  # pragma: no cover
    """A counting sort by term of the rows taken in `order`: each term's postings come out in that order."""
    fill = out_indptr[:-1].copy()
    rows = np.empty(out_indptr[-1], np.int32)
    weights = np.empty(out_indptr[-1], np.float32)
    for r in order:
        for p in range(indptr[r], indptr[r + 1]):
            t = indices[p]
            if rare[t]:
                rows[fill[t]] = r + offset
                weights[fill[t]] = data[p]
                fill[t] += 1
    return rows, weights


@numba.njit(cache=True, nogil=True)
def _nearest(rows, keys, offset, start, stop, key, budget):  # pragma: no cover
    """The range [lo, hi) of at most `budget` postings in [start, stop) nearest `key` on the timeline."""
    if stop - start <= budget:
        return start, stop
    lo, hi = start, stop
    while lo < hi:  # first posting at or after key
        mid = (lo + hi) // 2
        if keys[rows[mid] - offset] < key:
            lo = mid + 1
        else:
            hi = mid
    left, right = lo, lo
    while right - left < budget:
        if right >= stop or (left > start and key - keys[rows[left - 1] - offset] <= keys[rows[right] - offset] - key):
            left -= 1
        else:
            right += 1
    return left, right


@numba.njit(cache=True, nogil=True)
def _gather(indptr, rows, weights, keys, offset, term, key, budget, w, slot_rows, slot_scores, touched, used):  # pragma: no cover
    """Adds w x weight to the score of the rows in the term's `budget` postings nearest `key`.

    Scores live in a small open-addressing table (a few times the postings a query can read), not
    in an array over every article: that would be zeroed for each draft (4 MB at 1M articles) and
    missed in cache on every posting."""
    mask = len(slot_rows) - 1
    lo, hi = _nearest(rows, keys, offset, indptr[term], indptr[term + 1], key, budget)
    for p in range(lo, hi):
        r = rows[p]
        h = (r * 2654435761) & mask
        while slot_rows[h] != r and slot_rows[h] >= 0:
            h = (h + 1) & mask
        if slot_rows[h] < 0:
            slot_rows[h] = r
            touched[used] = h
            used += 1
        slot_scores[h] += w * weights[p]
    return used


@numba.njit(parallel=True, cache=True, nogil=True)
def _candidates(
    q_indptr, q_indices, q_data, q_keys, exclude, rare, n_rows, b_indptr, b_rows, b_weights, b_keys, t_indptr, t_rows,
    t_weights, t_keys, t_offset, terms, budget, width, n_chunks,
):  # pragma: no cover
    n = len(q_indptr) - 1
    out = np.full((n, width), -1, dtype=np.int64)
    for chunk in numba.prange(n_chunks):
        most = min(2 * terms * budget, n_rows)  # rows a query can reach
        size = 16
        while size < 2 * most:
            size *= 2
        slot_rows = np.full(size, -1, dtype=np.int64)  # reset through `touched` after each query
        slot_scores = np.zeros(size, dtype=np.float32)
        touched = np.empty(most, dtype=np.int64)
        best_rows = np.empty(width, dtype=np.int64)
        best_scores = np.empty(width, dtype=np.float32)
        for i in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            # the query's `terms` heaviest rare terms
            start, stop = q_indptr[i], q_indptr[i + 1]
            weights = np.zeros(stop - start, dtype=np.float32)
            for p in range(start, stop):
                if rare[q_indices[p]]:
                    weights[p - start] = q_data[p]
            picked = np.argsort(-weights)[:terms]
            used = 0
            for u in picked:
                w = weights[u]
                if w <= 0.0:
                    break
                t = q_indices[start + u]
                used = _gather(b_indptr, b_rows, b_weights, b_keys, 0, t, q_keys[i], budget, w, slot_rows, slot_scores, touched, used)
                used = _gather(
                    t_indptr, t_rows, t_weights, t_keys, t_offset, t, q_keys[i], budget, w, slot_rows, slot_scores, touched, used
                )
            # the best `width`, by score then row id (the same whatever the thread count)
            count = 0
            for u in range(used):
                h = touched[u]
                r, s = slot_rows[h], slot_scores[h]
                slot_rows[h], slot_scores[h] = -1, 0.0
                if r == exclude[i]:
                    continue
                if count == width and (s < best_scores[count - 1] or (s == best_scores[count - 1] and r > best_rows[count - 1])):
                    continue
                pos = count if count < width else width - 1
                while pos > 0 and (best_scores[pos - 1] < s or (best_scores[pos - 1] == s and best_rows[pos - 1] > r)):
                    best_scores[pos] = best_scores[pos - 1]
                    best_rows[pos] = best_rows[pos - 1]
                    pos -= 1
                best_scores[pos] = s
                best_rows[pos] = r
                if count < width:
                    count += 1
            for c in range(count):
                out[i, c] = best_rows[c]
    return out
