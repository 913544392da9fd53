"""TF-IDF (sparse, exact) and LSA (dense, for FAISS) vectors of articles.

Wraps scikit-learn rather than re-implementing it: `TfidfVectorizer` learns the vocabulary
and IDF at build time; updates and drafts reuse them through `transform` without refitting.
Learned state ends with `_` and is saved as JSON and `.npy`, never pickled.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.preprocessing import normalize

from recommender.analysis import AnalyzerSet
from recommender.config import ReduceConfig, TextConfig
from recommender.errors import RelatedError

TINY_CORPUS = 30  # below this many articles document-frequency pruning removes too much


@dataclass(frozen=True, slots=True)
class Document:
    """What the vectorizer sees of an article: its language and its two text fields."""

    lang: str
    title: str
    body: str


@dataclass(frozen=True, slots=True)
class Vectors:
    sparse: sp.csr_matrix  # [N, V] float32, rows L2-normalized
    dense: np.ndarray  # [N, dims] float32, rows L2-normalized


class ArticleVectorizer:
    """Title-boosted, language-aware TF-IDF plus a TruncatedSVD projection."""

    def __init__(self, text: TextConfig, reduce: ReduceConfig) -> None:
        self.text = text
        self.reduce = reduce
        self._analyzers = AnalyzerSet(
            stop_words=text.stop_words, stemming=text.stemming, ngram_max=text.ngram_max
        )
        self.terms_: list[str] = []
        self.idf_: np.ndarray = np.empty(0, np.float32)
        self.svd_columns_: np.ndarray = np.empty(0, np.int32)
        self.components_: np.ndarray = np.empty((0, 0), np.float32)
        self._counter: CountVectorizer | None = None
        self._weighting: TfidfTransformer | None = None

    # -- analysis -----------------------------------------------------------------
    def analyze(self, doc: Document) -> list[str]:
        analyzer = self._analyzers[doc.lang]
        title = analyzer.terms(doc.title) if doc.title else []
        return title * self.text.title_weight + analyzer.terms(doc.body)

    def words(self, lang: str, text: str) -> list[str]:
        """Stemmed words of a text, as the vocabulary spells them (for explanations)."""
        return self._analyzers[lang].words(text)

    # -- fit / transform ------------------------------------------------------------
    def fit_transform(self, docs: Sequence[Document]) -> Vectors:
        n = len(docs)
        tiny = n < TINY_CORPUS
        vectorizer = TfidfVectorizer(
            analyzer=self.analyze,
            min_df=1 if tiny else self.text.min_df,
            max_df=1.0 if tiny else self.text.max_df,
            max_features=self.text.max_features,
            sublinear_tf=self.text.sublinear_tf,
            dtype=np.float32,
        )
        try:
            sparse = vectorizer.fit_transform(docs).tocsr()
        except ValueError as err:  # "empty vocabulary" and friends: the corpus has no usable words
            raise RelatedError(f"cannot build a vocabulary from this corpus: {err}") from None
        self.terms_ = vectorizer.get_feature_names_out().tolist()
        self.idf_ = vectorizer.idf_.astype(np.float32)
        self._make_transformers()
        dense = self._fit_reduce(sparse)
        return Vectors(sparse=sparse.astype(np.float32), dense=dense)

    def transform(self, docs: Sequence[Document]) -> Vectors:
        if self._counter is None or self._weighting is None:
            raise RuntimeError("vectorizer is not fitted")
        counts = self._counter.transform(docs)
        sparse = self._weighting.transform(counts).astype(np.float32).tocsr()
        return Vectors(sparse=sparse, dense=self.project(sparse))

    def project(self, sparse: sp.csr_matrix) -> np.ndarray:
        """Dense LSA vectors: SVD projection of the most frequent terms, L2-normalized."""
        dense = np.asarray(sparse[:, self.svd_columns_] @ self.components_.T, dtype=np.float32)
        return np.ascontiguousarray(normalize(dense), dtype=np.float32)

    def _make_transformers(self) -> None:
        self._counter = CountVectorizer(
            analyzer=self.analyze, vocabulary={t: i for i, t in enumerate(self.terms_)}, dtype=np.float32
        )
        self._weighting = TfidfTransformer(sublinear_tf=self.text.sublinear_tf)
        self._weighting.idf_ = self.idf_.astype(np.float64)

    def _fit_reduce(self, sparse: sp.csr_matrix) -> np.ndarray:
        n, v = sparse.shape
        # Most frequent terms carry the topical signal LSA captures; the rare ones stay in the sparse score.
        df = np.bincount(sparse.indices, minlength=v)
        keep = min(v, self.reduce.svd_max_features)
        self.svd_columns_ = np.sort(np.argsort(-df, kind="stable")[:keep]).astype(np.int32)
        reduced = sparse[:, self.svd_columns_]
        rng = np.random.default_rng(self.reduce.seed)
        sample = reduced
        if n > self.reduce.svd_fit_sample:
            sample = reduced[np.sort(rng.choice(n, self.reduce.svd_fit_sample, replace=False))]
        dims = max(1, min(self.reduce.dims, sample.shape[0] - 1, keep - 1))
        svd = TruncatedSVD(n_components=dims, n_iter=self.reduce.n_iter, random_state=self.reduce.seed)
        svd.fit(sample)
        self.components_ = svd.components_.astype(np.float32)
        dense = np.asarray(reduced @ self.components_.T, dtype=np.float32)
        return np.ascontiguousarray(normalize(dense), dtype=np.float32)

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Vocabulary (JSON) and arrays (`.npy`) that `from_state` restores."""
        arrays = {"idf": self.idf_, "svd_components": self.components_, "svd_columns": self.svd_columns_}
        return self.terms_, arrays

    @classmethod
    def from_state(
        cls, text: TextConfig, reduce: ReduceConfig, terms: list[str], arrays: dict[str, np.ndarray]
    ) -> ArticleVectorizer:
        vectorizer = cls(text, reduce)
        vectorizer.terms_ = list(terms)
        vectorizer.idf_ = np.asarray(arrays["idf"], dtype=np.float32)
        vectorizer.components_ = np.asarray(arrays["svd_components"], dtype=np.float32)
        vectorizer.svd_columns_ = np.asarray(arrays["svd_columns"], dtype=np.int32)
        vectorizer._make_transformers()
        return vectorizer
