"""Dot products of chosen pairs of sparse rows, compiled with numba.

Re-ranking needs cosine(query i, candidate j) for a few hundred candidates per query, not
the whole query x corpus product: a sparse-sparse matmul would pay for every pair that
shares any term. Here each query is scattered once into a dense scratch row and each
candidate row is gathered against it: O(nnz(candidate)) per pair, in parallel over queries.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

CHUNK = 64  # queries per scratch row allocation


@numba.njit(parallel=True, cache=True, nogil=True)
def _pair_dots(q_indptr, q_indices, q_data, c_indptr, c_indices, c_data, candidates, n_terms):  # pragma: no cover
    n, width = candidates.shape
    out = np.zeros((n, width), dtype=np.float32)
    n_chunks = (n + CHUNK - 1) // CHUNK
    for chunk in numba.prange(n_chunks):
        scratch = np.zeros(n_terms, dtype=np.float32)
        for i in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            for p in range(q_indptr[i], q_indptr[i + 1]):
                scratch[q_indices[p]] = q_data[p]
            for c in range(width):
                j = candidates[i, c]
                if j < 0:
                    continue
                total = 0.0
                for p in range(c_indptr[j], c_indptr[j + 1]):
                    total += c_data[p] * scratch[c_indices[p]]
                out[i, c] = total
            for p in range(q_indptr[i], q_indptr[i + 1]):
                scratch[q_indices[p]] = 0.0
    return out


def pair_dots(queries: sp.csr_matrix, corpus: sp.csr_matrix, candidates: np.ndarray) -> np.ndarray:
    """out[i, c] = queries[i] . corpus[candidates[i, c]] (0 where the candidate id is negative)."""
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    if candidates.size == 0:
        return np.zeros(candidates.shape, dtype=np.float32)
    return _pair_dots(
        queries.indptr.astype(np.int64, copy=False), queries.indices, queries.data.astype(np.float32, copy=False),
        corpus.indptr.astype(np.int64, copy=False), corpus.indices, corpus.data.astype(np.float32, copy=False),
        candidates, corpus.shape[1],
    )
