"""Served lists: what the ranking policy makes of every stored neighbour list when a request
sets no filters, precomputed.

A sidebar request without filters is the common case, and it should cost an array lookup,
not a duplicate check per request. The build (and `related update`, for the lists it
changes) applies the policy's eligibility rules and the duplicate collapse of copies.py to
every list in one compiled pass. The rules are those of `Policy.rank` for an unfiltered
query, and the tests hold the two to the same output: same-language, alive, not the article itself, a
positive score; copies of the article dropped; each group of copies shown once, at its
best rank, as its freshest member.
"""
from __future__ import annotations

import numba
import numpy as np

from recommender.config import PolicyConfig
from recommender.policy.copies import _collapse_one, catalog_arrays, rules
from recommender.policy.catalog import Catalog

WIDTH = 20  # items kept per article: limits above this (or any filter) take the request-time path


def precomputable(config: PolicyConfig) -> bool:
    """Freshness (relative to now), MMR and category caps depend on the request: not precomputed."""
    return config.freshness_half_life_days is None and config.mmr_lambda is None and config.category_cap is None


def served_lists(
    config: PolicyConfig,
    catalog: Catalog,
    neighbours: np.ndarray,
    scores: np.ndarray,
    rows: np.ndarray | None = None,
    width: int = WIDTH,
) -> tuple[np.ndarray, np.ndarray]:
    """([len(rows), width] int32 catalog rows, -1 padded; their float32 scores) for `rows` (default all)."""
    rows = np.arange(len(neighbours)) if rows is None else np.asarray(rows)
    return _served(
        np.ascontiguousarray(neighbours), np.ascontiguousarray(scores, dtype=np.float32), rows.astype(np.int64),
        np.ascontiguousarray(catalog.alive, dtype=np.bool_), catalog.lang_codes, bool(config.same_language),
        *catalog_arrays(catalog), *rules(config), width,
    )


@numba.njit(parallel=True, cache=True, nogil=True)
def _served(
    neighbours, scores, rows, alive, lang, same_language,
    title, url, published, simhash, indptr, indices, data, threshold, same_title, copy_bits, title_bits, title_min,
    width,
):  # pragma: no cover
    """Policy.rank for an unfiltered query, per row: eligibility (alive, not itself, a positive
    score, same language), then the shared duplicate collapse."""
    n, k = len(rows), neighbours.shape[1]
    out_rows = np.full((n, width), -1, dtype=np.int32)
    out_scores = np.zeros((n, width), dtype=np.float32)
    for t in numba.prange(n):
        i = rows[t]
        candidates = np.empty(k, dtype=np.int64)
        ranks = np.empty(k, dtype=np.int64)
        m = 0
        for p in range(k):
            c = neighbours[i, p]
            if c < 0 or c == i or not alive[c] or scores[i, p] <= 0 or (same_language and lang[c] != lang[i]):
                continue
            candidates[m] = c
            ranks[m] = p
            m += 1
        positions = np.empty(width, dtype=np.int64)
        shown = np.empty(width, dtype=np.int64)
        lo, hi = indptr[i], indptr[i + 1]
        kept = _collapse_one(
            indices[lo:hi], data[lo:hi], simhash[i], title[i], url[i], candidates[:m], width,
            title, url, published, simhash, indptr, indices, data, threshold, same_title, copy_bits, title_bits, title_min,
            positions, shown,
        )
        for g in range(kept):
            out_rows[t, g] = shown[g]
            out_scores[t, g] = scores[i, ranks[positions[g]]]
    return out_rows, out_scores
