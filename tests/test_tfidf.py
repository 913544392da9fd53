"""ArticleVectorizer: title boost, fit/transform agreement, state round trip, LSA, parallel counting."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import recommender.vectors.tfidf as tfidf
from recommender.config import ReduceConfig, TextConfig
from recommender.errors import RelatedError
from recommender.vectors.tfidf import (
    ArticleVectorizer, Document, TermStatistics, count_documents, count_terms, inverse_document_frequency, lsa_components,
)
from tests.corpora import stories

TEXT = TextConfig()
REDUCE = ReduceConfig(dims=8)


def docs_of(records: list[dict]) -> list[Document]:
    return [Document(lang=r["lang"], title=r["title"], body=r["body"]) for r in records]


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return docs_of(stories(size=4))  # 32 articles: above the tiny-corpus threshold, so min_df applies


@pytest.fixture(scope="module")
def fitted(docs):
    vectorizer = ArticleVectorizer(TEXT, REDUCE)
    return vectorizer, vectorizer.fit_transform(docs)


def weight(vectorizer: ArticleVectorizer, row: sp.csr_matrix, word: str) -> float:
    return float(row[0, vectorizer.terms_.index(word)])


def test_term_only_in_title_weighs_more_than_only_in_body():
    filler = [Document("en", f"Harbour story {w}", f"harbour ferry quay {w} tide") for w in ("gull", "crab", "kelp")]
    in_title = Document("en", "Zeppelin harbour", "ferry quay tide")
    in_body = Document("en", "Harbour", "zeppelin ferry quay tide")
    vectorizer = ArticleVectorizer(TEXT, REDUCE)
    sparse = vectorizer.fit_transform([in_title, in_body, *filler]).sparse
    assert weight(vectorizer, sparse[0], "zeppelin") > weight(vectorizer, sparse[1], "zeppelin")


def test_name_weight_lifts_a_name_and_drafts_get_the_stored_row():
    filler = [Document("en", f"Harbour story {w}", f"harbour ferry quay {w} tide") for w in ("gull", "crab", "kelp")]
    named = Document("en", "Harbour", "the ferry met Zeppelin at the quay. zeppelin tide")
    rows = {}
    for name_weight in (1, 3):
        vectorizer = ArticleVectorizer(TextConfig(name_weight=name_weight), REDUCE)
        sparse = vectorizer.fit_transform([named, named, *filler]).sparse
        assert vectorizer.transform([named]).sparse[0].toarray() == pytest.approx(sparse[0].toarray(), abs=1e-6)
        rows[name_weight] = weight(vectorizer, sparse[0], "zeppelin")
    assert rows[3] > rows[1]


def test_rows_are_l2_normalized_float32(fitted):
    _, vectors = fitted
    assert vectors.sparse.dtype == np.float32 and vectors.dense.dtype == np.float32
    np.testing.assert_allclose(sp.linalg.norm(vectors.sparse, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors.dense, axis=1), 1.0, atol=1e-5)
    assert vectors.dense.shape == (vectors.sparse.shape[0], REDUCE.dims)


def test_vocabulary_drops_rare_and_ubiquitous_terms(fitted, docs):
    vectorizer, _ = fitted
    assert vectorizer.terms_ == sorted(vectorizer.terms_)
    analyzed = [set(vectorizer.analyze(d)) for d in docs]
    for term in vectorizer.terms_:
        df = sum(term in terms for terms in analyzed)
        assert 2 <= df <= 0.5 * len(docs)


def test_transform_after_state_round_trip_equals_fit_transform(fitted, docs):
    vectorizer, vectors = fitted
    terms, arrays = vectorizer.state()
    restored = ArticleVectorizer.from_state(TEXT, REDUCE, list(terms), {k: np.array(v) for k, v in arrays.items()})
    again = restored.transform(docs[:5])
    for i in range(5):
        a, b = again.sparse[i], vectors.sparse[i]
        assert float(a.multiply(b).sum()) == pytest.approx(1.0, abs=1e-5)
        assert float(again.dense[i] @ vectors.dense[i]) == pytest.approx(1.0, abs=1e-4)


def test_transform_unseen_text_ignores_unknown_words(fitted):
    vectorizer, _ = fitted
    vectors = vectorizer.transform([Document("en", "Zzyzx qwertyuiop", "flood levee sandbags")])
    assert vectors.sparse.nnz == 3  # the known stems of flood, levee, sandbags


def test_transform_before_fit_raises():
    with pytest.raises(RuntimeError):
        ArticleVectorizer(TEXT, REDUCE).transform([Document("en", "a", "b")])


def test_no_vocabulary_is_a_related_error():
    docs = [Document("en", "the", "and of")] * 3
    with pytest.raises(RelatedError, match="vocabulary"):
        ArticleVectorizer(TEXT, REDUCE).fit_transform(docs)


def test_lsa_components_span_the_top_singular_vectors():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((60, 4)) * np.array([8.0, 5.0, 3.0, 2.0])
    matrix = sp.csr_matrix((basis @ rng.standard_normal((4, 40)) + 0.01 * rng.standard_normal((60, 40))).astype(np.float32))
    components = lsa_components(matrix, 3, 3, np.random.default_rng(1))
    assert components.shape == (3, 40) and components.dtype == np.float32
    _, _, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
    for i in range(3):
        assert abs(float(components[i] @ vt[i])) == pytest.approx(1.0, abs=1e-3)


MIXED = [
    Document("en", "Harbour ferry strike", "The ferry crews struck; ferries stayed in the harbour. A strike, strikes."),
    Document("de", "Die Wahlen in Berlin", "Die Wahl: Wahlen, gewählt. Die Fähre und der Hafen."),
    Document("fr", "L'armée à Paris", "L'armée de l'air et les armées, dell'Italia. Le port."),
    Document("en", "", "die harbour die ferry 2024 3rd"),
    Document("xx", "Zeppelin", "zeppelin zeppelins a b"),
    Document("en", "The", "the a of"),  # nothing counts
]


@pytest.mark.parametrize("text", [TEXT, TextConfig(ngram_max=2), TextConfig(name_weight=3, numbers=True, stemming=False)])
def test_counts_are_scikit_learns_count_vectorizer(monkeypatch, docs, text):
    """count_documents replaces CountVectorizer(analyzer=analyze): the same terms and the same
    counts, in batches of any size, with languages mixed within a batch."""
    from sklearn.feature_extraction.text import CountVectorizer

    corpus = MIXED + docs + MIXED
    reference = CountVectorizer(analyzer=ArticleVectorizer(text, REDUCE).analyze, dtype=np.float32)
    expected = reference.fit_transform(corpus)
    for batch in (3, 1000):
        monkeypatch.setattr(tfidf, "COUNT_BATCH", batch)
        counted: list[int] = []
        counts = count_documents(ArticleVectorizer(text, REDUCE), corpus, progress=counted.append)
        assert counts.terms == reference.get_feature_names_out().tolist()
        assert counts.counts.has_sorted_indices and counts.counts.dtype == np.float32
        assert (counts.counts != expected).nnz == 0
        assert sum(counted) == len(corpus)


def test_parallel_counting_equals_single_process(monkeypatch, docs):
    vectorizer = ArticleVectorizer(TEXT, REDUCE)
    terms_1, counts_1, *_ = count_terms(vectorizer, docs, workers=1)
    monkeypatch.setattr(tfidf, "PARALLEL_MIN_DOCS", 8)
    monkeypatch.setattr(tfidf, "COUNT_CHUNK", 5)  # several runs per process
    counted: list[int] = []
    terms_2, counts_2, *_ = count_terms(vectorizer, docs, workers=2, progress=counted.append)
    assert sum(counted) == len(docs)

    def as_dicts(terms, counts):
        return [{terms[j]: v for j, v in zip(counts[i].indices, counts[i].data)} for i in range(counts.shape[0])]

    assert sorted(terms_1) == sorted(terms_2)
    assert as_dicts(terms_1, counts_1) == as_dicts(terms_2, counts_2)


def test_idf_from_document_frequencies_is_scikit_learns(docs):
    from sklearn.feature_extraction.text import TfidfTransformer

    counts = count_terms(ArticleVectorizer(TEXT, REDUCE), docs, workers=1).counts
    expected = TfidfTransformer().fit(counts).idf_
    got = inverse_document_frequency(np.bincount(counts.indices, minlength=counts.shape[1]), counts.shape[0])
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_array_equal(got, expected)


def test_partitions_counted_apart_fit_what_the_whole_corpus_fits(fitted, docs):
    """What a Dask build does: statistics of partitions merged, then each partition weighed on its own."""
    whole, vectors = fitted
    split = ArticleVectorizer(TEXT, REDUCE)
    parts = [count_documents(split, docs[lo:hi]) for lo, hi in ((0, 5), (5, 5), (5, 19), (19, len(docs)))]
    split.fit_vocabulary(TermStatistics.merge([TermStatistics.of(p) for p in parts]))
    assert split.terms_ == whole.terms_ and split.display_ == whole.display_
    np.testing.assert_array_equal(split.idf_, whole.idf_)
    rows = sp.vstack([split.weigh(p) for p in parts]).tocsr()
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(vectors.sparse, name))


@pytest.mark.parametrize("sublinear", [True, False])
def test_transform_is_scikit_learns_arithmetic_bit_for_bit(docs, sublinear):
    """transform re-does CountVectorizer + TfidfTransformer (to keep sklearn out of `related update`):
    the rows must be identical, or a re-sent article would not be recognised as unchanged."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    text = TextConfig(sublinear_tf=sublinear)
    vectorizer = ArticleVectorizer(text, REDUCE)
    fitted_rows = vectorizer.fit_transform(docs).sparse
    drafts = docs + [Document("en", "", "nothing known here"), Document("de", "Harbour", "harbour " * 40)]
    counter = CountVectorizer(analyzer=vectorizer.analyze, vocabulary={t: i for i, t in enumerate(vectorizer.terms_)},
                              dtype=np.float32)
    weighting = TfidfTransformer(sublinear_tf=sublinear)
    weighting.idf_ = vectorizer.idf_.astype(np.float64)
    expected = weighting.transform(counter.transform(drafts)).astype(np.float32).tocsr()
    got = vectorizer.transform(drafts).sparse
    for a, b in ((got, expected), (got[: len(docs)], fitted_rows)):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
    assert got[len(docs)].nnz == 0


def test_dense_rows_are_normalized_like_scikit_learn(fitted, docs):
    from sklearn.preprocessing import normalize

    vectorizer, _ = fitted
    raw = np.asarray(vectorizer.transform(docs).sparse[:, vectorizer.svd_columns_] @ vectorizer.components_.T,
                     dtype=np.float32)
    np.testing.assert_array_equal(tfidf.l2_dense(raw), normalize(raw))


def test_weighing_in_blocks_gives_the_rows_of_one_block(fitted, docs, monkeypatch):
    vectorizer, vectors = fitted
    counts = count_terms(vectorizer, docs, workers=1)
    monkeypatch.setattr(tfidf, "WEIGH_ROWS", 5)  # 32 articles: 7 blocks, the last one short
    blocked = vectorizer.weigh(counts)
    assert blocked.dtype == np.float32 and blocked.shape == vectors.sparse.shape
    assert (blocked != vectors.sparse).nnz == 0
