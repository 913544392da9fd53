"""Served lists: what the ranking policy makes of every stored neighbour list when a request
sets no filters, precomputed.

A sidebar request without filters is the common case, and it should cost an array lookup,
not a duplicate check per request. The build (and `related update`, for the lists it
changes) applies the policy's eligibility rules and duplicate collapse to every list with
a compiled kernel. The rules are those of `Policy.rank` for an unfiltered query, and the
tests hold the two to the same output: same-language, alive, not the article itself, a
positive score; copies of the article dropped; each group of copies shown once, at its
best rank, as its freshest member.
"""
from __future__ import annotations

import numba
import numpy as np

from recommender.config import PolicyConfig
from recommender.ranking import SAME_TITLE_MIN_COSINE, Catalog

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
    lowest = min(config.duplicate_threshold, SAME_TITLE_MIN_COSINE) if config.duplicate_same_title else config.duplicate_threshold
    return _collapse(
        np.ascontiguousarray(neighbours), np.ascontiguousarray(scores, dtype=np.float32), rows.astype(np.int64),
        np.ascontiguousarray(catalog.alive, dtype=np.bool_), catalog.lang_codes, bool(config.same_language),
        np.ascontiguousarray(catalog.published, dtype=np.float64), catalog.title_codes, catalog.url_codes,
        np.ascontiguousarray(catalog.dense, dtype=np.float32), np.ascontiguousarray(catalog.coverage, dtype=np.float32),
        *catalog.rows.parts,
        np.float32(config.duplicate_threshold), bool(config.duplicate_same_title), np.float32(2 - 2 * lowest + 1e-3),
        np.float32(SAME_TITLE_MIN_COSINE), width,
    )


@numba.njit(cache=True, nogil=True)
def _is_copy(a, b, title, url, dense, coverage, indptr, indices, data, threshold, same_title, max_distance, title_min):  # pragma: no cover
    """The rules of Policy._is_copy, behind the same LSA bound as Policy._may_copy."""
    dot = np.float32(0.0)
    for d in range(dense.shape[1]):
        dot += dense[a, d] * dense[b, d]
    ca, cb = coverage[a], coverage[b]
    if ca * ca + cb * cb - 2 * ca * cb * dot > max_distance:
        return False
    p, p_end, q, q_end = indptr[a], indptr[a + 1], indptr[b], indptr[b + 1]
    cosine = np.float32(0.0)
    while p < p_end and q < q_end:
        if indices[p] == indices[q]:
            cosine += data[p] * data[q]
            p += 1
            q += 1
        elif indices[p] < indices[q]:
            p += 1
        else:
            q += 1
    if cosine >= threshold:
        return True
    if same_title and cosine >= title_min:
        return (title[a] == title[b] and title[a] >= 0) or (url[a] == url[b] and url[a] >= 0)
    return False


@numba.njit(parallel=True, cache=True, nogil=True)
def _collapse(
    neighbours, scores, rows, alive, lang, same_language, published, title, url, dense, coverage,
    indptr, indices, data, threshold, same_title, max_distance, title_min, width,
):  # pragma: no cover
    n, k = len(rows), neighbours.shape[1]
    out_rows = np.full((n, width), -1, dtype=np.int32)
    out_scores = np.zeros((n, width), dtype=np.float32)
    for t in numba.prange(n):
        i = rows[t]
        leaders = np.empty(width, dtype=np.int64)  # catalog rows of group leaders, in rank order
        shown = np.empty(width, dtype=np.int64)  # each group's freshest member so far
        kept = 0
        for p in range(k):
            c = neighbours[i, p]
            if c < 0 or c == i or not alive[c] or scores[i, p] <= 0:
                continue
            if same_language and lang[c] != lang[i]:
                continue
            if _is_copy(i, c, title, url, dense, coverage, indptr, indices, data, threshold, same_title, max_distance, title_min):
                continue
            group = -1
            for g in range(kept):
                if _is_copy(c, leaders[g], title, url, dense, coverage, indptr, indices, data, threshold, same_title, max_distance, title_min):
                    group = g
                    break
            if group >= 0:
                if published[c] > published[shown[group]] or (np.isnan(published[shown[group]]) and not np.isnan(published[c])):
                    shown[group] = c
            elif kept < width:
                leaders[kept] = c
                shown[kept] = c
                out_scores[t, kept] = scores[i, p]
                kept += 1
        for g in range(kept):
            out_rows[t, g] = shown[g]
    return out_rows, out_scores
