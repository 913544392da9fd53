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
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import scipy.sparse as sp

from recommender.config import PolicyConfig

DAY = 86_400.0
SAME_TITLE_MIN_COSINE = 0.5
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


@dataclass
class Catalog:
    """Per-article arrays the policy filters on, aligned with the index rows."""

    ids: list[str]
    lang: np.ndarray  # object array of str
    category: np.ndarray  # object array of str | None
    published: np.ndarray  # float64 epoch seconds, NaN when unknown
    evergreen: np.ndarray  # bool
    alive: np.ndarray  # bool: False for deleted rows
    url_key: list[str | None]
    title_key: list[str]
    sparse: sp.csr_matrix

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
    """What the policy knows of the query: a stored article's row or a draft's vectors."""

    sparse: sp.csr_matrix  # [1, V]
    lang: str
    published: float  # epoch seconds, NaN for unknown
    row: int | None = None
    url_key: str | None = None
    title_key: str | None = None


@dataclass
class RankedItem:
    row: int
    score: float
    parts: dict[str, float] = field(default_factory=dict)


class Policy:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config

    # -- filters ------------------------------------------------------------------------
    def eligible(self, catalog: Catalog, ctx: QueryContext, query: RelatedQuery, rows: np.ndarray) -> np.ndarray:
        """Boolean mask over `rows`: alive, not the query, not excluded, language/section/age filters."""
        keep = (rows >= 0) & catalog.alive[np.maximum(rows, 0)]
        if ctx.row is not None:
            keep &= rows != ctx.row
        if query.exclude:
            keep &= np.array([catalog.ids[r] not in query.exclude if r >= 0 else False for r in rows], dtype=bool)
        lang = query.lang or (ctx.lang if self.config.same_language else ANY_LANGUAGE)
        safe = np.maximum(rows, 0)
        if lang != ANY_LANGUAGE:
            keep &= catalog.lang[safe] == lang
        if query.categories:
            keep &= np.isin(catalog.category[safe], list(query.categories))
        if query.exclude_categories:
            keep &= ~np.isin(catalog.category[safe], list(query.exclude_categories))
        published = catalog.published[safe]
        if query.max_age_days is not None:
            anchor = ctx.published if query.relative_to == "article" and not math.isnan(ctx.published) else time.time()
            keep &= published >= anchor - query.max_age_days * DAY
        if query.since is not None:
            keep &= published >= query.since.timestamp()
        return keep

    # -- duplicates ----------------------------------------------------------------------
    def _is_copy(self, catalog: Catalog, a_row: int, b_row: int, cosine: float) -> bool:
        if cosine >= self.config.duplicate_threshold:
            return True
        if not self.config.duplicate_same_title or cosine < SAME_TITLE_MIN_COSINE:
            return False  # a recurring headline ("Weather", "Letters") over different text is no copy
        url = catalog.url_key[a_row]
        if url is not None and url == catalog.url_key[b_row]:
            return True
        title = catalog.title_key[a_row]
        return bool(title) and title == catalog.title_key[b_row]

    def collapse_duplicates(
        self, catalog: Catalog, ctx: QueryContext, items: list[RankedItem]
    ) -> list[RankedItem]:
        """Copies of the query go; each group of copies keeps one item (the freshest) at its best rank."""
        if not items:
            return items
        rows = np.array([i.row for i in items])
        vectors = catalog.sparse[rows]
        to_query = np.asarray((vectors @ ctx.sparse.T).todense()).ravel()
        pairwise = (vectors @ vectors.T).toarray()
        kept: list[int] = []  # positions in items
        groups: dict[int, list[int]] = {}
        for pos, item in enumerate(items):
            same_source = (
                self.config.duplicate_same_title
                and to_query[pos] >= SAME_TITLE_MIN_COSINE
                and (
                    (ctx.url_key and ctx.url_key == catalog.url_key[item.row])
                    or (ctx.title_key and ctx.title_key == catalog.title_key[item.row])
                )
            )
            if to_query[pos] >= self.config.duplicate_threshold or same_source:
                continue
            leader = next(
                (k for k in kept if self._is_copy(catalog, items[k].row, item.row, pairwise[k, pos])), None
            )
            if leader is None:
                kept.append(pos)
                groups[pos] = [pos]
            else:
                groups[leader].append(pos)
        result = []
        for leader in kept:
            members = groups[leader]
            freshest = max(members, key=lambda p: np.nan_to_num(catalog.published[items[p].row], nan=-np.inf))
            chosen = items[freshest]
            result.append(RankedItem(chosen.row, items[leader].score, dict(items[leader].parts)))
        return result

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
        mask = self.eligible(catalog, ctx, query, rows)
        items = [
            RankedItem(int(r), float(s), {"text": round(float(s), 4)}) for r, s in zip(rows[mask], scores[mask])
        ]
        items = self.collapse_duplicates(catalog, ctx, items)
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
