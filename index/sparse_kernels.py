"""Row-wise kernels over CSR matrices, compiled with numba and parallel over rows.

Re-ranking needs cosine(query i, candidate j) for a few hundred candidates per query, not
the whole query x corpus product: a sparse-sparse matmul would pay for every pair that
shares any term. Here each query is scattered once into a dense scratch row and each
candidate row is gathered against it: O(nnz(candidate)) per pair. Pruning and feedback
expansion work the same way, row by row, so no N x N or sorted-triplet temporaries exist.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

CHUNK = 64  # queries per scratch row allocation


@numba.njit(parallel=True, cache=True, nogil=True)
def _blended_dots(
    q_indptr, q_indices, q_data, c_indptr, c_indices, c_data, candidates, dense, q_times, c_times,
    sparse_weight, time_weight, scale_seconds, unknown, n_terms,
):  # pragma: no cover
    """(w * dot + (1 - w) * dense) * (1 - tw + tw * proximity), -inf where the id is negative:
    sparse dot products and the blend in one pass, with no [n, width] temporaries."""
    n, width = candidates.shape
    out = np.full((n, width), -np.inf, dtype=np.float32)
    dense_weight = np.float32(1.0) - sparse_weight
    keep = np.float32(1.0) - time_weight
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
                total = np.float32(0.0)
                for p in range(c_indptr[j], c_indptr[j + 1]):
                    total += c_data[p] * scratch[c_indices[p]]
                gap = abs(c_times[j] - q_times[i])
                proximity = unknown if np.isnan(gap) else np.float32(np.exp(-gap / scale_seconds))
                blended = sparse_weight * total + dense_weight * dense[i, c]
                out[i, c] = blended * (keep + time_weight * proximity)
            for p in range(q_indptr[i], q_indptr[i + 1]):
                scratch[q_indices[p]] = 0.0
    return out


def blended_dots(
    queries: sp.csr_matrix, corpus: sp.csr_matrix, candidates: np.ndarray, dense: np.ndarray,
    query_times: np.ndarray, corpus_times: np.ndarray, *, sparse_weight: float, time_weight: float,
    scale_seconds: float, unknown_proximity: float,
) -> np.ndarray:
    """Blended scores [n, width] of each query and its candidates: the sparse dot product mixed
    with the given dense scores, times a publication-time proximity factor exp(-|dt| / scale)
    (`unknown_proximity` where a time is NaN); -inf where the candidate id is negative."""
    candidates = np.ascontiguousarray(candidates, dtype=np.int64)
    if candidates.size == 0:
        return np.full(candidates.shape, -np.inf, dtype=np.float32)
    return _blended_dots(
        *_csr_parts(queries), *_csr_parts(corpus), candidates, np.ascontiguousarray(dense, dtype=np.float32),
        np.ascontiguousarray(query_times, dtype=np.float64), np.ascontiguousarray(corpus_times, dtype=np.float64),
        np.float32(sparse_weight), np.float32(time_weight), float(scale_seconds), np.float32(unknown_proximity),
        corpus.shape[1],
    )


@numba.njit(parallel=True, cache=True, nogil=True)
def _mix_rows(
    q_indptr, q_indices, q_data, c_indptr, c_indices, c_data, mix_ids, mix_weights, self_weight, top, n_terms
):  # pragma: no cover
    """Row i = self_weight * q[i] + sum_j mix_weights[i, j] * c[mix_ids[i, j]]; keep `top`, L2-normalize."""
    n, m = mix_ids.shape
    counts = np.zeros(n, dtype=np.int64)
    out_indices = np.zeros((n, top), dtype=np.int32)
    out_data = np.zeros((n, top), dtype=np.float32)
    n_chunks = (n + CHUNK - 1) // CHUNK
    for chunk in numba.prange(n_chunks):
        scratch = np.zeros(n_terms, dtype=np.float32)
        touched = np.empty(n_terms, dtype=np.int32)
        for i in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            used = 0
            for source in range(-1, m):
                if source < 0:
                    indptr, indices, data, row, weight = q_indptr, q_indices, q_data, i, self_weight
                else:
                    indptr, indices, data = c_indptr, c_indices, c_data
                    row, weight = mix_ids[i, source], mix_weights[i, source]
                    if row < 0 or weight <= 0.0:
                        continue
                for p in range(indptr[row], indptr[row + 1]):
                    term = indices[p]
                    if scratch[term] == 0.0:
                        touched[used] = term
                        used += 1
                    scratch[term] += weight * data[p]
            values = np.empty(used, dtype=np.float32)
            for u in range(used):
                values[u] = scratch[touched[u]]
            keep = used if used <= top else top
            order = np.argsort(-values)[:keep]
            norm = 0.0
            for u in range(keep):
                norm += values[order[u]] ** 2
            norm = np.sqrt(norm) if norm > 0 else 1.0
            for u in range(keep):
                out_indices[i, u] = touched[order[u]]
                out_data[i, u] = values[order[u]] / norm
            counts[i] = keep
            for u in range(used):
                scratch[touched[u]] = 0.0
    return counts, out_indices, out_data


def _csr_parts(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        matrix.indptr.astype(np.int64, copy=False),
        matrix.indices.astype(np.int32, copy=False),
        matrix.data.astype(np.float32, copy=False),
    )


def mix_rows(
    rows: sp.csr_matrix,
    others: sp.csr_matrix,
    mix_ids: np.ndarray,
    mix_weights: np.ndarray,
    top: int,
    self_weight: float = 1.0,
) -> sp.csr_matrix:
    """self_weight * rows[i] + sum_j mix_weights[i, j] * others[mix_ids[i, j]], pruned to the
    `top` largest weights and L2-normalized (ids < 0 are skipped)."""
    n, n_terms = rows.shape
    top = max(1, min(top, n_terms))
    counts, indices, data = _mix_rows(
        *_csr_parts(rows), *_csr_parts(others),
        np.ascontiguousarray(mix_ids, dtype=np.int64).reshape(n, -1),
        np.ascontiguousarray(mix_weights, dtype=np.float32).reshape(n, -1),
        np.float32(self_weight), top, n_terms,
    )
    keep = np.arange(top)[None, :] < counts[:, None]
    indptr = np.concatenate([[0], np.cumsum(counts)])
    result = sp.csr_matrix((data[keep], indices[keep], indptr), shape=(n, n_terms))
    result.sort_indices()
    return result


class SortedRows:
    """A CSR matrix with sorted column ids in each row, and its arrays as the kernels take them.

    Request-time ranking compares a handful of rows by a sorted merge per pair (recommender/
    copies.py), which needs sorted rows and no per-call conversion of the arrays.
    """

    def __init__(self, matrix: sp.csr_matrix) -> None:
        if not matrix.has_sorted_indices:
            matrix = matrix.sorted_indices()
        self.matrix = matrix
        self.parts = _csr_parts(matrix)
