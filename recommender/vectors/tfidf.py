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

import contextlib
import multiprocessing
from array import array
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from index.segments import allocate
from recommender.vectors.analysis import AnalyzerSet
from recommender.config import ReduceConfig, TextConfig
from recommender.errors import RelatedError
from recommender.pipeline.progress import NO_BARS, Advance, Bars

TINY_CORPUS = 30  # below this many articles document-frequency pruning removes too much
STATE_ARRAYS = ("idf", "svd_projection", "svd_columns")  # the fitted arrays, saved as <name>.npy
COUNT_CHUNK = 200_000  # documents a process counts in one run (its arrays: about 1 GB at most)
PROGRESS_SECONDS = 0.5  # how often the bar of a parallel count is brought up to date
WEIGH_ROWS = 65_536  # rows weighed per block: bounds the float64 temporaries (1M articles: 0.2 GB, not 3 GB)
COUNT_BATCH = 2048  # documents whose tokens are looked up together
PARALLEL_MIN_DOCS = 5_000  # below this a process pool costs more than it saves


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


def lsa_components(
    matrix: sp.csr_matrix, dims: int, n_iter: int, rng: np.random.Generator, progress: Advance | None = None
) -> np.ndarray:
    """Top right singular vectors [dims, V] by randomized SVD (Halko et al. 2011).

    Same algorithm as scikit-learn's `randomized_svd`, but the final decomposition is an
    eigh of the small (dims+p)^2 Gram matrix instead of a dense SVD/QR over all V terms,
    which dominated build time at 100k articles.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # threaded BLAS on these thin matrices thrashes on a busy 2-core box
        return _lsa_components(matrix, dims, n_iter, rng, progress or (lambda done: None))


def _lsa_components(
    matrix: sp.csr_matrix, dims: int, n_iter: int, rng: np.random.Generator, progress: Advance
) -> np.ndarray:
    """Advances `progress` once per pass over the matrix (n_iter + 2 in all)."""
    width = min(dims + 10, min(matrix.shape))
    sketch = matrix @ rng.standard_normal((matrix.shape[1], width), dtype=np.float32)
    basis, _ = np.linalg.qr(sketch)
    progress(1)
    for _ in range(n_iter):
        basis, _ = np.linalg.qr(matrix @ (matrix.T @ basis))
        progress(1)
    projected = np.asarray((matrix.T @ basis).T, dtype=np.float64)  # [width, V]
    eigenvalues, eigenvectors = np.linalg.eigh(projected @ projected.T)
    order = np.argsort(eigenvalues)[::-1][:dims]
    singular = np.sqrt(np.clip(eigenvalues[order], 1e-12, None))
    components = (eigenvectors[:, order].T @ projected) / singular[:, None]
    progress(1)
    return components.astype(np.float32)


Forms = dict[str, dict[str, str]]  # language -> stem -> shortest word seen, languages in order of first appearance


def merge_forms(into: Forms, forms: Forms) -> None:
    """Add the surface forms of a later run of documents. Per language the shortest word of a stem
    wins, and languages keep their order of first appearance: any split of the corpus, merged in
    order, ends with the forms of one pass over it."""
    for lang, stems in forms.items():
        known = into.setdefault(lang, {})
        for stem, word in stems.items():
            best = known.get(stem)
            if best is None or (len(word), word) < (len(best), best):
                known[stem] = word


def shown_forms(forms: Forms) -> dict[str, str]:
    """Stem -> the word explanations show: from the first language seen with that stem."""
    shown: dict[str, str] = {}
    for stems in forms.values():
        for stem, word in stems.items():
            shown.setdefault(stem, word)
    return shown


class TermCounts(NamedTuple):
    """Raw term counts of a run of documents: alphabetical terms, one row per document (terms in
    column order), and the words seen for each stem."""

    terms: list[str]
    counts: sp.csr_matrix  # [documents, len(terms)] float32
    forms: Forms


@dataclass(frozen=True, slots=True)
class TermStatistics:
    """What the vocabulary and IDF are fitted on. Partitions' statistics add up to the corpus's,
    so a build that counts partitions on other machines fits what one process would."""

    documents: int
    terms: list[str]  # alphabetical
    df: np.ndarray  # int64: documents containing each term
    totals: np.ndarray  # float64: occurrences of each term (exact, for max_features)
    forms: Forms

    @classmethod
    def of(cls, counts: TermCounts) -> TermStatistics:
        width = len(counts.terms)
        df = np.bincount(counts.counts.indices, minlength=width)
        totals = np.bincount(counts.counts.indices, weights=counts.counts.data, minlength=width)
        return cls(counts.counts.shape[0], counts.terms, df.astype(np.int64), totals, counts.forms)

    @classmethod
    def merge(cls, parts: Sequence[TermStatistics]) -> TermStatistics:
        terms = sorted(set().union(*(p.terms for p in parts)))
        column = {t: i for i, t in enumerate(terms)}
        df = np.zeros(len(terms), dtype=np.int64)
        totals = np.zeros(len(terms), dtype=np.float64)
        forms: Forms = {}
        for part in parts:
            positions = np.fromiter((column[t] for t in part.terms), dtype=np.int64, count=len(part.terms))
            df[positions] += part.df  # a part names each term once
            totals[positions] += part.totals
            merge_forms(forms, part.forms)
        return cls(sum(p.documents for p in parts), terms, df, totals, forms)


def inverse_document_frequency(df: np.ndarray, documents: int) -> np.ndarray:
    """scikit-learn's smoothed IDF, ln((1 + n) / (1 + df)) + 1, in float32 with the operations of
    `TfidfTransformer.fit` on float32 counts (tests/test_tfidf.py holds them equal). Computed from
    document frequencies alone, because merged partitions have those and no count matrix."""
    idf = np.full(df.shape, documents + 1, dtype=np.float32)
    idf /= df.astype(np.float32) + 1.0
    np.log(idf, out=idf)
    idf += 1.0
    return idf


def count_documents(
    vectorizer: ArticleVectorizer, docs: Sequence[Document], progress: Advance | None = None
) -> TermCounts:
    """Term counts of `docs` (one process, or one partition of a Dask build): the counts of
    scikit-learn's `CountVectorizer(analyzer=vectorizer.analyze)`, columns alphabetical, each row's
    terms in column order (tests/test_tfidf.py holds them equal).

    Counted distinct token by distinct token, and looked up by hash a batch at a time: a
    document's tokens are counted first (`Counter`, a C loop over a small table); the batch's
    distinct tokens are then found by their hash in a sorted array of the tokens seen so far
    (numpy), and only new ones are analysed (stop words, stemming) into a term's column; tokens
    sharing a stem are summed by scipy. CountVectorizer's loop looks every term up in a Python
    dict of the whole vocabulary, a cache miss or three per term, which took half of the stage.
    `progress` advances by the documents of each batch.
    """
    columns = TokenColumns(vectorizer)
    indices: list[np.ndarray] = []
    values = array("q")
    sizes = array("q", [0])
    for start in range(0, len(docs), COUNT_BATCH):
        batch = docs[start : start + COUNT_BATCH]
        tokens: list[str] = []
        hashes = array("q")
        first = len(sizes)
        for doc in batch:
            counted = vectorizer.token_counts(doc)
            tokens.extend(counted)
            hashes.extend(map(hash, counted))  # while the strings are in the cache
            values.extend(counted.values())
            sizes.append(len(counted))
        indices.append(columns.of(batch, np.frombuffer(sizes, dtype=np.int64)[first:], tokens, np.frombuffer(hashes, np.int64)))
        if progress is not None:
            progress(len(batch))
    terms, alphabetical = columns.alphabetical()
    flat = np.concatenate(indices) if indices else np.empty(0, dtype=np.int64)
    kept = flat >= 0
    before = np.concatenate(([0], np.cumsum(kept)))  # kept entries before each position
    counts = sp.csr_matrix(
        (np.frombuffer(values, dtype=np.int64)[kept].astype(np.float32), alphabetical[flat[kept]],
         before[np.cumsum(np.frombuffer(sizes, dtype=np.int64))]),
        shape=(len(docs), len(terms)),
    )
    counts.sum_duplicates()  # sorts each row's columns, then adds up the counts of tokens with one stem
    return TermCounts(terms, counts, vectorizer.surface_forms())


class TokenColumns:
    """Each token seen -> the column of its term (-1: dropped), per language, for `count_documents`:
    kept as sorted token hashes beside their columns, so a batch of tokens is looked up in numpy.
    (Python's 64-bit string hashes: two tokens of one vocabulary sharing one is a 1e-8 chance at 1M.)"""

    def __init__(self, vectorizer: ArticleVectorizer) -> None:
        self.vectorizer = vectorizer
        self.columns: defaultdict[str, int] = defaultdict()
        self.columns.default_factory = self.columns.__len__  # a term not seen before takes the next column
        self.known: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # language -> sorted hashes, their columns

    def of(self, docs: Sequence[Document], sizes: np.ndarray, tokens: list[str], hashes: np.ndarray) -> np.ndarray:
        """The column of each token (`hashes`: their `hash`); `sizes[i]` of them are `docs[i]`'s."""
        langs = [doc.lang for doc in docs]
        if len(set(langs)) == 1:
            return self._lookup(langs[0], hashes, tokens)
        token_langs = np.repeat(np.array(langs, dtype=object), sizes)
        found = np.empty(len(tokens), dtype=np.int64)
        for lang in dict.fromkeys(langs):
            at = np.flatnonzero(token_langs == lang)
            found[at] = self._lookup(lang, hashes[at], [tokens[i] for i in at])
        return found

    def _lookup(self, lang: str, hashes: np.ndarray, tokens: list[str]) -> np.ndarray:
        unique, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
        known, known_columns = self.known.get(lang, (np.empty(0, np.int64), np.empty(0, np.int64)))
        at = np.searchsorted(known, unique)
        seen = at < len(known)
        seen[seen] = known[at[seen]] == unique[seen]
        found = np.empty(len(unique), dtype=np.int64)
        found[seen] = known_columns[at[seen]]
        new = np.flatnonzero(~seen)
        if len(new):
            terms = self.vectorizer.terms_of(lang, [tokens[i] for i in first[new]])
            found[new] = [self.columns[term] if term else -1 for term in terms]
            self.known[lang] = (np.insert(known, at[new], unique[new]), np.insert(known_columns, at[new], found[new]))
        return found[inverse]

    def alphabetical(self) -> tuple[list[str], np.ndarray]:
        """The terms in alphabetical order, and each column's place in it."""
        terms = sorted(self.columns)
        place = np.empty(len(terms), dtype=np.int64)
        place[np.fromiter(map(self.columns.__getitem__, terms), dtype=np.int64, count=len(terms))] = np.arange(len(terms))
        return terms, place


def merge_counts(parts: Sequence[TermCounts]) -> TermCounts:
    """Rows of all parts over the union of their terms, alphabetical (so the result does not depend
    on how the documents were split), each row's terms in column order."""
    terms = parts[0].terms if len(parts) == 1 else sorted(set().union(*(p.terms for p in parts)))
    column = {t: i for i, t in enumerate(terms)}
    blocks = []
    forms: Forms = {}
    for part_terms, counts, part_forms in parts:
        merge_forms(forms, part_forms)
        remap = np.array([column[t] for t in part_terms], dtype=np.int32)
        indices = remap[counts.indices] if len(part_terms) else counts.indices
        blocks.append(sp.csr_matrix((counts.data, indices, counts.indptr), shape=(counts.shape[0], len(terms))))
    return TermCounts(terms, sp.vstack(blocks).tocsr(), forms)  # alphabetical remaps keep rows sorted


# What forked workers inherit: the vectorizer, the documents, and the count of documents counted so far.
_SHARED: tuple[ArticleVectorizer, Sequence[Document], Any] | None = None


def _count_part(bounds: tuple[int, int]) -> TermCounts:
    assert _SHARED is not None
    vectorizer, docs, counted = _SHARED

    def advance(done: int) -> None:
        with counted.get_lock():
            counted.value += done

    return count_documents(vectorizer, docs[bounds[0] : bounds[1]], advance)


def count_terms(
    vectorizer: ArticleVectorizer, docs: Sequence[Document], workers: int, progress: Advance | None = None
) -> TermCounts:
    """Term counts of all documents and the surface form of each stem, split over forked processes
    (merge_counts gives the same result however the documents are split). Each process counts
    runs of up to `COUNT_CHUNK` documents (the vocabulary is learnt again in each, and merged); the
    bar follows the documents counted, which the processes add up in shared memory."""
    global _SHARED
    n = len(docs)
    processes = max(1, min(workers, n // PARALLEL_MIN_DOCS))
    if processes == 1:
        return count_documents(vectorizer, docs, progress)
    chunks = max(processes, -(-n // COUNT_CHUNK))
    bounds = [(n * i // chunks, n * (i + 1) // chunks) for i in range(chunks)]
    context = multiprocessing.get_context("fork")
    counted = context.Value("q", 0)
    _SHARED = (vectorizer, docs, counted)
    results: list[TermCounts] = []
    reported = 0
    try:
        with context.Pool(processes) as pool:
            pending = pool.imap(_count_part, bounds)
            while len(results) < chunks:
                with contextlib.suppress(multiprocessing.TimeoutError):
                    results.append(pending.next(timeout=PROGRESS_SECONDS))
                if progress is not None and counted.value > reported:
                    progress(counted.value - reported)
                    reported = counted.value
    finally:
        _SHARED = None
    return merge_counts(results)


class ArticleVectorizer:
    """Title-boosted, language-aware TF-IDF plus an LSA (randomized SVD) projection."""

    def __init__(self, text: TextConfig, reduce: ReduceConfig) -> None:
        self.text = text
        self.reduce = reduce
        self._analyzers = AnalyzerSet(
            stop_words=text.stop_words, stemming=text.stemming, ngram_max=text.ngram_max,
            name_weight=text.name_weight, numbers=text.numbers,
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

    def token_counts(self, doc: Document) -> Counter[str]:
        """The document's tokens counted, the title's `title_weight` times (`count_documents`): with
        unigrams the words before stop words and stemming, so that each distinct one is stemmed
        once (`terms_of`); with n-grams `analyze`'s terms."""
        if self.text.ngram_max > 1:
            return Counter(self.analyze(doc))
        analyzer = self._analyzers[doc.lang]
        counted = Counter(analyzer.tokens(doc.body))
        if doc.title:
            title = analyzer.tokens(doc.title)
            for _ in range(self.text.title_weight):
                counted.update(title)
        return counted

    def terms_of(self, lang: str, tokens: Collection[str]) -> list[str]:
        """The term each of `token_counts`' tokens counts for, "" for one that is dropped."""
        return list(tokens) if self.text.ngram_max > 1 else self._analyzers[lang].stems(tokens)

    def surface_forms(self) -> Forms:
        return self._analyzers.surface_forms()

    def words(self, lang: str, text: str) -> list[str]:
        """Stemmed words of a text, as the vocabulary spells them (for explanations)."""
        return self._analyzers[lang].words(text)

    # -- fit / transform ------------------------------------------------------------
    def fit_transform(self, docs: Sequence[Document], workers: int = 1, bars: Bars = NO_BARS) -> Vectors:
        """Learn vocabulary, IDF and the LSA projection; `workers` processes share the counting."""
        with bars("vectorize", len(docs)) as advance:
            counts = count_terms(self, docs, workers, advance)
        self.fit_vocabulary(TermStatistics.of(counts))
        sparse = self.weigh(counts)
        del counts  # all terms' counts (GBs at 1M articles) are not needed by the reduction
        return Vectors(sparse=sparse, dense=self.fit_reduce(sparse, bars))

    def fit_vocabulary(self, stats: TermStatistics) -> None:
        """Vocabulary (min_df, max_df, max_features) and IDF from document frequencies."""
        n = stats.documents
        tiny = n < TINY_CORPUS
        min_df = 1 if tiny else self.text.min_df
        max_df = n if tiny else self.text.max_df * n
        keep = np.flatnonzero((stats.df >= min_df) & (stats.df <= max_df))
        if self.text.max_features is not None and len(keep) > self.text.max_features:
            keep = keep[np.argsort(-stats.totals[keep], kind="stable")[: self.text.max_features]]
        if len(keep) == 0:
            raise RelatedError(
                f"cannot build a vocabulary from this corpus: no term is in at least {min_df} and at most "
                f"{max_df:.0f} of {n} articles"
            )
        keep = np.sort(keep)  # the terms are alphabetical, like scikit-learn's
        self.terms_ = [stats.terms[i] for i in keep]
        shown = shown_forms(stats.forms)
        self.display_ = [" ".join(shown.get(word, word) for word in term.split(" ")) for term in self.terms_]
        self.idf_ = inverse_document_frequency(stats.df[keep], n)
        self._make_transformers()

    def weigh(self, counts: TermCounts) -> sp.csr_matrix:
        """TF-IDF rows of counted documents over the fitted vocabulary (other terms dropped), by
        scikit-learn's `TfidfTransformer` with the fitted IDF. Row by row, so partitions weighed
        apart stack to the rows of the whole corpus."""
        from sklearn.feature_extraction.text import TfidfTransformer

        column = self._column
        if column is None:
            raise RuntimeError("vectorizer is not fitted")
        positions = np.fromiter((column.get(t, -1) for t in counts.terms), dtype=np.int64, count=len(counts.terms))
        known = np.flatnonzero(positions >= 0)
        weighting = TfidfTransformer(sublinear_tf=self.text.sublinear_tf)
        weighting.idf_ = self.idf_
        n = counts.counts.shape[0]
        if n == 0:
            return sp.csr_matrix((0, len(self.terms_)), dtype=np.float32)
        blocks = []
        for start in range(0, n, WEIGH_ROWS):  # the transformer's float64 temporaries stay a block's size
            selected = counts.counts[start : start + WEIGH_ROWS][:, known]
            matrix = sp.csr_matrix(
                (selected.data, positions[known][selected.indices], selected.indptr),
                shape=(selected.shape[0], len(self.terms_)),
            )
            blocks.append(weighting.transform(matrix).astype(np.float32).tocsr())
        return blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr", dtype=np.float32)

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

    @property
    def vocabulary(self) -> Mapping[str, int]:
        """Term -> column of the fitted vocabulary."""
        if self._column is None:
            raise RuntimeError("vectorizer is not fitted")
        return self._column

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

    def fit_reduce(self, sparse: sp.csr_matrix, bars: Bars = NO_BARS) -> np.ndarray:
        """Fit the LSA projection (on a seeded sample past `svd_fit_sample` rows) and project every row."""
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
        with bars("svd", self.reduce.n_iter + 2, unit="pass") as advance:
            self.components_ = lsa_components(sample, dims, self.reduce.n_iter, rng, advance)
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
