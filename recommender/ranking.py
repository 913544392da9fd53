"""Request-time ranking policy over an over-fetched candidate list.

Similar text is not enough for a sidebar: filters (ids, language, section, age), one item
per group of near-duplicates, optional freshness decay, MMR diversity and a per-category
cap turn text neighbours into a list an editor would sign off. Every step is configuration.
"""
from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from index.simhash import signatures
from index.sparse_kernels import SortedRows
from recommender.config import PolicyConfig
from recommender.copies import collapse

DAY = 86_400.0
ANY_LANGUAGE = "any"


@dataclass(frozen=True)
class RelatedQuery:
    """Options of one request; the same in the API, the CLI and the evaluation."""

    limit: int = 10
    exclude: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    lang: str | None = None  # None: the query's language when policy.same_language; "any": all
    max_age_days: float | None = None
    since: datetime | None = None
    relative_to: str = "now"  # "now" or "article": what max_age_days counts back from
    explain: bool = False

    def filters_for(self, lang: str) -> bool:
        """Whether this query filters more than the policy's defaults for an article in `lang`."""
        return bool(
            self.exclude or self.categories or self.exclude_categories or self.max_age_days is not None
            or self.since is not None or (self.lang is not None and self.lang != lang)
        )


def epoch(published: str | None) -> float:
    """ISO 8601 -> epoch seconds; NaN when unknown."""
    if not published:
        return math.nan
    return datetime.fromisoformat(published.replace("Z", "+00:00")).timestamp()


def epochs(published: Sequence[str | None]) -> np.ndarray:
    """`epoch` of many timestamps (float64): one numpy parse when all are in the stored form (UTC
    with a 'Z', articles.format_timestamp), about half the time of parsing them one by one (the
    service holds the GIL for it on every update and reload). Same values: both divide whole
    microseconds by 10^6 with one rounding."""
    if all(p is None or p.endswith("Z") for p in published):
        try:
            moments = np.array([p[:-1] if p else "NaT" for p in published], dtype="datetime64[us]")
        except ValueError:  # not ISO 8601 as numpy reads it
            moments = None
        if moments is not None:
            micros, unknown = moments.astype(np.int64), np.isnat(moments)
            if not np.any(np.abs(micros[~unknown]) >= 2**53):  # else the float conversion would round first
                seconds = micros / 1e6
                seconds[unknown] = np.nan
                return seconds
    return np.array([epoch(p) for p in published], dtype=np.float64)


@dataclass
class Catalog:
    """Per-article arrays the policy filters on, aligned with the index rows."""

    ids: list[str]
    row_of: dict[str, int]
    lang: np.ndarray  # object array of str
    category: np.ndarray  # object array of str | None
    published: np.ndarray  # float64 epoch seconds, NaN when unknown
    evergreen: np.ndarray  # bool
    alive: np.ndarray  # bool: False for deleted rows
    url_key: list[str | None]
    title_key: list[str]
    sparse: sp.csr_matrix
    dense: np.ndarray  # [n, dims] float32, L2-normalized LSA vectors
    simhash: np.ndarray | None = None  # [n, WORDS] uint64 signatures of the TF-IDF rows; computed when None

    def __post_init__(self) -> None:
        self.rows = SortedRows(self.sparse)
        self.sparse = self.rows.matrix
        if self.simhash is None:
            self.simhash = signatures(self.sparse)
        # Small integer codes: comparing them is much faster than comparing strings.
        self._langs: dict[object, int] = {}
        self.lang_codes = np.array([self._langs.setdefault(x, len(self._langs)) for x in self.lang], dtype=np.int32)
        self._titles: dict[str, int] = {}
        self.title_codes = np.array(
            [self._titles.setdefault(t, len(self._titles)) if t else -1 for t in self.title_key], dtype=np.int64
        )
        self._urls: dict[str, int] = {}
        self.url_codes = np.array(
            [self._urls.setdefault(u, len(self._urls)) if u else -1 for u in self.url_key], dtype=np.int64
        )

    @staticmethod
    def row_columns(rows: list[dict]) -> dict[str, list]:
        """The per-article values of metadata rows (articles.jsonl), one list per column."""
        return {
            "ids": [a["id"] for a in rows],
            "lang": [a.get("lang") for a in rows],
            "category": [a.get("category") for a in rows],
            "published": epochs([a.get("published") for a in rows]).tolist(),
            "evergreen": [bool(a.get("evergreen")) for a in rows],
            "url_key": [Catalog.normalize_url(a.get("url")) for a in rows],
            "title_key": [Catalog.normalize_title(a.get("title") or "") for a in rows],
        }

    @classmethod
    def from_columns(
        cls, columns: dict[str, list], row_of: dict[str, int], *,
        sparse: sp.csr_matrix, dense: np.ndarray, alive: np.ndarray,
        simhash: np.ndarray | None = None,
    ) -> Catalog:
        """From `row_columns` output and the vectors aligned with the rows."""
        return cls(
            ids=columns["ids"],
            row_of=row_of,
            lang=np.array(columns["lang"], dtype=object),
            category=np.array(columns["category"], dtype=object),
            published=np.array(columns["published"], dtype=np.float64),
            evergreen=np.array(columns["evergreen"], dtype=bool),
            alive=np.asarray(alive, dtype=bool),
            url_key=columns["url_key"],
            title_key=columns["title_key"],
            sparse=sparse,
            dense=dense,
            simhash=simhash,
        )

    @classmethod
    def from_rows(
        cls, rows: list[dict], *, sparse: sp.csr_matrix, dense: np.ndarray, alive: np.ndarray,
        simhash: np.ndarray | None = None
    ) -> Catalog:
        """From the metadata rows of articles.jsonl and the vectors aligned with them."""
        row_of = {a["id"]: row for row, a in enumerate(rows)}  # the last row of an id wins
        return cls.from_columns(cls.row_columns(rows), row_of, sparse=sparse, dense=dense, alive=alive, simhash=simhash)

    def lang_code(self, lang: str) -> int:
        return self._langs.get(lang, -1)

    def title_code(self, title_key: str | None) -> int:
        return self._titles.get(title_key, -1) if title_key else -1

    def url_code(self, url_key: str | None) -> int:
        return self._urls.get(url_key, -1) if url_key else -1

    @staticmethod
    def normalize_title(title: str) -> str:
        folded = unicodedata.normalize("NFKD", title).casefold()
        return re.sub(r"\W+", " ", folded).strip()

    @staticmethod
    def normalize_url(url: str | None) -> str | None:
        if not url:
            return None
        bare = re.sub(r"^[a-z]+://(www\.)?", "", url.strip().casefold())
        return bare.split("#")[0].split("?")[0].rstrip("/") or None


@dataclass(frozen=True)
class QueryContext:
    """What the policy knows of the query: a stored article's row or a draft's vectors.

    The TF-IDF row is addressed as (`source`, `source_row`), not copied out: slicing a row
    out of a scipy matrix costs more than ranking a precomputed list.
    """

    source: SortedRows  # holds the query's TF-IDF row
    source_row: int
    dense: np.ndarray  # [dims] float32
    simhash: np.ndarray  # [WORDS] uint64, as Catalog.simhash
    lang: str
    published: float  # epoch seconds, NaN for unknown
    row: int | None = None
    url_key: str | None = None
    title_key: str | None = None

    @property
    def sparse(self) -> sp.csr_matrix:
        """The query's TF-IDF row as a [1, V] matrix."""
        return self.source.matrix[self.source_row]


@dataclass
class RankedItem:
    row: int
    score: float
    parts: dict[str, float] = field(default_factory=dict)


class Policy:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    # -- filters ------------------------------------------------------------------------
    def eligible(
        self, catalog: Catalog, ctx: QueryContext, query: RelatedQuery, rows: np.ndarray, scores: np.ndarray | None = None
    ) -> np.ndarray:
        """Boolean mask over `rows`: alive, not the query, not excluded, language/section/age filters."""
        safe = np.maximum(rows, 0)
        keep = (rows >= 0) & catalog.alive[safe]
        if scores is not None:
            keep &= scores > 0  # nothing in common is not related, whatever the filters say
        if ctx.row is not None:
            keep &= rows != ctx.row
        if query.exclude:
            excluded = [catalog.row_of[i] for i in query.exclude if i in catalog.row_of]
            keep &= ~np.isin(rows, excluded)
        lang = query.lang or (ctx.lang if self.config.same_language else ANY_LANGUAGE)
        if lang != ANY_LANGUAGE:
            keep &= catalog.lang_codes[safe] == catalog.lang_code(lang)
        if query.categories:
            keep &= np.isin(catalog.category[safe], list(query.categories))
        if query.exclude_categories:
            keep &= ~np.isin(catalog.category[safe], list(query.exclude_categories))
        if query.max_age_days is not None:
            anchor = ctx.published if query.relative_to == "article" and not math.isnan(ctx.published) else time.time()
            keep &= catalog.published[safe] >= anchor - query.max_age_days * DAY
        if query.since is not None:
            keep &= catalog.published[safe] >= query.since.timestamp()
        return keep

    # -- duplicates ----------------------------------------------------------------------
    def collapse_duplicates(
        self, catalog: Catalog, ctx: QueryContext, rows: np.ndarray, scores: np.ndarray, pool: int
    ) -> list[RankedItem]:
        """Copies of the query go; each group of copies keeps one item (its freshest) at its best rank."""
        positions, shown = collapse(catalog, ctx, rows, pool, self.config)
        items = []
        for position, row in zip(positions.tolist(), shown.tolist()):
            score = float(scores[position])
            items.append(RankedItem(row, score, {"text": round(score, 4)}))
        return items

    # -- scoring -----------------------------------------------------------------------------
    def freshness(self, catalog: Catalog, ctx: QueryContext, items: list[RankedItem]) -> None:
        half_life = self.config.freshness_half_life_days
        if half_life is None:
            return
        weight = self.config.freshness_weight
        now = time.time()
        anchor = now if math.isnan(ctx.published) else ctx.published
        for item in items:
            published = catalog.published[item.row]
            if catalog.evergreen[item.row] or math.isnan(published):
                decay = 1.0
            else:
                decay = 0.5 ** (abs(anchor - published) / DAY / half_life)
            item.parts["freshness"] = round(decay, 4)
            item.score = (1.0 - weight) * item.parts["text"] + weight * decay
        items.sort(key=lambda i: -i.score)

    def diversify(self, catalog: Catalog, items: list[RankedItem], limit: int) -> list[RankedItem]:
        """MMR: trade a little relevance for items that are not alike each other."""
        lam = self.config.mmr_lambda
        if lam is None or len(items) <= 1:
            return items
        rows = np.array([i.row for i in items])
        vectors = catalog.sparse[rows]
        pairwise = (vectors @ vectors.T).toarray()
        chosen = [0]
        rest = list(range(1, len(items)))
        while rest and len(chosen) < limit:
            best = max(rest, key=lambda p: lam * items[p].score - (1 - lam) * pairwise[p, chosen].max())
            items[best].parts["redundancy"] = round(float(pairwise[best, chosen].max()), 4)
            chosen.append(best)
            rest.remove(best)
        return [items[p] for p in chosen] + [items[p] for p in rest]

    def cap_categories(self, catalog: Catalog, items: list[RankedItem]) -> list[RankedItem]:
        cap = self.config.category_cap
        if cap is None:
            return items
        seen: dict[object, int] = {}
        kept = []
        for item in items:
            category = catalog.category[item.row]
            seen[category] = seen.get(category, 0) + 1
            if category is None or seen[category] <= cap:
                kept.append(item)
        return kept

    def rank(
        self,
        catalog: Catalog,
        ctx: QueryContext,
        query: RelatedQuery,
        rows: np.ndarray,
        scores: np.ndarray,
    ) -> list[RankedItem]:
        """The list to serve (at most `query.limit` items) from candidates ordered by text score."""
        mask = self.eligible(catalog, ctx, query, rows, scores)
        reorders = (
            self.config.freshness_half_life_days is not None
            or self.config.mmr_lambda is not None
            or self.config.category_cap is not None
        )
        pool = max(3 * query.limit, query.limit + 20) if reorders else query.limit
        items = self.collapse_duplicates(catalog, ctx, rows[mask], scores[mask], pool)
        self.freshness(catalog, ctx, items)
        items = self.cap_categories(catalog, items)
        items = self.diversify(catalog, items, query.limit)
        return items[: query.limit]


def shared_terms(
    query: sp.csr_matrix, item: sp.csr_matrix, terms: list[str], top: int
) -> list[str]:
    """The terms that contribute most to the cosine of two TF-IDF rows (a bigram hides its words)."""
    product = query.multiply(item).tocoo()
    if product.nnz == 0:
        return []
    order = np.argsort(-product.data)
    chosen: list[str] = []
    covered: set[str] = set()
    for column in product.col[order]:
        words = terms[column].split(" ")
        if all(w in covered for w in words):
            continue
        chosen.append(terms[column])
        covered.update(words)
        if len(chosen) == top:
            break
    return chosen
