"""Full build: source file -> validated articles -> vectors -> FAISS -> neighbour lists -> version.

Cron-safe by construction: an exclusive lock, a content hash that makes repeated runs no-ops,
a staging directory that only becomes a version once complete, and `current` switched last.
"""
from __future__ import annotations

import hashlib
import os
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from index.artifacts import VersionWriter, build_lock, current_version, find_version_by_hash, prune, publish
from index.faiss_index import IndexParams, build_index, rerank_factor
from index.neighbours import Corpus, build_neighbours, prune_rows
from recommender.analysis import detect_language
from recommender.articles import Article, Ingested
from recommender.config import PipelineConfig
from recommender.errors import RelatedError
from recommender.gate import GateRefused, GateResult
from recommender.ranking import Catalog, epochs
from recommender.served import precomputable, served_lists
from recommender.sources import read_source, write_rejects
from recommender.tfidf import ArticleVectorizer, Document, Vectors

log = logging.getLogger("related.build")
ARTIFACT_LAYOUT = 5  # bump when the files of a version change meaning: old versions are then rebuilt
LIBRARIES = ("related-articles", "numpy", "scipy", "scikit-learn", "faiss-cpu")


@dataclass
class BuildReport:
    version: Path | None
    records: int
    articles: int
    rejects: int
    seconds: float
    unchanged: bool = False
    stages: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        name = self.version.name if self.version else "-"
        state = "unchanged" if self.unchanged else "built"
        return (
            f"{state} version={name} articles={self.articles} rejects={self.rejects} "
            f"records={self.records} seconds={self.seconds:.1f}"
        )


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def content_hash(source: Path, config: PipelineConfig) -> str:
    """Same input bytes and same artifact-relevant config -> same hash -> no new version."""
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    digest.update(config.fingerprint().encode())
    digest.update(f"{library_versions()['related-articles']}/{ARTIFACT_LAYOUT}".encode())
    return digest.hexdigest()


def documents(articles: Sequence[Article], config: PipelineConfig) -> list[Document]:
    """Vectorizer input; the language comes from the record or is detected from the text."""
    default = config.text.default_lang
    return [
        Document(lang=a.lang or detect_language(f"{a.title}. {a.body}", default), title=a.title, body=a.body)
        for a in articles
    ]


def article_rows(articles: Sequence[Article], docs: Sequence[Document]) -> list[dict]:
    return [a.to_metadata() | {"lang": d.lang} for a, d in zip(articles, docs)]


def compute_neighbours(
    index, vectors: Vectors, times: np.ndarray, config: PipelineConfig, progress: Callable[[int], object] | None = None
) -> tuple[Corpus, np.ndarray, np.ndarray]:
    params = config.neighbours.params()
    corpus = Corpus(
        index=index, sparse=prune_rows(vectors.sparse, params.signature_terms), times=times, dense=vectors.dense,
        rerank=rerank_factor(index, config.index.rerank),
    )
    ids, scores = build_neighbours(corpus, params, vectors.dense, progress=progress)
    return corpus, ids, scores


def publication_times(rows: Sequence[dict]) -> np.ndarray:
    """Epoch seconds per article (NaN when unknown), from the metadata rows."""
    return epochs([r.get("published") for r in rows])


def save_sparse(writer: VersionWriter, prefix: str, matrix: sp.csr_matrix) -> None:
    """CSR as three plain arrays, so the service can memory-map them."""
    writer.save_array(f"{prefix}_data.npy", matrix.data.astype(np.float32))
    writer.save_array(f"{prefix}_indices.npy", matrix.indices.astype(np.int32))
    writer.save_array(f"{prefix}_indptr.npy", matrix.indptr.astype(np.int64))


def write_version(
    writer: VersionWriter,
    *,
    vectorizer: ArticleVectorizer,
    sparse: sp.csr_matrix,
    dense: np.ndarray,
    coverage: np.ndarray,
    corpus: Corpus,
    neighbours: tuple[np.ndarray, np.ndarray],
    served: tuple[np.ndarray, np.ndarray] | None,
    rows: list[dict],
    alive: np.ndarray,
) -> None:
    terms, arrays = vectorizer.state()
    writer.save_json("vocabulary.json", terms)
    writer.save_json("display_terms.json", vectorizer.display_)
    for name, array in arrays.items():
        writer.save_array(f"{name}.npy", array)
    save_sparse(writer, "tfidf", sparse)
    save_sparse(writer, "signature", corpus.sparse)
    if corpus.expanded is not None:
        save_sparse(writer, "expanded", corpus.expanded)
    writer.save_array("dense.npy", dense)
    writer.save_array("lsa_coverage.npy", coverage)
    writer.save_index("index.faiss", corpus.index)
    writer.save_array("neighbours.npy", neighbours[0])
    writer.save_array("neighbour_scores.npy", neighbours[1])
    if served is not None:
        writer.save_array("served.npy", served[0])
        writer.save_array("served_scores.npy", served[1])
    writer.save_array("alive.npy", alive)
    writer.save_jsonl("articles.jsonl", rows)


def check_rejects(ingested: Ingested, source: Path, config: PipelineConfig) -> None:
    if not ingested.articles:
        raise RelatedError(
            f"no valid articles in {source}: {ingested.records} records, {len(ingested.rejects)} rejected"
        )
    share = len(ingested.rejects) / max(1, ingested.records)
    if share > config.build.max_reject_share:
        raise RelatedError(
            f"{len(ingested.rejects)} of {ingested.records} records rejected ({share:.0%}), more than "
            f"build.max_reject_share={config.build.max_reject_share:.0%}; see the rejects file"
        )


def check_gate(gate: Callable[[Path, Path | None], GateResult] | None, version: Path, data_dir: Path) -> None:
    """Quality gate between commit and publish: a refused version stays on disk, `current` is unchanged."""
    if gate is not None:
        verdict = gate(version, current_version(data_dir))
        if not verdict.passed:
            raise GateRefused(version, verdict)


def build(
    source: Path,
    data_dir: Path,
    config: PipelineConfig,
    *,
    force: bool = False,
    progress: bool = False,
    gate: Callable[[Path, Path | None], GateResult] | None = None,
) -> BuildReport:
    """Build a new version from `source` and make it current. Raises RelatedError on user errors."""
    started = time.perf_counter()
    source = Path(source)
    if not source.is_file():
        raise RelatedError(f"source file not found: {source}")
    data_dir.mkdir(parents=True, exist_ok=True)
    with build_lock(data_dir):
        stages: dict[str, float] = {}
        digest = content_hash(source, config)
        existing = None if force else find_version_by_hash(data_dir, digest)
        if existing is not None:
            if current_version(data_dir) != existing.resolve():
                check_gate(gate, existing, data_dir)
                publish(data_dir, existing)
            return BuildReport(existing, 0, 0, 0, time.perf_counter() - started, unchanged=True)

        def stage(name: str, t0: float) -> float:
            now = time.perf_counter()
            stages[name] = round(now - t0, 3)
            log.info("%s: %.1fs", name, now - t0)
            return now

        t = time.perf_counter()
        ingested = read_source(source)
        rejects_path = data_dir / "rejects.jsonl"
        write_rejects(ingested.rejects, rejects_path)
        for reject in ingested.rejects[:20]:
            log.warning("rejected line %s (id=%s): %s", reject.line, reject.id, reject.reason)
        check_rejects(ingested, source, config)
        t = stage("ingest", t)

        docs = documents(ingested.articles, config)
        vectorizer = ArticleVectorizer(config.text, config.reduce)
        vectors = vectorizer.fit_transform(docs, workers=config.build.workers or os.cpu_count() or 1)
        t = stage("vectorize", t)

        index = build_index(vectors.dense, IndexParams(**config.index.model_dump()))
        t = stage("index", t)

        n = len(docs)
        rows = article_rows(ingested.articles, docs)
        with tqdm(total=n, desc="neighbours", unit="art", disable=not progress, leave=False) as bar:
            corpus, ids, scores = compute_neighbours(index, vectors, publication_times(rows), config, bar.update)
        t = stage("neighbours", t)
        served = None
        if precomputable(config.policy):
            alive = np.ones(n, dtype=bool)
            catalog = Catalog.from_rows(rows, sparse=vectors.sparse, dense=vectors.dense, coverage=vectors.coverage, alive=alive)
            served = served_lists(config.policy, catalog, ids, scores)
            t = stage("served", t)

        with VersionWriter(data_dir) as writer:
            write_version(
                writer, vectorizer=vectorizer, sparse=vectors.sparse, dense=vectors.dense, coverage=vectors.coverage, corpus=corpus, neighbours=(ids, scores), served=served,
                rows=rows, alive=np.ones(n, dtype=bool),
            )
            write_rejects(ingested.rejects, writer.path("rejects.jsonl"))
            meta = {
                "kind": "build",
                "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "source": {"path": str(source.resolve()), "records": ingested.records},
                "config": config.model_dump(mode="json"),
                "counts": {"articles": n, "rejects": len(ingested.rejects), "vocabulary": len(vectorizer.terms_)},
                "dims": int(vectors.dense.shape[1]),
                "index_type": type(index).__name__,
                "libraries": library_versions(),
                "stages": stages,
                "drift": {"articles_since_build": 0, "oov_token_share": 0.0},
            }
            version = writer.commit(meta, digest)
        check_gate(gate, version, data_dir)
        publish(data_dir, version, checksums=False)  # commit just hashed every file it wrote
        removed = prune(data_dir, config.build.keep)
        stage("write", t)
        for old in removed:
            log.info("pruned old version %s", old.name)
    return BuildReport(
        version, ingested.records, n, len(ingested.rejects), time.perf_counter() - started, stages=stages
    )
