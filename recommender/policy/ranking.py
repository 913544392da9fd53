"""Request-time ranking policy over an over-fetched candidate list.

Similar text is not enough for a sidebar: filters (ids, language, section, age), one item
per group of near-duplicates, optional freshness decay, MMR diversity and a per-category
cap turn text neighbours into a list an editor would sign off. Every step is configuration.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from index.columns import NO_CODE, key_code
from index.sparse_kernels import SortedRows
from recommender.policy.catalog import Catalog
from recommender.config import PolicyConfig
from recommender.policy.copies import collapse

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
    min_score: float | None = None  # relevance floor; None: policy.min_score
    fill: str | None = None  # "latest" or "none"; None: policy.fill

    def filters_for(self, lang_code: int) -> bool:
        """Whether any option filters the list of an article whose language has this code."""
        return bool(
            self.exclude or self.categories or self.exclude_categories or self.max_age_days is not None
            or self.since is not None or (self.lang is not None and key_code(self.lang) != lang_code)
        )


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
    url_code: int = NO_CODE  # key codes of the normalized URL and title, as Catalog.url_codes
    title_code: int = NO_CODE
    category_code: int = NO_CODE  # the query's section, for fillers

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

    def floor(self, query: RelatedQuery) -> float:
        """The relevance floor of a request: its own, else the configured one."""
        return self.config.min_score if query.min_score is None else query.min_score

    def fills(self, query: RelatedQuery) -> bool:
        """Whether free slots of a short list get fillers (the newest of the query's section and language)."""
        return (query.fill or self.config.fill) == "latest"

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
            excluded = [row for row in map(catalog.row_of.get, query.exclude) if row is not None]
            keep &= ~np.isin(rows, excluded)
        lang = query.lang or (ctx.lang if self.config.same_language else ANY_LANGUAGE)
        if lang != ANY_LANGUAGE:
            keep &= catalog.lang_codes[safe] == key_code(lang)
        if query.categories:
            keep &= np.isin(catalog.category_codes[safe], [key_code(c) for c in query.categories])
        if query.exclude_categories:
            keep &= ~np.isin(catalog.category_codes[safe], [key_code(c) for c in query.exclude_categories])
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
        seen: dict[int, int] = {}
        kept = []
        for item in items:
            category = int(catalog.category_codes[item.row])
            seen[category] = seen.get(category, 0) + 1
            if category == NO_CODE or seen[category] <= cap:
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
        """The list to serve (at most `query.limit` items, none below the floor) from candidates ordered by text score."""
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
        floor = self.floor(query)
        return [item for item in items[: query.limit] if item.score >= floor]


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
