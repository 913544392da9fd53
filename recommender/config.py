"""Typed pipeline configuration: one object reaches the CLI, the API and the benchmarks.

Defaults work out of the box; a TOML file overrides any subset, section by section:

    [text]
    title_weight = 3
    [neighbours]
    sparse_weight = 0.8
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from index.neighbours import NeighbourParams
from recommender.errors import RelatedError

SUPPORTED_LANGUAGES = ("en", "de", "fr", "es", "it")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextConfig(_Section):
    """How articles become sparse TF-IDF vectors."""

    title_weight: int = Field(2, ge=1, le=10, description="Title tokens count this many times.")
    ngram_max: int = Field(1, ge=1, le=3, description="Longest word n-gram (2 = unigrams + bigrams).")
    min_df: int = Field(2, ge=1, description="Drop terms in fewer documents (lowered for tiny corpora).")
    max_df: float = Field(0.5, gt=0.0, le=1.0, description="Drop terms in a larger share of documents.")
    sublinear_tf: bool = True
    stop_words: bool = True
    stemming: bool = True
    languages: tuple[str, ...] = Field(
        SUPPORTED_LANGUAGES, description="Languages detection may answer at build time, besides those records declare."
    )
    default_lang: str | None = Field(
        None, description="Language of a record or draft whose language cannot be told (None: the corpus majority)."
    )
    detect_min_confidence: float = Field(
        0.8, ge=0.0, le=1.0, description="Detection answers only above this probability; else default_lang."
    )
    detect_min_chars: int = Field(20, ge=0, description="Texts shorter than this get default_lang undetected.")
    max_features: int | None = Field(None, ge=1, description="Keep only the most frequent terms.")
    name_weight: int = Field(
        1, ge=1, le=5, description="A capitalized word inside a sentence (a name) counts this many times (1 = off)."
    )
    numbers: bool = Field(False, description="Bare numbers of two or more digits are terms too.")


class ReduceConfig(_Section):
    """LSA: randomized SVD (see tfidf.lsa_components) to `dims` dense dimensions for FAISS."""

    dims: int = Field(256, ge=2, le=2048)
    svd_fit_sample: int = Field(10_000, ge=100, description="Fit SVD on at most this many articles.")
    svd_max_features: int = Field(50_000, ge=100, description="SVD sees the most frequent terms only.")
    n_iter: int = Field(3, ge=1, le=20)
    seed: int = 0


class IndexConfig(_Section):
    """FAISS index: exact (Flat) up to `exact_max` articles, IVF-SQ8 (or IVF-Flat, HNSW, IVF-PQ) above."""

    exact_max: int = Field(50_000, ge=0)
    large: Literal["ivfsq8", "ivf", "hnsw", "ivfpq"] = Field(
        "ivfsq8", description="Index above exact_max; benchmarks/index_choice.py measures them on a dense.npy."
    )
    hnsw_m: int = Field(32, ge=4, le=128)
    ef_construction: int = Field(80, ge=8)
    ef_search: int = Field(128, ge=8, description="HNSW breadth; asking more candidates does not widen it.")
    nlist: int = Field(0, ge=0, description="IVF cells (0 = 4 x sqrt(N)).")
    nprobe: int = Field(16, ge=1, description="IVF cells searched per query.")
    pq_m: int = Field(64, ge=1, description="IVF-PQ: bytes per article at 8 bits; must divide reduce.dims.")
    pq_nbits: int = Field(8, ge=1, le=16)
    rerank: int = Field(
        1, ge=1, description="IVF-SQ8, IVF-PQ: k x rerank candidates re-scored exactly against the dense vectors."
    )


class NeighbourConfig(_Section):
    """Precomputed neighbour lists: FAISS candidates re-ranked by exact sparse similarity."""

    k: int = Field(50, ge=1, le=1000, description="Neighbours stored per article.")
    candidates: int = Field(300, ge=1, description="FAISS candidates re-ranked per article.")
    # 0.6: the LSA cosine in the score keeps a story's topic together where the sparse cosine
    # alone drifts to articles sharing one rare name; measured on four datasets it raises nDCG@10
    # on three (bbc 0.929 -> 0.936, 10kgnad 0.656 -> 0.659, reuters 0.720 -> 0.733), costs duc2004
    # 0.893 -> 0.887, and lifts the served lists' recall of exhaustive scoring to >= 0.98 on all.
    sparse_weight: float = Field(0.6, ge=0.0, le=1.0, description="Blend: weight of exact sparse cosine vs dense.")
    feedback: int = Field(5, ge=0, le=50, description="Pseudo-relevance feedback: neighbours folded in (0 = off).")
    # 3.0 (was 1.0): the neighbourhood counts more than the article's own words. Measured with
    # benchmarks/levers.py (nDCG@10 against 1.0): duc2004 +0.005, 10kgnad +0.008, bbc +0.000,
    # reuters -0.002; 2.0 gave about half the gain at the same cost on reuters.
    feedback_weight: float = Field(
        3.0, ge=0.0, le=10.0, description="Weight of the feedback neighbours' mean row against the article's own."
    )
    # 0.34 (was 1.0, all 301): the feedback pass re-scores the first pass's best ~100. Measured with
    # benchmarks/levers.py, nDCG@10 against 1.0: duc2004 -0.0000, bbc -0.0000, 10kgnad -0.0005,
    # reuters +0.0001 (0.2: at most -0.0005 too); the pass costs a third and the candidates kept
    # between the passes take a third of the memory (0.8 instead of 2.4 GB at 1M articles).
    second_pass_share: float = Field(
        0.34, gt=0.0, le=1.0, description="Best share of the first pass's candidates that the feedback pass re-scores."
    )
    time_weight: float = Field(0.3, ge=0.0, le=1.0, description="Share of the score that depends on date proximity.")
    time_scale_days: float = Field(14.0, gt=0.0, description="Proximity exp(-days/scale).")
    signature_terms: int = Field(128, ge=0, description="Top-weighted terms per article used for scoring (0 = all).")
    rare_candidates: int = Field(20, ge=0, description="Extra candidates sharing rare terms (0 = FAISS only).")
    rare_terms: int = Field(8, ge=1, description="Heaviest query terms used to find rare-term candidates.")
    rare_max_df: float = Field(0.01, gt=0.0, le=1.0, description="Rare: in at most this share of articles.")
    rare_postings: int = Field(
        1000, ge=1, description="Postings read per rare term, the nearest in publication time (a fixed cost per article)."
    )

    def params(self) -> NeighbourParams:
        return NeighbourParams(**self.model_dump())


class PolicyConfig(_Section):
    """Request-time ranking policy applied on the precomputed list."""

    same_language: bool = True
    duplicates: bool = Field(True, description="Collapse copies (off: copies are served as ranked, for evaluation).")
    # 0.98 (was 0.995): at 0.995 the policy missed 30% of the copies the shingle relation finds
    # (recommender/evaluation/resemblance.py), leaving 1.0% of duc2004's listed items copies; at 0.98
    # 0.7%, and novelty_nDCG@10 rises on every labelled set.
    duplicate_threshold: float = Field(0.98, gt=0.0, le=1.0, description="Cosine above which two items are copies.")
    duplicate_same_title: bool = Field(True, description="Same normalized title (or same URL) means a copy.")
    freshness_half_life_days: float | None = Field(None, gt=0.0)
    freshness_weight: float = Field(0.2, ge=0.0, le=1.0)
    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0)
    category_cap: int | None = Field(None, ge=1)
    why_terms: int = Field(5, ge=1, le=20)
    # 0.1: the highest floor at which nDCG@10 drops by <= 0.002 on every labelled set
    # (benchmarks/min_score_floor.py: 10kGNAD -0.0012 at 0.10, -0.0046 at 0.11; the others 0.000).
    min_score: float = Field(
        0.1, ge=0.0, le=1.0, description="Relevance floor: items scoring less are not listed (a list may be short)."
    )
    fill: Literal["none", "latest"] = Field(
        "none", description="`latest`: free slots of a short list get the newest articles of the query's section "
        "and language, marked `filler`."
    )
    min_language_articles: int = Field(
        3, ge=0, description="A query whose language has fewer other articles gets items of any language."
    )


class BuildConfig(_Section):
    keep: int = Field(3, ge=1, description="Complete versions kept on disk.")
    max_reject_share: float = Field(0.1, ge=0.0, le=1.0, description="Fail when more records are rejected.")
    workers: int = Field(0, ge=0, description="Processes for text analysis, threads for the neighbour search (0 = one per CPU core).")
    drift_new_share: float = Field(
        0.2, ge=0.0, description="Recommend a full rebuild when this share of articles was added by updates."
    )
    drift_oov_share: float = Field(
        0.3, ge=0.0, le=1.0, description="Recommend a full rebuild when this share of updated words is out of vocabulary."
    )
    gate_margin: float = Field(
        0.05, ge=0.0, le=1.0, description="`build --gate`: refuse a version worse than the previous by more than this."
    )
    gate_min_overlap: float = Field(
        0.5, ge=0.0, le=1.0, description="`build --gate` without labels: refuse when top-10 lists overlap less."
    )
    dask_scheduler: str = Field(
        "", description="Dask scheduler address (tcp://host:8786): run the build's work on that cluster; empty: here."
    )
    dask_partition_bytes: int = Field(
        64 * 2**20, ge=1024, description="Dask build: bytes of source per partition (one ingest and analysis task)."
    )
    dask_shared_dir: str = Field(
        "", description="Dask build: a directory every worker sees at the same path (the shared data mount); the "
        "neighbour search's inputs are written there and memory-mapped, one copy per machine. Empty: one per worker process."
    )


class SourceConfig(_Section):
    """Database sources (`--source sqlite:///cms.db`): how rows map to articles."""

    query: str = Field(
        "", description="SELECT aliasing columns to id, title, body, published, lang, category, url, updated_at, "
        "deleted; a shipped name (`wordpress`) or a .sql file. Empty: table `articles`. --query overrides it.",
    )
    fetch_rows: int = Field(1000, ge=1, description="Rows fetched per round trip (server-side cursor).")


class PipelineConfig(_Section):
    text: TextConfig = TextConfig()
    reduce: ReduceConfig = ReduceConfig()
    index: IndexConfig = IndexConfig()
    neighbours: NeighbourConfig = NeighbourConfig()
    policy: PolicyConfig = PolicyConfig()
    build: BuildConfig = BuildConfig()
    source: SourceConfig = SourceConfig()
    name: str = "default"

    @classmethod
    def load(cls, path: Path | None) -> PipelineConfig:
        """Defaults when `path` is None; a readable error for a bad file."""
        if path is None:
            return cls()
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RelatedError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as err:
            raise RelatedError(f"config file {path} is not valid TOML: {err}") from None
        raw.setdefault("name", Path(path).stem)
        return cls.from_dict(raw, origin=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "config") -> PipelineConfig:
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise RelatedError(f"invalid {origin}: {problems}") from None

    @classmethod
    def from_manifest(cls, raw: dict[str, Any], origin: str) -> PipelineConfig:
        """A stored version's config; fields this code does not know (written by another
        release) are dropped rather than making the version unreadable."""
        known: dict[str, Any] = {}
        for key, value in raw.items():
            field = cls.model_fields.get(key)
            if field is None:
                continue
            section = field.annotation
            if isinstance(value, dict) and isinstance(section, type) and issubclass(section, BaseModel):
                value = {k: v for k, v in value.items() if k in section.model_fields}
            known[key] = value
        return cls.from_dict(known, origin=origin)

    def with_query(self, query: str | None) -> PipelineConfig:
        """This config reading databases with `query` (None: unchanged), as `--query` asks."""
        if query is None:
            return self
        return self.model_copy(update={"source": self.source.model_copy(update={"query": query})})

    def fingerprint(self) -> str:
        """Hash of everything that changes what a version serves (the policy travels in its manifest)."""
        payload = self.model_dump(mode="json", exclude={"name", "build", "source"})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
