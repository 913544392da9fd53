"""Precomputed neighbour lists: FAISS candidates re-ranked by exact sparse similarity.

LSA vectors find candidates fast but blur the rare names that hold a news story together,
so the order comes from exact sparse cosine, in two passes:

1. candidates from FAISS and from the postings of each row's heaviest rare terms
   (index/postings.py), scored by the cosine of the TF-IDF rows;
2. each row is expanded with its top `feedback` neighbours (pseudo-relevance feedback,
   Rocchio style), and candidates are re-scored by the cosine of the expanded rows,
   which rewards articles that share a neighbourhood, not only words;

both passes blended with the dense score and a publication-time proximity factor (stories
happen within days). Work is batched whole-matrix operations, never a loop per pair.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from index.faiss_index import search
from index.postings import RarePostings
from index.sparse_kernels import blended_dots, mix_rows
from index.threads import kernel_threads

MISSING = -1
DAY = 86_400.0
UNKNOWN_PROXIMITY = 0.5  # neither near nor far when a date is missing


@dataclass(frozen=True)
class NeighbourParams:
    k: int = 50
    candidates: int = 200
    sparse_weight: float = 1.0
    feedback: int = 5  # neighbours folded into the expanded row; 0 disables the second pass
    feedback_weight: float = 3.0
    time_weight: float = 0.3
    time_scale_days: float = 14.0
    signature_terms: int = 128  # terms per row kept for pair scoring; 0 keeps all
    rare_candidates: int = 20  # extra candidates sharing a query's rarest terms (0 = FAISS only)
    rare_terms: int = 8  # query terms used to find them
    rare_max_df: float = 0.01  # only terms in at most this share of articles
    rare_postings: int = 1000  # postings read per rare term: those nearest the query in time
    second_pass_share: float = 0.34  # best share of the first pass's candidates re-scored by the second
    batch_size: int = 512


def prune_rows(matrix: sp.csr_matrix, top: int) -> sp.csr_matrix:
    """Keep each row's `top` largest weights (the rare, telling terms), L2-normalized again.

    Scoring pairs by these signatures costs O(top) per pair instead of O(row length),
    the same trade as Lucene's more-like-this keeping only its best query terms.
    """
    matrix = matrix.tocsr()
    if top <= 0 or np.diff(matrix.indptr).max(initial=0) <= top:
        return matrix
    no_mix = np.empty((matrix.shape[0], 0), dtype=np.int64)
    return mix_rows(matrix, matrix, no_mix, no_mix.astype(np.float32), top)


def top_k(
    candidate_ids: np.ndarray, scores: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row (int32 ids, -1 padded to width k); `exclude[i]` never appears in row i."""
    scores = np.where(candidate_ids >= 0, scores, -np.inf)
    if exclude is not None:
        scores = np.where(candidate_ids == exclude[:, None], -np.inf, scores)
    width = min(k, candidate_ids.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    ids = np.take_along_axis(candidate_ids, order, axis=1)
    best = np.take_along_axis(scores, order, axis=1)
    missing = ~np.isfinite(best)
    ids = np.where(missing, MISSING, ids).astype(np.int32)
    best = np.where(missing, 0.0, best).astype(np.float32)
    if width < k:
        ids = np.pad(ids, ((0, 0), (0, k - width)), constant_values=MISSING)
        best = np.pad(best, ((0, 0), (0, k - width)), constant_values=0.0)
    return ids, best


def expand(
    sparse: sp.csr_matrix, corpus_sparse: sp.csr_matrix, ids: np.ndarray, scores: np.ndarray, weight: float,
    top_terms: int = 0,
) -> sp.csr_matrix:
    """Rocchio feedback: each row plus `weight` x the score-weighted mean of its neighbours' rows."""
    weights = np.where(ids >= 0, np.clip(scores, 0.0, None), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    weights = weight * weights / np.where(totals > 0, totals, 1.0)
    top = 2 * top_terms if top_terms > 0 else corpus_sparse.shape[1]
    return mix_rows(sparse, corpus_sparse, ids, weights, top)


@dataclass
class Corpus:
    """What neighbours are computed against: one row per article (deleted rows masked by `alive`)."""

    index: faiss.Index
    sparse: sp.csr_matrix  # TF-IDF signatures: rows pruned to signature_terms, L2-normalized
    times: np.ndarray  # float64 epoch seconds, NaN unknown
    expanded: sp.csr_matrix | None = None  # second-pass rows; None until computed
    alive: np.ndarray | None = None
    dense: np.ndarray | None = None  # the vectors FAISS holds (scores for candidates it did not return)
    rerank: int = 0  # > 0 for a lossy index (faiss_index.rerank_factor): c * rerank candidates re-scored with `dense`
    postings: RarePostings | None = None  # rare terms' postings; built on first use when not stored

    def rare_postings(self, max_df: float) -> RarePostings:
        if self.postings is None:
            self.postings = RarePostings.build(self.sparse, self.times, max_df)
        return self.postings


@dataclass
class Queries:
    sparse: sp.csr_matrix  # signatures, pruned like the corpus's
    dense: np.ndarray
    times: np.ndarray
    self_ids: np.ndarray | None = None  # query i is corpus row self_ids[i]: never its own neighbour
    expanded: sp.csr_matrix | None = None  # feedback-expanded rows when already known (stored articles)


def blend(
    queries: Queries, corpus: Corpus, params: NeighbourParams, ids: np.ndarray, dense: np.ndarray,
    query_rows: sp.csr_matrix, corpus_rows: sp.csr_matrix,
) -> np.ndarray:
    """Sparse cosine of `query_rows` and the candidates' `corpus_rows` blended with the dense
    score, times the publication-time proximity factor exp(-|dt| / scale) (UNKNOWN_PROXIMITY
    where a date is missing); -inf where ids < 0."""
    return blended_dots(
        query_rows, corpus_rows, ids, dense, queries.times, corpus.times, sparse_weight=params.sparse_weight,
        time_weight=params.time_weight, scale_seconds=params.time_scale_days * DAY, unknown_proximity=UNKNOWN_PROXIMITY,
    )


def rare_term_candidates(corpus: Corpus, queries: Queries, params: NeighbourParams) -> np.ndarray:
    """Articles sharing the queries' rarest telling terms ([n, rare_candidates], -1 padded).

    LSA blurs the rare names that hold a story together (and short, headline-only items
    have poor dense vectors), so candidates also come from the postings of each query's
    `rare_terms` heaviest terms that occur in at most `rare_max_df` of the articles
    (index/postings.py: at most `rare_postings` per term, the nearest in time).
    """
    postings = corpus.rare_postings(params.rare_max_df)
    return postings.candidates(
        queries.sparse, postings.query_keys(queries.times, queries.self_ids), terms=params.rare_terms,
        budget=params.rare_postings, width=params.rare_candidates, exclude=queries.self_ids,
    )


def merge_candidates(ids: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """FAISS ids then extra ids, each id once per row (-1 where repeated)."""
    merged = np.concatenate([ids, extra], axis=1)
    order = np.argsort(merged, axis=1, kind="stable")
    ordered = np.take_along_axis(merged, order, axis=1)
    repeated = np.zeros_like(merged, dtype=bool)
    repeated[:, 1:] = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)
    mask = np.empty_like(repeated)
    np.put_along_axis(mask, order, repeated, axis=1)
    return np.where(mask, MISSING, merged)


def first_pass(
    corpus: Corpus, queries: Queries, params: NeighbourParams, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates [n, c] (FAISS, plus rare-term ones) with dense and blended first-pass scores."""
    c = min(width + 1, corpus.index.ntotal)
    # A lossy index's scores are re-scored exactly, unless that changes nothing: with no wider
    # shortlist the candidates stay the same, and their dense scores are not blended in.
    rescored = corpus.rerank > 1 or (corpus.rerank == 1 and params.sparse_weight < 1.0)
    exact = corpus.dense if rescored else None
    dense_scores, ids = search(corpus.index, queries.dense, c, vectors=exact, rerank=max(1, corpus.rerank))
    if params.rare_candidates > 0 and corpus.dense is not None:
        extra = rare_term_candidates(corpus, queries, params)
        ids = merge_candidates(ids, extra)
        tail = ids[:, c:]
        extra_dense = np.zeros(tail.shape, dtype=np.float32)
        if params.sparse_weight < 1.0:  # the dense score only matters when it is blended in
            extra_dense = np.einsum("ncd,nd->nc", corpus.dense[np.maximum(tail, 0)], queries.dense)
        dense_scores = np.concatenate([dense_scores, extra_dense.astype(np.float32)], axis=1)
    if corpus.alive is not None:
        ids = np.where((ids >= 0) & corpus.alive[np.maximum(ids, 0)], ids, MISSING)
    if queries.self_ids is not None:
        ids = np.where(ids == queries.self_ids[:, None], MISSING, ids)
    first = blend(queries, corpus, params, ids, dense_scores, queries.sparse, corpus.sparse)
    return shortlist(ids.astype(np.int64), dense_scores, first, params.second_pass_share)


def shortlist(
    ids: np.ndarray, dense: np.ndarray, first: np.ndarray, share: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best `share` of each row's candidates by first-pass score, best first.

    The second pass costs as much per candidate as the first (a sparse dot product of rows twice
    as long) and the build keeps every article's candidates between the passes, so candidates
    far down the first pass, which the feedback rarely lifts into the top k, cost time and memory.
    """
    width = ids.shape[1]
    keep = min(width, max(1, int(np.ceil(share * width))))
    if keep == width:
        return ids, dense, first
    best = np.argpartition(-first, keep - 1, axis=1)[:, :keep]
    order = np.take_along_axis(best, np.argsort(-np.take_along_axis(first, best, axis=1), axis=1, kind="stable"), axis=1)
    return tuple(np.take_along_axis(a, order, axis=1) for a in (ids, dense, first))


def rescore(
    corpus: Corpus, queries: Queries, params: NeighbourParams, ids: np.ndarray, dense: np.ndarray, first: np.ndarray,
    expanded_queries: sp.csr_matrix | None,
) -> np.ndarray:
    if expanded_queries is None or corpus.expanded is None:
        return first
    return blend(queries, corpus, params, ids, dense, expanded_queries, corpus.expanded)


def score_candidates(
    corpus: Corpus, queries: Queries, params: NeighbourParams, ids: np.ndarray, dense_vectors: np.ndarray
) -> np.ndarray:
    """Both passes over given candidates [n, c] instead of FAISS's (e.g. the few articles a filter leaves).

    The feedback expansion must come from the query's unfiltered neighbourhood, so pass
    `queries.expanded` (stored rows, or `query_neighbours`' third result) when feedback is on.
    """
    ids = np.asarray(ids, dtype=np.int64)
    dense = np.einsum("ncd,nd->nc", dense_vectors[np.maximum(ids, 0)], queries.dense).astype(np.float32)
    first = blend(queries, corpus, params, ids, dense, queries.sparse, corpus.sparse)
    return rescore(corpus, queries, params, ids, dense, first, queries.expanded)


def expand_queries(corpus: Corpus, queries: Queries, params: NeighbourParams, ids: np.ndarray, first: np.ndarray) -> sp.csr_matrix | None:
    if params.feedback <= 0:
        return None
    top_ids, top_scores = top_k(ids, first, params.feedback)
    return expand(queries.sparse, corpus.sparse, top_ids, top_scores, params.feedback_weight, params.signature_terms)


def batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def subset(queries: Queries, part: slice) -> Queries:
    return Queries(
        sparse=queries.sparse[part], dense=queries.dense[part], times=queries.times[part],
        self_ids=None if queries.self_ids is None else queries.self_ids[part],
        expanded=None if queries.expanded is None else queries.expanded[part],
    )


@dataclass
class FirstPass:
    """First-pass candidates of a run of corpus rows, batch by batch, and each row's best `feedback` of them.

    Per batch only the candidate ids (int32) and dense scores are kept for the final pass, 8 bytes
    per candidate: at 1M articles x 301 candidates that is 2.4 GB, half of what int64 ids and the
    first-pass scores took as well.
    """

    rows: slice
    candidates: list[tuple[np.ndarray, np.ndarray]]  # per batch: ids (int32) and dense scores
    feedback_ids: np.ndarray
    feedback_scores: np.ndarray


def row_batches(rows: slice, size: int):
    """Batches of `rows` on the grid of `batches` when rows.start is a multiple of `size`: FAISS then
    searches the same batches whichever range of rows a task covers."""
    for part in batches(rows.stop - rows.start, size):
        yield slice(rows.start + part.start, rows.start + part.stop)


def corpus_queries(corpus: Corpus, dense: np.ndarray) -> Queries:
    return Queries(corpus.sparse, dense, corpus.times, np.arange(corpus.sparse.shape[0]))


def exact_search_pinned(index: faiss.Index) -> contextlib.AbstractContextManager:
    """One BLAS thread while an exact index searches (see `first_pass_rows`); nothing for the others."""
    exact = isinstance(faiss.downcast_index(index), faiss.IndexFlat)
    return threadpool_limits(1, user_api="blas") if exact else contextlib.nullcontext()


def first_pass_rows(
    corpus: Corpus, params: NeighbourParams, dense: np.ndarray, rows: slice,
    progress: Callable[[int], object] | None = None,
) -> FirstPass:
    """First pass of the corpus rows `rows` against the corpus (a build's range of rows, or all).

    Exact search is BLAS matrix products, whose float sums depend on BLAS's thread count: with
    one BLAS thread they are the same in every process that searches (the build's, or Dask
    workers'). The pin is only for an exact index: FAISS's bundled OpenBLAS shares its OpenMP
    runtime, so the pin makes FAISS single-threaded too, and an IVF, HNSW or PQ index (which
    scans with FAISS's own kernels, over all threads) would search at half speed on 2 cores.
    """
    queries = corpus_queries(corpus, dense)
    width = max(params.feedback, 1)
    found = FirstPass(
        rows, [], np.full((rows.stop - rows.start, width), MISSING, dtype=np.int64),
        np.zeros((rows.stop - rows.start, width), dtype=np.float32),
    )
    with exact_search_pinned(corpus.index):
        for part in row_batches(rows, params.batch_size):
            ids, dense_scores, first = first_pass(corpus, subset(queries, part), params, params.candidates)
            found.candidates.append((ids.astype(np.int32), dense_scores))
            local = slice(part.start - rows.start, part.stop - rows.start)
            found.feedback_ids[local], found.feedback_scores[local] = top_k(ids, first, width)
            if progress is not None:
                progress(part.stop - part.start)
    return found


def expanded_rows(corpus: Corpus, params: NeighbourParams, found: FirstPass) -> sp.csr_matrix | None:
    """Feedback-expanded rows of `found.rows` (None when feedback is off); row by row, so ranges stack."""
    if params.feedback <= 0:
        return None
    whole = (found.rows.start, found.rows.stop) == (0, corpus.sparse.shape[0])
    return expand(
        corpus.sparse if whole else corpus.sparse[found.rows], corpus.sparse, found.feedback_ids,
        found.feedback_scores, params.feedback_weight, params.signature_terms,
    )


def final_pass_rows(
    corpus: Corpus, params: NeighbourParams, dense: np.ndarray, found: FirstPass,
    progress: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Second pass of `found.rows` (against `corpus.expanded`, every row's expansion) and the top k."""
    queries = corpus_queries(corpus, dense)
    n = found.rows.stop - found.rows.start
    out_ids = np.full((n, params.k), MISSING, dtype=np.int32)
    out_scores = np.zeros((n, params.k), dtype=np.float32)
    for part, (ids, dense_scores) in zip(row_batches(found.rows, params.batch_size), found.candidates):
        q = subset(queries, part)
        if corpus.expanded is None:  # feedback off: the final scores are the first pass's
            scores = blend(q, corpus, params, ids, dense_scores, q.sparse, corpus.sparse)
        else:
            scores = blend(q, corpus, params, ids, dense_scores, corpus.expanded[part], corpus.expanded)
        local = slice(part.start - found.rows.start, part.stop - found.rows.start)
        out_ids[local], out_scores[local] = top_k(ids, scores, params.k)
        if progress is not None:
            progress(part.stop - part.start)
    return out_ids, out_scores


def row_ranges(n: int, batch_size: int, tasks: int) -> list[slice]:
    """About `tasks` ranges of whole batches, so every batch is the one a single range would search."""
    step = max(1, math.ceil(n / batch_size / max(1, tasks))) * batch_size
    return [slice(start, min(n, start + step)) for start in range(0, n, step)]


RANGES_PER_THREAD = 4  # enough ranges to even out uneven ones


def build_neighbours(
    corpus: Corpus, params: NeighbourParams, dense: np.ndarray, progress: Callable[[int], object] | None = None,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour lists of every corpus row against the corpus; fills `corpus.expanded`.

    With `threads` > 1, ranges of rows run on that many threads, each kernel on its own thread
    (index/threads.py), as the Dask build's single-threaded worker processes run them: the other
    thread keeps a core busy while one runs Python and numpy between kernels (1.2x at 100k; at 1M,
    where FAISS's scans dominate, about even). The lists are the same either way.
    """
    n = corpus.sparse.shape[0]
    if threads <= 1 or n <= params.batch_size:
        found = first_pass_rows(corpus, params, dense, slice(0, n), progress)
        corpus.expanded = expanded_rows(corpus, params, found)
        return final_pass_rows(corpus, params, dense, found, progress)
    lock = threading.Lock()

    def advance(count: int) -> None:
        if progress is not None:
            with lock:
                progress(count)

    ranges = row_ranges(n, params.batch_size, RANGES_PER_THREAD * threads)
    # Pinned once around the threads: each range's own pin, entered and left while the other thread
    # searches, would hand that thread back every BLAS thread in the middle of its search.
    with exact_search_pinned(corpus.index), kernel_threads(threads) as pool:
        found = list(pool.map(lambda rows: first_pass_rows(corpus, params, dense, rows, advance), ranges))
        if params.feedback > 0:
            corpus.expanded = sp.vstack(list(pool.map(lambda part: expanded_rows(corpus, params, part), found))).tocsr()
        lists = list(pool.map(lambda part: final_pass_rows(corpus, params, dense, part, advance), found))
    return np.concatenate([ids for ids, _ in lists]), np.concatenate([scores for _, scores in lists])


def query_neighbours(
    corpus: Corpus, queries: Queries, params: NeighbourParams, *, width: int | None = None
) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix | None]:
    """Neighbours of new rows (drafts, updates, wider searches) against a built corpus.

    Returns ids [n, k], scores [n, k] and the queries' expanded rows (for storing updates).
    """
    n = queries.sparse.shape[0]
    out_ids = np.full((n, params.k), MISSING, dtype=np.int32)
    out_scores = np.zeros((n, params.k), dtype=np.float32)
    expanded_parts = []
    for part in batches(n, params.batch_size):
        q = queries if n <= params.batch_size else subset(queries, part)  # slicing CSR costs more than a draft's search
        ids, dense_scores, first = first_pass(corpus, q, params, width or params.candidates)
        expanded = q.expanded if q.expanded is not None else expand_queries(corpus, q, params, ids, first)
        scores = rescore(corpus, q, params, ids, dense_scores, first, expanded)
        out_ids[part], out_scores[part] = top_k(ids, scores, params.k)
        if expanded is not None:
            expanded_parts.append(expanded)
    expanded_all = None if not expanded_parts else expanded_parts[0] if len(expanded_parts) == 1 else sp.vstack(expanded_parts).tocsr()
    return out_ids, out_scores, expanded_all
