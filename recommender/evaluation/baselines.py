"""Reference rankers the pipeline has to beat: exact TF-IDF cosine and BM25.

Both see the same validated articles as the pipeline (title and body cleaned by
`recommender.pipeline.articles`), rank every other article for a query article, and never return the
query itself. They are deliberately plain: no SVD, no FAISS, no policy.

- `TfidfCosine`: scikit-learn `TfidfVectorizer` (sublinear tf, English stop words) over
  "title body", exact cosine against all articles.
- `BM25`: bm25s (Lucene variant, k1=1.5, b=0.75, English stop words) over "title body"; the
  query is the title plus the first `query_words` words of the body.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import bm25s
import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from sklearn.feature_extraction.text import TfidfVectorizer

from recommender.pipeline.articles import Article

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at DEBUG


class TfidfCosineParams(BaseModel):
    """Parameters of the exact TF-IDF cosine baseline (the `[params]` table of its config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sublinear_tf: bool = True
    stop_words: Literal["english", "none"] = "english"
    min_df: int = Field(1, ge=1)
    ngram_max: int = Field(1, ge=1, le=3)


class BM25Params(BaseModel):
    """Parameters of the BM25 baseline (the `[params]` table of its config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    k1: float = Field(1.5, gt=0.0)
    b: float = Field(0.75, ge=0.0, le=1.0)
    query_words: int = Field(300, ge=1, description="Query = title + this many first words of the body.")
    stop_words: Literal["english", "none"] = "english"


def article_text(article: Article) -> str:
    return f"{article.title} {article.body}".strip()


def top_k(scores: np.ndarray, k: int, exclude: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k best scores (descending, ties by row), `exclude` left out."""
    scores = np.asarray(scores, dtype=np.float64).copy()
    if exclude is not None:
        scores[exclude] = -np.inf
    k = min(k, len(scores) - (exclude is not None))
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    part = np.argpartition(-scores, k - 1)[:k]
    order = part[np.lexsort((part, -scores[part]))]
    return order, scores[order]


class TfidfCosine:
    """Exact cosine of plain TF-IDF vectors over all articles."""

    kind = "tfidf_cosine"

    def __init__(self, params: TfidfCosineParams | None = None) -> None:
        self.params = params or TfidfCosineParams()
        self.vectors_: sp.csr_matrix | None = None

    def fit(self, articles: Sequence[Article]) -> TfidfCosine:
        vectorizer = TfidfVectorizer(
            sublinear_tf=self.params.sublinear_tf,
            stop_words="english" if self.params.stop_words == "english" else None,
            min_df=self.params.min_df,
            ngram_range=(1, self.params.ngram_max),
            dtype=np.float32,
        )
        self.vectors_ = vectorizer.fit_transform([article_text(a) for a in articles]).tocsr()
        return self

    def related(self, row: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.vectors_ is not None, "fit first"
        scores = (self.vectors_ @ self.vectors_[row].T).toarray().ravel()
        return top_k(scores, limit, exclude=row)


class BM25:
    """BM25 over the corpus with a long query made of the article's opening."""

    kind = "bm25"

    def __init__(self, params: BM25Params | None = None) -> None:
        self.params = params or BM25Params()
        self._retriever: bm25s.BM25 | None = None
        self._queries: list[list[int]] = []

    def _tokenizer(self) -> bm25s.tokenization.Tokenizer:
        stop = "en" if self.params.stop_words == "english" else None
        return bm25s.tokenization.Tokenizer(stopwords=stop)

    def fit(self, articles: Sequence[Article]) -> BM25:
        tokenizer = self._tokenizer()
        corpus = tokenizer.tokenize([article_text(a) for a in articles], return_as="tuple", show_progress=False)
        retriever = bm25s.BM25(method=self.params.method, k1=self.params.k1, b=self.params.b)
        retriever.index(corpus, show_progress=False)
        self._retriever = retriever
        texts = [f"{a.title} {' '.join(a.body.split()[: self.params.query_words])}" for a in articles]
        words = tokenizer.tokenize(texts, update_vocab=False, return_as="string", show_progress=False)
        self._queries = [retriever.get_tokens_ids(tokens) for tokens in words]
        return self

    def related(self, row: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._retriever is not None, "fit first"
        query = self._queries[row]
        if not query:
            return np.empty(0, dtype=np.int64), np.empty(0)
        scores = self._retriever.get_scores_from_ids(query)
        return top_k(scores, limit, exclude=row)
