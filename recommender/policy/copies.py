"""Near-duplicate collapse: one compiled implementation for requests and precomputed lists.

Two articles are copies when their TF-IDF cosine reaches `duplicate_threshold`, or when they
share a normalized title or URL and the cosine reaches SAME_TITLE_MIN_COSINE (a recurring
headline such as "Weather" over different text is no copy). Checking every pair exactly would
cost a sparse merge per pair, so SimHash signatures (index/simhash.py) screen them first: four
popcounts per pair, and only pairs whose signatures are close enough to be copies get the exact
check (a true copy fails the screen with probability below 1e-12). The cost per pair is the
same on any corpus, unlike a bound from the LSA vectors, which is weak where the SVD captures
little of each row.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numba
import numpy as np

from index.simhash import distance, max_bits
from recommender.config import PolicyConfig

if TYPE_CHECKING:
    from recommender.policy.catalog import Catalog
    from recommender.policy.ranking import QueryContext

SAME_TITLE_MIN_COSINE = 0.98
# Once the pool is full, candidates past this position are not walked for fresher group members:
# a wide search holds thousands, and stored lists (50) are always walked whole.
WALK_MIN = 100


def rules(config: PolicyConfig) -> tuple[np.float32, bool, int, int, np.float32]:
    """(threshold, same-title rule on, screen distance for copies, for same-title copies,
    same-title threshold) for the kernels; with `duplicates` off no pair passes the screen."""
    if not config.duplicates:
        return np.float32(np.inf), False, -1, -1, np.float32(np.inf)
    title_min = min(config.duplicate_threshold, SAME_TITLE_MIN_COSINE)
    return (
        np.float32(config.duplicate_threshold), bool(config.duplicate_same_title),
        max_bits(config.duplicate_threshold), max_bits(title_min), np.float32(SAME_TITLE_MIN_COSINE),
    )


def catalog_arrays(catalog: Catalog) -> tuple:
    """The catalog columns the kernels read, in their argument order."""
    return (
        catalog.title_codes, catalog.url_codes, np.ascontiguousarray(catalog.published, dtype=np.float64),
        catalog.simhash, *catalog.rows.parts,
    )


def collapse(
    catalog: Catalog, ctx: QueryContext, rows: np.ndarray, pool: int, config: PolicyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Group leaders' positions in `rows` (at most `pool`, in order) and the row shown for each."""
    indptr, indices, data = ctx.source.parts
    start, stop = indptr[ctx.source_row], indptr[ctx.source_row + 1]
    positions = np.empty(pool, dtype=np.int64)
    shown = np.empty(pool, dtype=np.int64)
    kept = _collapse_one(
        indices[start:stop], data[start:stop], ctx.simhash, ctx.title_code, ctx.url_code,
        np.ascontiguousarray(rows, dtype=np.int64), pool, *catalog_arrays(catalog), *rules(config), positions, shown,
    )
    return positions[:kept], shown[:kept]


@numba.njit(cache=True, nogil=True)
def _is_copy(
    a_indices, a_data, a_simhash, a_title, a_url, b,
    title, url, simhash, indptr, indices, data, threshold, same_title, copy_bits, title_bits, title_min,
):  # pragma: no cover
    """Whether vector a (the query, or a catalog row given by its parts) and catalog row b are copies."""
    bits = distance(a_simhash, simhash[b])
    if bits > copy_bits:
        same = (a_title == title[b] and a_title >= 0) or (a_url == url[b] and a_url >= 0)
        if not (same_title and same and bits <= title_bits):
            return False
    p, p_end, q, q_end = 0, len(a_indices), indptr[b], indptr[b + 1]
    cosine = np.float32(0.0)
    while p < p_end and q < q_end:
        if a_indices[p] == indices[q]:
            cosine += a_data[p] * data[q]
            p += 1
            q += 1
        elif a_indices[p] < indices[q]:
            p += 1
        else:
            q += 1
    if cosine >= threshold:
        return True
    if same_title and cosine >= title_min:
        return (a_title == title[b] and a_title >= 0) or (a_url == url[b] and a_url >= 0)
    return False


@numba.njit(cache=True, nogil=True)
def _collapse_one(
    q_indices, q_data, q_simhash, q_title, q_url, candidates, pool,
    title, url, published, simhash, indptr, indices, data, threshold, same_title, copy_bits, title_bits, title_min,
    positions, shown,
):  # pragma: no cover
    """Walk candidates in rank order: copies of the query go; a copy of a kept leader joins its
    group (which shows its freshest member); anything else leads a new group while fewer than
    `pool` are kept. Returns how many groups were kept."""
    kept = 0
    for p in range(len(candidates)):
        if kept == pool and p >= WALK_MIN:
            break
        c = candidates[p]
        if _is_copy(q_indices, q_data, q_simhash, q_title, q_url, c,
                    title, url, simhash, indptr, indices, data, threshold, same_title, copy_bits, title_bits, title_min):
            continue
        group = -1
        for g in range(kept):
            leader = candidates[positions[g]]
            lo, hi = indptr[leader], indptr[leader + 1]
            if _is_copy(indices[lo:hi], data[lo:hi], simhash[leader], title[leader], url[leader], c,
                        title, url, simhash, indptr, indices, data, threshold, same_title, copy_bits, title_bits, title_min):
                group = g
                break
        if group >= 0:
            current = published[shown[group]]
            if published[c] > current or (np.isnan(current) and not np.isnan(published[c])):
                shown[group] = c
        elif kept < pool:
            positions[kept] = p
            shown[kept] = c
            kept += 1
    return kept
