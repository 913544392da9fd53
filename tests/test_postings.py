"""Rare-term postings: exact where a term's postings fit the budget, nearest in time where they do not."""
from __future__ import annotations

import faiss
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.neighbours import DAY, Corpus, NeighbourParams, build_neighbours
from index.postings import Block, RarePostings, timeline

UNLIMITED = 10**9


def random_rows(seed: int, n: int, terms: int, density: float) -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = sp.random(n, terms, density=density, format="csr", dtype=np.float32, random_state=rng)
    matrix.data = matrix.data + 0.01
    times = rng.uniform(0, 400 * DAY, n)
    times[rng.random(n) < 0.1] = np.nan
    return matrix, times


def brute_force(matrix: sp.csr_matrix, rare: np.ndarray, terms: int, width: int) -> list[list[int]]:
    """Each row's `terms` heaviest rare terms, dotted with every other row; the best `width` by score, then row."""
    lists = []
    for i in range(matrix.shape[0]):
        weights = matrix[i].toarray()[0] * rare
        picked = np.argsort(-weights, kind="stable")[:terms]
        query = np.zeros_like(weights)
        query[picked] = weights[picked]
        scores = matrix @ query
        scores[i] = 0.0
        order = np.lexsort((np.arange(len(scores)), -scores))
        lists.append([int(j) for j in order if scores[j] > 0][:width])
    return lists


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), terms=st.integers(1, 6), width=st.integers(1, 12))
def test_an_unlimited_budget_is_the_exact_overlap_of_the_heaviest_rare_terms(seed, terms, width):
    matrix, times = random_rows(seed, 150, 300, 0.04)
    postings = RarePostings.build(matrix, times, max_df=0.05)
    rows = np.arange(150)
    got = postings.candidates(
        matrix, postings.query_keys(times, rows), terms=terms, budget=UNLIMITED, width=width, exclude=rows
    )
    for i, expected in enumerate(brute_force(matrix, postings.rare, terms, width)):
        assert [j for j in got[i] if j >= 0] == expected


def test_rare_means_in_at_most_max_df_of_the_rows():
    matrix = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=np.float32))
    postings = RarePostings.build(matrix, np.zeros(4), max_df=0.5)
    assert postings.rare.tolist() == [False, True, True]
    assert postings.blocks[0].indptr.tolist() == [0, 0, 1, 2]  # the common term keeps no postings


def test_a_capped_term_reads_the_postings_nearest_the_query_in_time():
    # One term in 20 articles, one a day; the query (row 0, day 10) reads 4 of them.
    days = np.array([10.0] + list(range(20)))
    matrix = sp.csr_matrix(np.ones((21, 1), dtype=np.float32))
    postings = RarePostings.build(matrix, days * DAY, max_df=1.0)
    got = postings.candidates(
        matrix[:1], postings.query_keys(days * DAY, np.array([0])), terms=1, budget=4, width=10, exclude=np.array([0])
    )
    found = sorted(days[[j for j in got[0] if j >= 0]].tolist())
    assert found == [9.0, 10.0, 11.0]  # the 4 nearest postings: itself (excluded), the other day 10, days 9 and 11


def test_unknown_times_take_the_last_known_before_them():
    assert timeline(np.array([np.nan, 5.0, np.nan, 7.0, np.nan])).tolist() == [5.0, 5.0, 5.0, 7.0, 7.0]
    assert timeline(np.array([np.nan, np.nan]), before=3.0).tolist() == [3.0, 3.0]
    assert timeline(np.array([np.nan])).tolist() == [0.0]


def test_rows_appended_after_the_build_are_found_as_if_built_together():
    matrix, times = random_rows(3, 200, 300, 0.04)
    whole = RarePostings.build(matrix, times, max_df=0.05)
    keys = timeline(times[:150])
    built = RarePostings(whole.rare, (Block.of(matrix[:150], keys, whole.rare),))
    covering = built.covering(matrix, times)
    assert len(covering.blocks) == 2 and covering.blocks[1].offset == 150
    rows = np.arange(200)
    expected, got = (
        postings.candidates(matrix, postings.query_keys(times, rows), terms=4, budget=UNLIMITED, width=8, exclude=rows)
        for postings in (whole, covering)
    )
    np.testing.assert_array_equal(got, expected)
    assert covering.covering(matrix, times) is covering
    with pytest.raises(ValueError):
        built.covering(matrix[:100], times[:100])


def test_drafts_without_a_time_are_placed_at_the_newest_article():
    matrix, times = random_rows(4, 50, 100, 0.05)
    postings = RarePostings.build(matrix, times, max_df=0.2)
    keys = postings.query_keys(np.array([np.nan, 5.0]), None)
    assert keys.tolist() == [np.nanmax(times), 5.0]


def test_story_mates_lsa_cannot_see_are_found_through_their_rare_terms():
    """Stories of 3 articles share one rare term each; the dense vectors are noise, so FAISS alone finds none."""
    rng = np.random.default_rng(0)
    n_stories, noise_terms = 60, 2000
    rows, cols, vals = [], [], []
    for i in range(3 * n_stories):
        words = rng.choice(noise_terms, 30, replace=False)
        rows += [i] * 31
        cols += [noise_terms + i // 3, *words.tolist()]
        vals += [3.0, *rng.uniform(0.5, 1.0, 30).tolist()]
    matrix = sp.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(3 * n_stories, noise_terms + n_stories))
    dense = rng.standard_normal((3 * n_stories, 8)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(8)
    index.add(dense)
    times = np.zeros(3 * n_stories)

    def mates_found(rare_candidates: int) -> float:
        corpus = Corpus(index=index, sparse=matrix, times=times, dense=dense)
        params = NeighbourParams(k=5, candidates=10, feedback=0, rare_candidates=rare_candidates, rare_max_df=0.05)
        ids, _ = build_neighbours(corpus, params, dense)
        story = np.arange(3 * n_stories) // 3
        return float(np.mean([(story[row[:2]] == story[i]).sum() for i, row in enumerate(ids)]))

    assert mates_found(0) < 0.5
    assert mates_found(20) == 2.0
