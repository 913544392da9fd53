"""Neighbour lists: signature pruning, top-k selection, pair scoring, time proximity, both passes."""
from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import normalize

from index.neighbours import (
    DAY, MISSING, UNKNOWN_PROXIMITY, Corpus, NeighbourParams, Queries, build_neighbours, expand, prune_rows,
    query_neighbours, shortlist, top_k,
)
from index.sparse_kernels import blended_dots, mix_rows


def random_sparse(rng: np.random.Generator, rows: int, cols: int, density: float) -> sp.csr_matrix:
    matrix = sp.random(rows, cols, density=density, format="csr", dtype=np.float32, random_state=rng)
    matrix.data = matrix.data + 0.01  # no explicit zeros
    return normalize(matrix).astype(np.float32).tocsr()


def random_corpus(seed: int, n: int, terms: int = 40) -> tuple[Corpus, np.ndarray]:
    rng = np.random.default_rng(seed)
    sparse = random_sparse(rng, n, terms, 0.15)
    dense = normalize(rng.standard_normal((n, 6))).astype(np.float32)
    index = faiss.IndexFlatIP(6)
    index.add(dense)
    times = rng.uniform(0, 60 * DAY, n)
    times[rng.random(n) < 0.2] = np.nan
    return Corpus(index=index, sparse=sparse, times=times), dense


def assert_valid_lists(ids: np.ndarray, scores: np.ndarray, self_rows: np.ndarray | None) -> None:
    for i, (row, row_scores) in enumerate(zip(ids, scores)):
        present = row[row != MISSING]
        assert (row[: len(present)] == present).all(), "padding only at the end"
        assert len(set(present.tolist())) == len(present), "no duplicates"
        if self_rows is not None:
            assert self_rows[i] not in present, "never its own neighbour"
        assert (np.diff(row_scores[: len(present)]) <= 1e-6).all(), "scores non-increasing"


# -- prune_rows ------------------------------------------------------------------------------
def test_prune_rows_keeps_the_top_weights_per_row():
    matrix = sp.csr_matrix(np.array([[0.1, 0.5, 0.3, 0.0, 0.9], [0.0, 0.2, 0.0, 0.0, 0.0], [0.4, 0.3, 0.2, 0.1, 0.0]],
                                    dtype=np.float32))
    pruned = prune_rows(matrix, 2).toarray()
    assert (pruned[0] != 0).tolist() == [False, True, False, False, True]
    assert (pruned[1] != 0).tolist() == [False, True, False, False, False]  # shorter rows stay whole
    assert (pruned[2] != 0).tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(pruned[0, [1, 4]], np.array([0.5, 0.9]) / np.hypot(0.5, 0.9), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(pruned, axis=1), 1.0, rtol=1e-6)  # L2-normalized again


def test_prune_rows_is_a_no_op_when_rows_are_short_or_top_is_zero():
    matrix = random_sparse(np.random.default_rng(0), 5, 10, 0.3)
    assert (prune_rows(matrix, 0) != matrix).nnz == 0
    assert (prune_rows(matrix, 10) != matrix).nnz == 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), top=st.integers(1, 6))
def test_prune_rows_matches_a_sort_per_row(seed, top):
    matrix = random_sparse(np.random.default_rng(seed), 6, 15, 0.4)
    pruned = prune_rows(matrix, top)
    for i in range(matrix.shape[0]):
        row = matrix[i].toarray().ravel()
        kept = pruned[i].toarray().ravel()
        assert np.count_nonzero(kept) == min(top, np.count_nonzero(row))
        if np.count_nonzero(row) > top:
            # the kept terms are the largest ones (ties broken either way), proportional to the originals
            threshold = np.sort(row)[::-1][top - 1]
            assert row[kept > 0].min() >= threshold - 1e-7
            np.testing.assert_allclose(kept[kept > 0], row[kept > 0] / np.linalg.norm(row[kept > 0]), rtol=1e-5)


# -- top_k ----------------------------------------------------------------------------------------
def test_top_k_orders_excludes_self_and_pads():
    ids = np.array([[3, 0, 7, -1], [1, 2, 4, 5]])
    scores = np.array([[0.5, 0.9, 0.7, 0.8], [0.1, 0.4, 0.3, 0.2]], dtype=np.float32)
    out_ids, out_scores = top_k(ids, scores, 6, exclude=np.array([0, 2]))
    assert out_ids.dtype == np.int32 and out_ids.shape == (2, 6)
    assert out_ids[0].tolist() == [7, 3, -1, -1, -1, -1]  # self (0) and the missing id gone
    assert out_ids[1].tolist() == [4, 5, 1, -1, -1, -1]
    np.testing.assert_allclose(out_scores[0], [0.7, 0.5, 0, 0, 0, 0])


def test_top_k_narrower_than_candidates():
    ids, scores = top_k(np.array([[5, 6, 7]]), np.array([[0.1, 0.3, 0.2]]), 2)
    assert ids.tolist() == [[6, 7]]


# -- blended pair scores ---------------------------------------------------------------------------
def blended(queries, corpus, candidates, dense, q_times, c_times, sparse_weight=1.0, time_weight=0.0):
    return blended_dots(
        queries, corpus, candidates, dense, q_times, c_times, sparse_weight=sparse_weight, time_weight=time_weight,
        scale_seconds=14 * DAY, unknown_proximity=UNKNOWN_PROXIMITY,
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 70), m=st.integers(1, 30), width=st.integers(0, 12))
def test_blended_dots_are_the_sparse_cosine_blended_with_dense_and_time(seed, n, m, width):
    rng = np.random.default_rng(seed)
    queries = random_sparse(rng, n, 50, 0.1)
    corpus = random_sparse(rng, m, 50, 0.1)
    candidates = rng.integers(-1, m, size=(n, width))
    dense = rng.random((n, width)).astype(np.float32)
    q_times = np.where(rng.random(n) < 0.2, np.nan, rng.random(n) * 60 * DAY)
    c_times = np.where(rng.random(m) < 0.2, np.nan, rng.random(m) * 60 * DAY)
    got = blended(queries, corpus, candidates, dense, q_times, c_times, sparse_weight=0.6, time_weight=0.3)
    full = (queries @ corpus.T).toarray()
    cosine = np.take_along_axis(full, np.maximum(candidates, 0), axis=1)
    proximity = np.exp(-np.abs(c_times[np.maximum(candidates, 0)] - q_times[:, None]) / (14 * DAY))
    proximity = np.where(np.isnan(proximity), UNKNOWN_PROXIMITY, proximity)
    expected = np.where(candidates >= 0, (0.6 * cosine + 0.4 * dense) * (0.7 + 0.3 * proximity), -np.inf)
    assert got.shape == (n, width)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_time_proximity_decays_with_distance_and_is_neutral_when_unknown():
    rows = sp.csr_matrix(np.ones((2, 1), dtype=np.float32))
    candidates = np.array([[0, 1, 2], [0, 1, 2]])
    got = blended(rows, sp.csr_matrix(np.ones((3, 1), np.float32)), candidates, np.zeros((2, 3)),
                  np.array([0.0, np.nan]), np.array([0.0, 14 * DAY, np.nan]), time_weight=1.0)
    np.testing.assert_allclose(got[0], [1.0, np.exp(-1), UNKNOWN_PROXIMITY], rtol=1e-6)
    np.testing.assert_allclose(got[1], UNKNOWN_PROXIMITY)


def test_expand_adds_neighbour_terms_and_keeps_rows_without_neighbours():
    corpus = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    ids = np.array([[1, -1], [-1, -1]])
    scores = np.array([[0.5, 0.0], [0.0, 0.0]], dtype=np.float32)
    expanded = expand(corpus[:2], corpus, ids, scores, 1.0).toarray()
    np.testing.assert_allclose(expanded[0], [1 / np.sqrt(2), 1 / np.sqrt(2), 0], rtol=1e-6)
    np.testing.assert_allclose(expanded[1], [0, 1, 0])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), weight=st.floats(0.1, 3.0), top=st.integers(1, 30))
def test_mix_rows_matches_dense_arithmetic(seed, weight, top):
    rng = np.random.default_rng(seed)
    rows = random_sparse(rng, 5, 30, 0.2)
    others = random_sparse(rng, 8, 30, 0.2)
    ids = rng.integers(-1, 8, size=(5, 3))
    weights = rng.random((5, 3)).astype(np.float32)
    got = mix_rows(rows, others, ids, weights, top, self_weight=weight).toarray()
    for i in range(5):
        expected = weight * rows[i].toarray().ravel()
        for j, w in zip(ids[i], weights[i]):
            if j >= 0:
                expected += w * others[j].toarray().ravel()
        kept = got[i] != 0
        assert kept.sum() == min(top, np.count_nonzero(expected))
        if kept.any():
            np.testing.assert_allclose(got[i][kept], expected[kept] / np.linalg.norm(expected[kept]), rtol=1e-4)
            assert expected[kept].min() >= np.sort(expected)[::-1][kept.sum() - 1] - 1e-6


# -- both passes ----------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), k=st.integers(1, 12), feedback=st.integers(0, 4),
       candidates=st.integers(1, 50))
def test_neighbour_lists_never_hold_self_or_duplicates_and_are_sorted(seed, n, k, feedback, candidates):
    corpus, dense = random_corpus(seed, n)
    params = NeighbourParams(k=k, candidates=candidates, feedback=feedback, signature_terms=5, batch_size=7)
    ids, scores = build_neighbours(corpus, params, dense)
    assert ids.shape == (n, k) and scores.shape == (n, k)
    assert ((ids >= MISSING) & (ids < n)).all()
    assert_valid_lists(ids, scores, np.arange(n))
    # Queries for stored rows (as the wider search asks them) obey the same rules.
    queries = Queries(corpus.sparse[:3], dense[:3], corpus.times[:3], np.arange(min(3, n)))
    q_ids, q_scores, _ = query_neighbours(corpus, queries, params, width=n)
    assert_valid_lists(q_ids, q_scores, np.arange(min(3, n)))


def test_exact_sparse_order_wins_over_the_dense_candidates():
    # Row 0 shares term 0 with row 1 only; the dense vectors point the other way.
    sparse = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    dense = normalize(np.array([[1, 0], [0, 1], [1, 0.1], [1, 0.2]], dtype=np.float32)).astype(np.float32)
    index = faiss.IndexFlatIP(2)
    index.add(dense)
    corpus = Corpus(index=index, sparse=sparse, times=np.full(4, np.nan))
    ids, scores = build_neighbours(corpus, NeighbourParams(k=3, candidates=4, time_weight=0.0), dense)
    assert ids[0, 0] == 1 and scores[0, 0] == pytest.approx(1.0)


def test_a_lossy_index_gives_the_exact_lists_once_re_scored():
    corpus, dense = random_corpus(3, 300)
    pq = faiss.IndexIVFPQ(faiss.IndexFlatIP(6), 6, 1, 3, 4, faiss.METRIC_INNER_PRODUCT)  # 3 sub-quantizers, 4 bits
    pq.train(dense)
    pq.add(dense)
    params = NeighbourParams(k=10, candidates=30, sparse_weight=0.0)  # dense scores decide the order
    exact_ids, exact_scores = build_neighbours(corpus, params, dense)
    coded_ids, _ = build_neighbours(replace(corpus, index=pq, expanded=None), params, dense)
    ids, scores = build_neighbours(replace(corpus, index=pq, expanded=None, dense=dense, rerank=10), params, dense)
    assert not np.array_equal(coded_ids, exact_ids)  # PQ scores alone reorder the lists
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-6)


def test_shortlist_keeps_the_best_share_best_first():
    ids = np.array([[4, 7, MISSING, 9, 2, 5]])
    first = np.array([[0.2, 0.9, -np.inf, 0.5, 0.1, 0.7]], dtype=np.float32)
    dense = first * 2
    kept_ids, kept_dense, kept_first = shortlist(ids, dense, first, 0.5)
    assert kept_ids.tolist() == [[7, 5, 9]]
    np.testing.assert_array_equal(kept_first, first[:, [1, 5, 3]])
    np.testing.assert_array_equal(kept_dense, dense[:, [1, 5, 3]])
    assert shortlist(ids, dense, first, 1.0)[0] is ids  # the whole list: nothing copied


def test_the_second_pass_only_reorders_the_first_pass_best():
    corpus, dense = random_corpus(5, 120)
    params = NeighbourParams(k=10, candidates=60, second_pass_share=0.25)
    queries = Queries(corpus.sparse[:8], dense[:8], corpus.times[:8], np.arange(8))
    ids, _, _ = query_neighbours(corpus, queries, replace(params, feedback=3))
    first_ids, _, _ = query_neighbours(corpus, queries, replace(params, feedback=0, k=16))  # ceil(0.25 * 61)
    for row, best in zip(ids, first_ids):
        assert set(row[row >= 0].tolist()) <= set(best.tolist())


def test_deleted_rows_are_never_candidates():
    corpus, dense = random_corpus(3, 20)
    corpus.alive = np.ones(20, dtype=bool)
    corpus.alive[[2, 5, 11]] = False
    queries = Queries(corpus.sparse[:4], dense[:4], corpus.times[:4], np.arange(4))
    ids, _, _ = query_neighbours(corpus, queries, NeighbourParams(k=10, candidates=20, feedback=0), width=20)
    assert not {2, 5, 11} & set(ids.ravel().tolist())


@pytest.mark.parametrize("exact", [True, False])
def test_threads_give_the_lists_of_one_thread(exact):
    corpus, dense = random_corpus(11, 300)
    if not exact:
        quantizer = faiss.IndexFlatIP(6)
        index = faiss.IndexIVFFlat(quantizer, 6, 4, faiss.METRIC_INNER_PRODUCT)
        index.train(dense)
        index.add(dense)
        index.nprobe = 2
        corpus = replace(corpus, index=index, dense=dense)
    params = NeighbourParams(k=8, candidates=20, batch_size=16, rare_max_df=0.2)
    one = build_neighbours(replace(corpus), params, dense)
    counted: list[int] = []
    two = build_neighbours(replace(corpus), params, dense, progress=counted.append, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    assert sum(counted) == 2 * 300  # each row once per pass
