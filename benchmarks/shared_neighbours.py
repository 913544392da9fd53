"""Shared-neighbour re-ranking, a quality lever measured by benchmarks/levers.py and not built into
the pipeline (it lifts duc2004 and costs 10kgnad-test; see README "Quality levers").

Two articles of one story tend to have the same articles around them, while an article that
shares one rare name with the query has a neighbourhood of its own (Jarvis and Patrick's
shared-nearest-neighbour similarity). Each listed score is multiplied by

    (1 - weight) + weight * overlap(q, c)

where overlap is |N_m(q) & N_m(c)| / m over the top `m` of each list before re-ranking, or with
`reciprocal`, |({q} + N_m(q)) & ({c} + N_m(c))| / (m + 1): the query counts as its own neighbour,
so a candidate that lists the query back gains too. The lists already hold every N_m, so the cost
is O(k * m) per article and no similarity is computed.
"""
from __future__ import annotations

import numba
import numpy as np

CHUNK = 256  # rows per scratch allocation


@numba.njit(parallel=True, cache=True, nogil=True)
def _overlaps(ids, top, reciprocal):  # pragma: no cover
    """overlap[i, c] of row i and its candidate ids[i, c], both neighbourhoods read from `ids`."""
    n, width = ids.shape
    out = np.zeros((n, width), dtype=np.float32)
    size = top + 1 if reciprocal else top
    for chunk in numba.prange((n + CHUNK - 1) // CHUNK):
        mark = np.zeros(n, dtype=np.bool_)
        for i in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            mark[i] = reciprocal
            for p in range(top):
                if ids[i, p] >= 0:
                    mark[ids[i, p]] = True
            for c in range(width):
                j = ids[i, c]
                if j < 0:
                    continue
                shared = 1 if (reciprocal and mark[j]) else 0
                for p in range(top):
                    other = ids[j, p]
                    if other >= 0 and mark[other]:
                        shared += 1
                out[i, c] = shared / size
            mark[i] = False
            for p in range(top):
                if ids[i, p] >= 0:
                    mark[ids[i, p]] = False
    return out


def rerank(
    ids: np.ndarray, scores: np.ndarray, top: int, weight: float, reciprocal: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Every corpus row's list [N, k] (ids -1 padded, row i is article i) re-ranked by shared neighbours."""
    top = min(top, ids.shape[1])
    overlap = _overlaps(np.ascontiguousarray(ids, dtype=np.int64), top, reciprocal)
    blended = np.where(ids >= 0, scores * (np.float32(1.0 - weight) + np.float32(weight) * overlap), -np.inf)
    order = np.argsort(-blended, axis=1, kind="stable")
    ranked = np.take_along_axis(ids, order, axis=1)
    return ranked, np.where(ranked >= 0, np.take_along_axis(blended, order, axis=1), 0.0).astype(np.float32)
