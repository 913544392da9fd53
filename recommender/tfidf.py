"""TF-IDF (sparse, exact) and LSA (dense, for FAISS) vectors of articles.

Wraps scikit-learn for learning: `CountVectorizer` and `TfidfTransformer` learn the vocabulary
and IDF at build time; updates and drafts reuse them through `transform` without refitting.
Learned state ends with `_` and is saved as JSON and `.npy`, never pickled.

`transform` is the one place that does scikit-learn's arithmetic itself (counts -> sublinear
tf -> x idf -> L2, bit for bit the same: tests/test_tfidf.py checks it): importing scikit-learn
takes about 2 s, which would be most of a one-article `related update`. So scikit-learn is
imported only where something is fitted.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from index.segments import allocate
from recommender.analysis import AnalyzerSet
from recommender.config import ReduceConfig, TextConfig
from recommender.errors import RelatedError

TINY_CORPUS = 30
STATE_ARRAYS = ("idf", "svd_projection", "svd_columns")  # the fitted arrays, saved as <name>.npy
PARALLEL_MIN_DOCS = 5_000  # below this a process pool costs more than it saves  # below this many articles document-frequency pruning removes too much


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


def l2_rows(sparse: sp.csr_matrix) -> None:
    """Scale each row to unit length in place, with the float operations of scikit-learn's
    `normalize` (its Cython loop: float32 squares summed in order in a double, the division in
    double, rounded to float32); empty rows stay empty."""
    data, indptr = sparse.data, sparse.indptr
    squares = (data * data).astype(np.float64)
    for row in range(sparse.shape[0]):
        lo, hi = indptr[row], indptr[row + 1]
        if hi > lo:
            total = np.cumsum(squares[lo:hi])[-1]  # accumulate adds in order, like the C loop
            if total != 0.0:
                data[lo:hi] = data[lo:hi].astype(np.float64) / np.sqrt(total)


def l2_dense(dense: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as scikit-learn's `normalize` computes them."""
    norms = np.sqrt(np.einsum("ij,ij->i", dense, dense))
    norms[norms == 0.0] = 1.0
    return dense / norms[:, np.newaxis]


def lsa_components(matrix: sp.csr_matrix, dims: int, n_iter: int, rng: np.random.Generator) -> np.ndarray:
    """Top right singular vectors [dims, V] by randomized SVD (Halko et al. 2011).

    Same algorithm as scikit-learn's `randomized_svd`, but the final decomposition is an
    eigh of the small (dims+p)^2 Gram matrix instead of a dense SVD/QR over all V terms,
    which dominated build time at 100k articles.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # threaded BLAS on these thin matrices thrashes on a busy 2-core box
        return _lsa_components(matrix, dims, n_iter, rng)


def _lsa_components(matrix: sp.csr_matrix, dims: int, n_iter: int, rng: np.random.Generator) -> np.ndarray:
    width = min(dims + 10, min(matrix.shape))
    sketch = matrix @ rng.standard_normal((matrix.shape[1], width), dtype=np.float32)
    basis, _ = np.linalg.qr(sketch)
    for _ in range(n_iter):
        basis, _ = np.linalg.qr(matrix @ (matrix.T @ basis))
    projected = np.asarray((matrix.T @ basis).T, dtype=np.float64)  # [width, V]
    eigenvalues, eigenvectors = np.linalg.eigh(projected @ projected.T)
    order = np.argsort(eigenvalues)[::-1][:dims]
    singular = np.sqrt(np.clip(eigenvalues[order], 1e-12, None))
    components = (eigenvectors[:, order].T @ projected) / singular[:, None]
    return components.astype(np.float32)


_SHARED: tuple[ArticleVectorizer, Sequence[Document]] | None = None  # inherited by forked workers


def _count_part(bounds: tuple[int, int]) -> tuple[list[str], sp.csr_matrix, dict[str, str]]:
    from sklearn.feature_extraction.text import CountVectorizer

    assert _SHARED is not None
    vectorizer, docs = _SHARED
    counter = CountVectorizer(analyzer=vectorizer.analyze, dtype=np.float32)
    part = docs[bounds[0] : bounds[1]]
    if not any(vectorizer.analyze(doc) for doc in part):
        # CountVectorizer raises a bare ValueError on an empty vocabulary; fit_transform reports it readably.
        return [], sp.csr_matrix((len(part), 0), dtype=np.float32), {}
    counts = counter.fit_transform(part).tocsr()
    return counter.get_feature_names_out().tolist(), counts, vectorizer.surface_forms()


def count_terms(
    vectorizer: ArticleVectorizer, docs: Sequence[Document], workers: int
) -> tuple[list[str], sp.csr_matrix, dict[str, str]]:
    """Term counts of all documents and the surface form of each stem; analysis (the
    Python-heavy part) split over forked processes."""
    global _SHARED
    n = len(docs)
    parts = max(1, min(workers, n // PARALLEL_MIN_DOCS))
    bounds = [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]
    _SHARED = (vectorizer, docs)
    try:
        if parts == 1:
            results = [_count_part(bounds[0])]
        else:
            with multiprocessing.get_context("fork").Pool(parts) as pool:
                results = pool.map(_count_part, bounds)
    finally:
        _SHARED = None
    column: dict[str, int] = {}
    blocks = []
    forms: dict[str, str] = {}
    for terms, counts, part_forms in results:
        for stem, word in part_forms.items():
            best = forms.get(stem)
            if best is None or (len(word), word) < (len(best), best):
                forms[stem] = word
        remap = np.array([column.setdefault(t, len(column)) for t in terms], dtype=np.int32)
        blocks.append((remap[counts.indices] if len(terms) else counts.indices, counts))
    merged = sp.vstack(
        [sp.csr_matrix((c.data, idx, c.indptr), shape=(c.shape[0], len(column))) for idx, c in blocks]
    ).tocsr()
    merged.sum_duplicates()
    return list(column), merged, forms


class ArticleVectorizer:
    """Title-boosted, language-aware TF-IDF plus an LSA (randomized SVD) projection."""

    def __init__(self, text: TextConfig, reduce: ReduceConfig) -> None:
        self.text = text
        self.reduce = reduce
        self._analyzers = AnalyzerSet(
            stop_words=text.stop_words, stemming=text.stemming, ngram_max=text.ngram_max
        )
        self.terms_: list[str] = []
        self.display_: list[str] = []  # readable form of each term, for explanations
        self.idf_: np.ndarray = np.empty(0, np.float32)
        self.svd_columns_: np.ndarray = np.empty(0, np.int32)
        self.components_: np.ndarray = np.empty((0, 0), np.float32)
        self._projection: np.ndarray | None = None  # components_.T, C-contiguous
        self._column: dict[str, int] | None = None  # term -> column, for transform
        self._idf64: np.ndarray = np.empty(0, np.float64)  # scikit-learn weights with float64 idf

    # -- analysis -----------------------------------------------------------------
    def analyze(self, doc: Document) -> list[str]:
        analyzer = self._analyzers[doc.lang]
        title = analyzer.terms(doc.title) if doc.title else []
        return title * self.text.title_weight + analyzer.terms(doc.body)

    def surface_forms(self) -> dict[str, str]:
        return self._analyzers.surface_forms()

    def words(self, lang: str, text: str) -> list[str]:
        """Stemmed words of a text, as the vocabulary spells them (for explanations)."""
        return self._analyzers[lang].words(text)

    # -- fit / transform ------------------------------------------------------------
    def fit_transform(self, docs: Sequence[Document], workers: int = 1) -> Vectors:
        """Learn vocabulary, IDF and the LSA projection; `workers` processes share the counting."""
        n = len(docs)
        tiny = n < TINY_CORPUS
        terms, counts, forms = count_terms(self, docs, workers)
        df = np.bincount(counts.indices, minlength=len(terms))
        min_df = 1 if tiny else self.text.min_df
        max_df = n if tiny else self.text.max_df * n
        keep = np.flatnonzero((df >= min_df) & (df <= max_df))
        if self.text.max_features is not None and len(keep) > self.text.max_features:
            totals = np.asarray(counts.sum(axis=0)).ravel()[keep]
            keep = keep[np.argsort(-totals, kind="stable")[: self.text.max_features]]
        if len(keep) == 0:
            raise RelatedError(
                f"cannot build a vocabulary from this corpus: no term is in at least {min_df} and at most "
                f"{max_df:.0f} of {n} articles"
            )
        keep = keep[np.argsort(np.asarray(terms, dtype=object)[keep])]  # alphabetical, like scikit-learn
        self.terms_ = [terms[i] for i in keep]
        self.display_ = [" ".join(forms.get(word, word) for word in term.split(" ")) for term in self.terms_]
        from sklearn.feature_extraction.text import TfidfTransformer

        weighting = TfidfTransformer(sublinear_tf=self.text.sublinear_tf)
        sparse = weighting.fit_transform(counts[:, keep]).astype(np.float32).tocsr()
        self.idf_ = weighting.idf_.astype(np.float32)
        self._make_transformers()
        return Vectors(sparse=sparse, dense=self._fit_reduce(sparse))

    def transform(self, docs: Sequence[Document], analysed: Sequence[list[str]] | None = None) -> Vectors:
        """TF-IDF rows with the fitted vocabulary (unknown terms ignored) and their LSA vectors.

        `analysed`: the docs' terms (`analyze`) when the caller needs them too, so they are not computed twice.

        What `CountVectorizer(vocabulary=...).transform` then `TfidfTransformer.transform` compute,
        in the same order of float operations, so a re-sent article gets exactly its stored row.
        """
        column = self._column
        if column is None:
            raise RuntimeError("vectorizer is not fitted")
        indices: list[int] = []
        values: list[int] = []
        indptr = [0]
        for terms in analysed if analysed is not None else map(self.analyze, docs):
            counts: dict[int, int] = {}
            for term in terms:
                idx = column.get(term)
                if idx is not None:
                    counts[idx] = counts.get(idx, 0) + 1
            for idx in sorted(counts):
                indices.append(idx)
                values.append(counts[idx])
            indptr.append(len(indices))
        data = np.asarray(values, dtype=np.float32)
        cols = np.asarray(indices, dtype=np.int32)
        if self.text.sublinear_tf:
            np.log(data, out=data)
            data += 1.0
        data *= self._idf64[cols]  # float64 product, stored as float32
        sparse = sp.csr_matrix(
            (data, cols, np.asarray(indptr, dtype=np.int32)), shape=(len(indptr) - 1, len(self.terms_))
        )
        l2_rows(sparse)
        return Vectors(sparse, self.project(sparse))

    def project(self, sparse: sp.csr_matrix) -> np.ndarray:
        """Dense LSA vectors: the SVD projection of the most frequent terms, L2-normalized."""
        return self._project(sparse[:, self.svd_columns_])

    def _projection_matrix(self) -> np.ndarray:
        """components_.T, C-contiguous: scipy would copy a transposed view per product."""
        if self._projection is None:
            self._projection = allocate(self.components_.T.shape, np.float32)  # page-faulting 50 MB costs more than copying it
            self._projection[...] = self.components_.T
        return self._projection

    def _project(self, reduced: sp.csr_matrix) -> np.ndarray:
        dense = np.asarray(reduced @ self._projection_matrix(), dtype=np.float32)
        return np.ascontiguousarray(l2_dense(dense), dtype=np.float32)

    def _make_transformers(self) -> None:
        self._column = {t: i for i, t in enumerate(self.terms_)}
        self._idf64 = self.idf_.astype(np.float64)

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
        self.components_ = lsa_components(sample, dims, self.reduce.n_iter, rng)
        self._projection = None
        return self._project(reduced)

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Vocabulary (JSON) and arrays (`.npy`) that `from_state` restores."""
        arrays = {"idf": self.idf_, "svd_projection": self._projection_matrix(), "svd_columns": self.svd_columns_}
        return self.terms_, arrays

    @classmethod
    def from_state(
        cls, text: TextConfig, reduce: ReduceConfig, terms: list[str], arrays: dict[str, np.ndarray]
    ) -> ArticleVectorizer:
        vectorizer = cls(text, reduce)
        vectorizer.terms_ = list(terms)
        vectorizer.idf_ = np.asarray(arrays["idf"], dtype=np.float32)
        # Stored transposed, as `_project` multiplies: a memory-mapped file is used as it is, so
        # every process shares it instead of holding a transposed copy of its own.
        vectorizer._projection = np.asarray(arrays["svd_projection"], dtype=np.float32)
        vectorizer.components_ = vectorizer._projection.T
        vectorizer.svd_columns_ = np.asarray(arrays["svd_columns"], dtype=np.int32)
        vectorizer._make_transformers()
        return vectorizer
