"""A loaded index version answering "related to this article" and "related to this draft".

Known articles are answered from the precomputed neighbour lists (an array lookup); when the
policy's filters leave fewer than `limit` items, a wider FAISS search refills the list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from index.artifacts import Version, current_version
from index.columns import NO_CODE, key_code
from index.errors import CorruptArtifactError, NoIndexError
from index.faiss_index import rerank_factor
from index.simhash import signatures
from index.sparse_kernels import SortedRows
from index.neighbours import Corpus, Queries, prune_rows, query_neighbours, score_candidates
from index.postings import RarePostings
from index.prefault import prefault
from recommender.policy.catalog import Catalog, language_counts, normalize_title
from recommender.config import PipelineConfig
from recommender.errors import ArticleNotFoundError
from recommender.policy.ranking import ANY_LANGUAGE, Policy, QueryContext, RankedItem, RelatedQuery, shared_terms
from recommender.policy.served import precomputable
from recommender.vectors.language import LanguageDetector
from recommender.vectors.text import clean_text
from recommender.vectors.tfidf import STATE_ARRAYS, ArticleVectorizer, Document

WIDE_SEARCH_MIN = 500


def below(floor: float, scores: np.ndarray) -> bool:
    """Whether a positive floor cut any of these candidate scores."""
    return floor > 0 and bool(np.any(scores < floor))


@dataclass
class RelatedList:
    article_id: str | None
    index_version: str
    items: list[dict]
    fill_reason: str | None = None


def load_sparse(version: Version, prefix: str, n_terms: int, *, required: bool = True) -> sp.csr_matrix | None:
    """A CSR matrix saved as three arrays (memory-mapped); None when optional and absent."""
    if not version.has(f"{prefix}_indptr.npy"):
        if required:
            raise CorruptArtifactError(f"version {version.name} has no {prefix} arrays: rebuild it")
        return None
    indptr = version.array(f"{prefix}_indptr.npy")
    matrix = sp.csr_matrix(
        (version.array(f"{prefix}_data.npy"), version.array(f"{prefix}_indices.npy"), indptr),
        shape=(len(indptr) - 1, n_terms),
        copy=False,
    )
    # Rows are written sorted (build.save_sparse, update.save_rows): saying so spares a pass
    # over every column id at each load, and a sorted private copy where scipy cannot tell.
    matrix.has_sorted_indices = True
    return matrix


class RelatedIndex:
    """One immutable version in memory; the API swaps whole instances on reload."""

    def __init__(self, version: Version) -> None:
        self.version = version
        self.manifest = version.manifest.data
        self.name = version.manifest.name
        self.config = PipelineConfig.from_manifest(self.manifest["config"], origin=f"manifest of {self.name}")
        terms = version.json("vocabulary.json")
        self.dense = version.array("dense.npy")
        self.catalog = Catalog.load(  # first: it refuses a version older than its columns, saying so
            version, sparse=load_sparse(version, "tfidf", len(terms)), dense=self.dense,
            simhash=version.array("simhash.npy"), alive=version.array("alive.npy"),
        )
        arrays = {name: version.array(f"{name}.npy") for name in STATE_ARRAYS}
        self.vectorizer = ArticleVectorizer.from_state(self.config.text, self.config.reduce, terms, arrays)
        self.terms: list[str] = terms
        # Readable forms ("occupied", not the stem "occupi") for `why`; older versions have none.
        self.display_terms: list[str] = version.json("display_terms.json") if version.has("display_terms.json") else terms
        self.neighbours = version.array("neighbours.npy")
        self.neighbour_scores = version.array("neighbour_scores.npy")
        self.faiss = version.index(
            "index.faiss", ef_search=self.config.index.ef_search, nprobe=self.config.index.nprobe
        )
        self.row_of = self.catalog.row_of
        signature = load_sparse(version, "signature", len(terms))
        self.corpus = Corpus(
            index=self.faiss,
            sparse=signature,
            times=self.catalog.published,
            expanded=load_sparse(version, "expanded", len(terms), required=False),
            alive=self.catalog.alive,
            dense=self.dense,
            rerank=rerank_factor(self.faiss, self.config.index.rerank),
            postings=RarePostings.stored(version, signature, self.catalog.published),
        )
        self.policy = Policy(self.config.policy)
        # Live articles per language: what detection may answer, what `lang` may name, which lists go `any`.
        self.languages = language_counts(self.catalog.lang_codes, self.catalog.alive, self.catalog.items)
        self.detector = LanguageDetector.for_index(self.config.text, self.languages)
        self._thin_codes = {
            key_code(lang) for lang, count in self.languages.items()
            if count - 1 < self.config.policy.min_language_articles
        }
        # Lists the policy gives unfiltered requests, precomputed by the build (served.py).
        self.served: tuple[np.ndarray, np.ndarray] | None = None
        if version.has("served.npy") and precomputable(self.config.policy):
            self.served = (version.array("served.npy"), version.array("served_scores.npy"))
        # What the served path reads per request, as flat memoryviews: their items are Python
        # ints and floats, and a row slice costs a fraction of numpy's indexing.
        self._served_width = 0 if self.served is None else self.served[0].shape[1]
        self._served_ids, self._served_scores = (
            (None, None) if self.served is None else (memoryview(a.reshape(-1)) for a in self.served)
        )
        self._alive = memoryview(self.catalog.alive)
        self._lang_codes = memoryview(self.catalog.lang_codes)

    @classmethod
    def open(cls, data_dir: Path, *, verify: bool = True) -> RelatedIndex:
        path = current_version(data_dir)
        if path is None:
            raise NoIndexError(f"no index in {data_dir}: run `related build` first")
        return cls(Version.open(path, verify=verify))

    # What GET related reads, most read first: the served lists and what an item shows, the id index, the
    # columns filters read, the neighbour lists filtered GETs rank; then what a draft or a wider search
    # reads (the FAISS index, the TF-IDF, signature and expanded rows, the dense vectors, the rare terms' postings).
    SERVING_FILES = (
        "served", "served_scores", "items_offsets", "items", "id_hashes", "id_rows", "ids_offsets", "ids", "alive",
        "lang_codes", "category_codes", "published", "evergreen", "title_codes", "url_codes", "neighbours",
        "neighbour_scores", "index.faiss", "tfidf_indptr", "tfidf_indices", "tfidf_data", "signature_indptr",
        "signature_indices", "signature_data", "expanded_indptr", "expanded_indices", "expanded_data", "dense",
        "postings_rare", "postings_indptr", "postings_keys", "postings_rows", "postings_weights",
    )

    def serving_files(self) -> list[Path]:
        """The version's files (every segment) in SERVING_FILES order."""
        names = [name if "." in name else f"{name}.npy" for name in self.SERVING_FILES]
        return [path for name in names if self.version.has(name) for path in self.version.paths(name)]

    def warm_up(self, prefault_bytes: int = 0) -> int:
        """One query down each path, so the first live requests after a load do not pay for
        loading compiled kernels (half a second), and up to `prefault_bytes` of `serving_files`
        mapped in (index.prefault), so they do not pay for page faults either. The bytes prefaulted."""
        done = prefault(self.serving_files(), prefault_bytes)
        live = np.flatnonzero(self.catalog.alive)
        if len(live) == 0:
            return done
        article = self.item_metadata(int(live[0]))
        query = RelatedQuery(limit=3)
        self.for_article(article["id"], query)
        self.for_article(article["id"], query, policy=self.policy)
        self.for_draft(article["title"] or article["id"], "", article["lang"], query)
        self.detector.guess("x" * max(1, self.detector.min_chars))  # loads the language model (a second or more)
        return done

    @property
    def size(self) -> int:
        return int(self.catalog.alive.sum())

    def info(self) -> dict:
        return {
            "version": self.name,
            "articles": self.size,
            "dims": self.manifest.get("dims"),
            "built_at": self.manifest.get("built_at"),
            "index_type": self.manifest.get("index_type"),
            "counts": self.manifest.get("counts"),
            "languages": self.languages,
            "default_lang": self.detector.default,
            "drift": self.manifest.get("drift"),
            "config": self.manifest.get("config"),
        }

    # -- queries ----------------------------------------------------------------------------
    def context(self, row: int) -> QueryContext:
        """What the ranking policy knows of a stored article used as the query."""
        return QueryContext(
            source=self.catalog.rows,
            source_row=row,
            dense=self.dense[row],
            simhash=self.catalog.simhash[row],
            lang=self._lang(row),
            published=float(self.catalog.published[row]),
            row=row,
            url_code=int(self.catalog.url_codes[row]),
            title_code=int(self.catalog.title_codes[row]),
            category_code=int(self.catalog.category_codes[row]),
        )

    def queries(self, contexts: list[QueryContext], dense: np.ndarray) -> Queries:
        """Neighbour-search input for query contexts, with signatures pruned like the corpus's."""
        sparse = contexts[0].sparse if len(contexts) == 1 else sp.vstack([c.sparse for c in contexts]).tocsr()
        rows = [c.row for c in contexts]
        stored = None not in rows
        return Queries(
            sparse=prune_rows(sparse, self.config.neighbours.signature_terms),
            dense=np.ascontiguousarray(dense, dtype=np.float32),
            times=np.array([c.published for c in contexts], dtype=np.float64),
            self_ids=np.array(rows) if stored else None,
            # Stored articles keep the expansion the build gave them, so lists agree across paths.
            expanded=self.corpus.expanded[rows] if stored and self.corpus.expanded is not None else None,
        )

    def _lang(self, row: int) -> str:
        return self.item_metadata(row)["lang"] or self.detector.default

    def _row(self, article_id: str) -> int:
        row = self.row_of.get(article_id)
        if row is None or not self._alive[row]:
            raise ArticleNotFoundError(f"article {article_id!r} is not in index version {self.name}")
        return row

    def served_list(self, article_id: str, query: RelatedQuery) -> tuple[list[int], list[float]] | None:
        """The precomputed list (catalog rows, scores) when it answers this query: no filters,
        no explanations, enough live items. None: ask `for_article`."""
        return self._served_rows(self._row(article_id), query)

    def _served_rows(self, row: int, query: RelatedQuery) -> tuple[list[int], list[float]] | None:
        code = self._lang_codes[row]
        if self.served is None or query.explain or query.filters_for(code) or code in self._thin_codes:
            return None
        start = row * self._served_width
        stop = start + min(query.limit, self._served_width)
        rows = self._served_ids[start:stop].tolist()
        alive = self._alive
        if len(rows) < query.limit or rows[-1] < 0 or not all(alive[r] for r in rows):
            return None
        scores = self._served_scores[start:stop].tolist()
        if scores[-1] < self.policy.floor(query):
            return None
        return rows, scores

    def item_metadata(self, row: int) -> dict:
        """What a list shows of an article, without its score."""
        return self.catalog.metadata(row)

    def for_article(self, article_id: str, query: RelatedQuery, policy: Policy | None = None) -> RelatedList:
        row = self._row(article_id)
        served = self._served_rows(row, query) if policy is None else None
        if served is not None:
            items = [self.item_metadata(r) | {"score": round(s, 4)} for r, s in zip(*served)]
            return RelatedList(article_id, self.name, items)
        ctx = self.context(row)
        dense = self.dense[row : row + 1]
        return self._serve(article_id, ctx, dense, query, policy or self.policy, self.neighbours[row], self.neighbour_scores[row])

    def for_draft(
        self, title: str, body: str, lang: str | None, query: RelatedQuery, policy: Policy | None = None
    ) -> RelatedList:
        title, body = clean_text(title), clean_text(body)
        lang = lang or self.detector.detect(f"{title}. {body}")
        vectors = self.vectorizer.transform([Document(lang=lang, title=title, body=body)])
        ctx = QueryContext(
            source=SortedRows(vectors.sparse),
            source_row=0,
            dense=vectors.dense[0],
            simhash=signatures(vectors.sparse)[0],
            lang=lang,
            published=math.nan,
            title_code=key_code(normalize_title(title)),
        )
        # First the list a stored article gets at build time; wider only when the policy or filters leave it short.
        rows, scores = self._search(ctx, vectors.dense)
        return self._serve(None, ctx, vectors.dense, query, policy or self.policy, rows, scores)

    def _search(self, ctx: QueryContext, dense: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The top `width` neighbours; with no width, the top k from the usual candidates (a stored article's list)."""
        params = self.config.neighbours.params()
        if width is not None:
            params = replace(params, k=width)
        ids, scores, _ = query_neighbours(self.corpus, self.queries([ctx], dense), params, width=width)
        return ids[0], scores[0]

    def _serve(
        self,
        article_id: str | None,
        ctx: QueryContext,
        dense: np.ndarray,
        query: RelatedQuery,
        policy: Policy,
        rows: np.ndarray | None,
        scores: np.ndarray | None,
    ) -> RelatedList:
        """The policy's list from the candidates given, refilled by a wider search when short (unless the
        floor already cut them: whatever lies further scores lower), then fillers when asked for.

        `fill_reason`: `below_min_score` or `exhausted` when the list is short, else `language_fallback`
        when the query's language has too few articles, else `wider_search` when that refilled it."""
        query, fallback = self._language_rule(ctx, query, policy)
        floor = policy.floor(query)
        items: list[RankedItem] = []
        floored = widened = False
        if rows is not None and scores is not None:
            rows, scores = np.asarray(rows), np.asarray(scores)
            items = policy.rank(self.catalog, ctx, query, rows, scores)
            floored = below(floor, scores[rows >= 0])
        if len(items) < query.limit and not floored:
            found, floored = self._wider(ctx, dense, query, policy)
            widened = rows is not None and len(found) > len(items)
            items = found if len(found) > len(items) else items
        fill_reason = None
        if len(items) < query.limit:
            fill_reason = "below_min_score" if floored else "exhausted"
        elif fallback:
            fill_reason = "language_fallback"
        elif widened:
            fill_reason = "wider_search"
        listed = [self._item(ctx, i, query.explain) for i in items]
        if len(listed) < query.limit and policy.fills(query):
            listed += self._fillers(ctx, query, policy, [i.row for i in items])
        return RelatedList(article_id, self.name, listed, fill_reason)

    def _language_rule(self, ctx: QueryContext, query: RelatedQuery, policy: Policy) -> tuple[RelatedQuery, bool]:
        """(the query to rank with, whether it fell back to any language): a query without a `lang`
        whose language has fewer than `policy.min_language_articles` other articles gets any language."""
        if query.lang is not None or not policy.config.same_language:
            return query, False
        others = self.languages.get(ctx.lang, 0) - (ctx.row is not None)
        if others >= policy.config.min_language_articles:
            return query, False
        return replace(query, lang=ANY_LANGUAGE), True

    def _wider(
        self, ctx: QueryContext, dense: np.ndarray, query: RelatedQuery, policy: Policy
    ) -> tuple[list[RankedItem], bool]:
        """Refill a short list: score exactly what the filters leave when that is little, else
        search FAISS ever wider (a filter that matches nothing never scans the index), until the
        list is full or the scores fall below the floor. Also says whether the floor cut candidates."""
        total = self.faiss.ntotal
        everyone = np.arange(total)
        eligible = everyone[policy.eligible(self.catalog, ctx, query, everyone)]
        width = max(WIDE_SEARCH_MIN, 20 * query.limit, self.config.neighbours.k * 4)
        floor = policy.floor(query)
        if len(eligible) == 0:
            return [], False
        if len(eligible) <= width:
            params = self.config.neighbours.params()
            queries = self.queries([ctx], dense)
            if queries.expanded is None and params.feedback > 0:  # a draft: expand from its unfiltered neighbours
                queries = replace(queries, expanded=query_neighbours(self.corpus, queries, params)[2])
            scores = score_candidates(self.corpus, queries, params, eligible[None, :], self.dense)
            order = np.argsort(-scores[0], kind="stable")
            return policy.rank(self.catalog, ctx, query, eligible[order], scores[0][order]), below(floor, scores[0])
        while True:
            width = min(width, total)
            rows, scores = self._search(ctx, dense, width)
            items = policy.rank(self.catalog, ctx, query, rows, scores)
            floored = below(floor, scores[rows >= 0])
            if len(items) >= query.limit or width >= total or floored:
                return items, floored
            width *= 8

    def _fillers(self, ctx: QueryContext, query: RelatedQuery, policy: Policy, listed: list[int]) -> list[dict]:
        """The newest articles of the query's section (a draft: of the sections asked for, or any) that
        the filters allow, for the free slots of a short list; not chosen by relevance, so marked."""
        catalog = self.catalog
        everyone = np.arange(len(catalog.alive))
        mask = policy.eligible(catalog, ctx, query, everyone)
        if ctx.category_code != NO_CODE and not query.categories:
            mask &= catalog.category_codes == ctx.category_code
        for codes, own in ((catalog.title_codes, ctx.title_code), (catalog.url_codes, ctx.url_code)):
            if own != NO_CODE:
                mask &= codes != own  # copies of the query are no filler either
        mask[listed] = False
        candidates = np.flatnonzero(mask)
        free = query.limit - len(listed)
        published = np.nan_to_num(catalog.published[candidates], nan=-np.inf)
        if len(candidates) > free:
            top = np.argpartition(-published, free - 1)[:free]
            candidates, published = candidates[top], published[top]
        newest = candidates[np.argsort(-published, kind="stable")]
        return [self.item_metadata(int(row)) | {"score": 0.0, "filler": True} for row in newest]

    def _item(self, ctx: QueryContext, item: RankedItem, explain: bool) -> dict:
        out = self.item_metadata(item.row)
        out["score"] = round(item.score, 4)
        if explain:
            out["why"] = shared_terms(
                ctx.sparse, self.catalog.sparse[item.row], self.display_terms, self.config.policy.why_terms
            )
            out["score_parts"] = item.parts
        return out
