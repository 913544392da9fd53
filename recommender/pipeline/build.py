"""Full build: source -> validated articles -> vectors -> FAISS -> neighbour lists -> version.

A build is a sequence of named stages (`STAGES`: ingest, vectorize, index, neighbours, served,
write), each timed into the manifest. An executor does the work that grows with the corpus
(reading and analysing articles, counting terms, weighting them, the neighbour search): the
`LocalExecutor` in this process, `recommender.pipeline.dask_build.DaskExecutor` as tasks on a Dask
cluster. The stages around it are the same, so both write the same version.

Cron-safe by construction: an exclusive lock, a content hash that makes repeated runs no-ops,
a staging directory that only becomes a version once complete, and `current` switched last.
"""
from __future__ import annotations

import hashlib
import io
import os
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Protocol

import faiss
import numpy as np
import scipy.sparse as sp

from index.artifacts import VersionWriter, build_lock, current_version, find_version_by_hash, prune, publish
from index.faiss_index import IndexParams, build_index, rerank_factor
from index.neighbours import Corpus, NeighbourParams, build_neighbours, prune_rows
from index.simhash import signatures
from recommender.vectors.language import DETECT_CHARS, LanguageDetector, assign_languages
from recommender.pipeline.articles import Article, Ingested, Reject
from recommender.config import PipelineConfig
from recommender.errors import RelatedError, SourceError
from recommender.pipeline.gate import GateRefused, GateResult
from recommender.policy.catalog import Catalog, epochs, write_columns
from recommender.pipeline.stages import Stage
from recommender.pipeline.progress import Bars, bars
from recommender.policy.served import precomputable, served_lists
from recommender.pipeline.sources import read_source, write_rejects
from recommender.pipeline.sql_source import DatabaseSource, Read, is_database_url
from recommender.vectors.tfidf import ArticleVectorizer, Document, Vectors

log = logging.getLogger("related.build")
SERVED_CHUNK = 20_000  # rows per served-lists call, so the bar advances
ARTIFACT_LAYOUT = 7  # bump when the files of a version change meaning: old versions are then rebuilt
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


def content_hash(source: BinaryIO, config: PipelineConfig) -> str:
    """Same input bytes and same artifact-relevant config -> same hash -> no new version."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: source.read(1 << 20), b""):
        digest.update(chunk)
    digest.update(config.fingerprint().encode())
    digest.update(f"{library_versions()['related-articles']}/{ARTIFACT_LAYOUT}".encode())
    return digest.hexdigest()


def documents(
    articles: Sequence[Article], config: PipelineConfig, detector: LanguageDetector | None = None
) -> list[Document]:
    """Vectorizer input; the language comes from the record, else is detected from the text: by
    `detector` (an update: the index's languages and default), or as a build does (assign_languages)."""
    texts = (f"{a.title}. {a.body[:DETECT_CHARS]}" for a in articles)
    if detector is None:
        langs = assign_languages([a.lang for a in articles], texts, config.text)
    else:
        langs = [a.lang or detector.detect(text) for a, text in zip(articles, texts)]
    return [Document(lang=lang, title=a.title, body=a.body) for a, lang in zip(articles, langs)]


def article_rows(articles: Sequence[Article], docs: Sequence[Document]) -> list[dict]:
    return [a.to_metadata() | {"lang": d.lang} for a, d in zip(articles, docs)]


def publication_times(rows: Sequence[dict]) -> np.ndarray:
    """Epoch seconds per article (NaN when unknown), from the metadata rows."""
    return epochs([r.get("published") for r in rows])


def save_sparse(writer: VersionWriter, prefix: str, matrix: sp.csr_matrix) -> None:
    """CSR as three plain arrays with sorted rows, so the service can memory-map them as they are."""
    if not matrix.has_sorted_indices:
        matrix = matrix.sorted_indices()
    writer.save_array(f"{prefix}_data.npy", matrix.data.astype(np.float32))
    writer.save_array(f"{prefix}_indices.npy", matrix.indices.astype(np.int32))
    writer.save_array(f"{prefix}_indptr.npy", matrix.indptr.astype(np.int64))


def write_version(
    writer: VersionWriter,
    *,
    vectorizer: ArticleVectorizer,
    sparse: sp.csr_matrix,
    dense: np.ndarray,
    simhash: np.ndarray,
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
    if corpus.postings is not None:
        for name, array in corpus.postings.arrays().items():
            writer.save_array(f"{name}.npy", array)
    writer.save_array("dense.npy", dense)
    writer.save_array("simhash.npy", simhash)
    writer.save_index("index.faiss", corpus.index)
    writer.save_array("neighbours.npy", neighbours[0])
    writer.save_array("neighbour_scores.npy", neighbours[1])
    if served is not None:
        writer.save_array("served.npy", served[0])
        writer.save_array("served_scores.npy", served[1])
    writer.save_array("alive.npy", alive)
    writer.save_jsonl("articles.jsonl", rows)
    write_columns(writer, rows)


@dataclass(frozen=True)
class Intake:
    """What the build's own process holds of an ingested source; the executor keeps the articles."""

    records: int
    articles: int
    rejects: list[Reject]
    sync: dict | None = None  # a database source: its identity and watermark, for `related sync`


def check_rejects(intake: Intake, location: str, config: PipelineConfig) -> None:
    if not intake.articles:
        raise RelatedError(
            f"no valid articles in {location}: {intake.records} records, {len(intake.rejects)} rejected"
        )
    share = len(intake.rejects) / max(1, intake.records)
    if share > config.build.max_reject_share:
        raise RelatedError(
            f"{len(intake.rejects)} of {intake.records} records rejected ({share:.0%}), more than "
            f"build.max_reject_share={config.build.max_reject_share:.0%}; see the rejects file"
        )


def check_gate(gate: Callable[[Path, Path | None], GateResult] | None, version: Path, data_dir: Path) -> None:
    """Quality gate between commit and publish: a refused version stays on disk, `current` is unchanged."""
    if gate is not None:
        verdict = gate(version, current_version(data_dir))
        if not verdict.passed:
            raise GateRefused(version, verdict)


class Executor(Protocol):
    """Where the work that grows with the corpus runs. The stages call `ingest`, `vectorize` and
    `neighbours` in that order; the executor keeps the articles between the first two."""

    def describe(self) -> dict[str, object]:
        """How the build ran, for the manifest."""
        ...

    def locate(self, source: Path | str) -> str:
        """The source as the manifest and the readers name it; RelatedError when there is none."""
        ...

    def open(self, location: str) -> BinaryIO:
        """The source's raw bytes, for the content hash."""
        ...

    def ingest(self, location: str, bars: Bars) -> Intake:
        ...

    def vectorize(self, vectorizer: ArticleVectorizer, config: PipelineConfig, bars: Bars) -> tuple[Vectors, list[dict]]:
        """Fit `vectorizer` on the ingested articles: their vectors and metadata rows, in row order."""
        ...

    def neighbours(
        self, corpus: Corpus, params: NeighbourParams, progress: Callable[[int], object]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour lists of every corpus row, as `build_neighbours` computes them (it fills
        `corpus.expanded` too); `corpus.dense` holds the queries."""
        ...


class LocalExecutor:
    """Everything in this process; text analysis shared by `workers` forked processes, the neighbour
    search by `workers` threads."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._ingested: Ingested | None = None

    def describe(self) -> dict[str, object]:
        return {"kind": "local", "workers": self.workers}

    def locate(self, source: Path | str) -> str:
        path = Path(source)
        if not path.is_file():
            hint = " (URLs need a Dask build: --dask)" if "://" in str(source) else ""
            raise RelatedError(f"source file not found: {source}{hint}")
        return str(path.resolve())

    def open(self, location: str) -> BinaryIO:
        try:
            return open(location, "rb")
        except OSError as err:  # permission denied, I/O error
            raise SourceError(f"cannot read source file {location}: {err.strerror or err}") from None

    def ingest(self, location: str, bars: Bars) -> Intake:
        with bars("ingest", Path(location).stat().st_size, unit="B", unit_scale=True) as advance:
            self._ingested = read_source(Path(location), progress=advance)
        return Intake(self._ingested.records, len(self._ingested.articles), self._ingested.rejects)

    def vectorize(self, vectorizer: ArticleVectorizer, config: PipelineConfig, bars: Bars) -> tuple[Vectors, list[dict]]:
        assert self._ingested is not None, "ingest first"
        articles = self._ingested.articles
        self._ingested = None  # the texts (several GB at 1M articles) go once they are vectors
        docs = documents(articles, config)
        return vectorizer.fit_transform(docs, workers=self.workers, bars=bars), article_rows(articles, docs)

    def neighbours(
        self, corpus: Corpus, params: NeighbourParams, progress: Callable[[int], object]
    ) -> tuple[np.ndarray, np.ndarray]:
        return build_neighbours(corpus, params, corpus.dense, progress=progress, threads=self.workers)


class DatabaseExecutor(LocalExecutor):
    """A database source, read once by this process: `open` streams and validates every row (the
    content hash is the hash of the rows, so an unchanged table builds no new version) and
    `ingest` hands the articles over with the watermark `related sync` starts from."""

    def __init__(self, source: DatabaseSource, workers: int) -> None:
        super().__init__(workers)
        self.source = source
        self._read: Read | None = None

    def locate(self, source: Path | str) -> str:
        return self.source.location

    def open(self, location: str) -> BinaryIO:
        self._read = self.source.read(allow_delete=False)
        return io.BytesIO(self._read.digest.encode())

    def ingest(self, location: str, bars: Bars) -> Intake:
        assert self._read is not None, "open first"
        read, self._read = self._read, None
        self._ingested = read.ingested
        sync = self.source.sync_state(read)
        return Intake(read.ingested.records, len(read.ingested.articles), read.ingested.rejects, sync=sync)


@dataclass
class BuildRun:
    """One build on its way through the stages: what it started from, then what each stage adds."""

    location: str
    data_dir: Path
    config: PipelineConfig
    executor: Executor
    digest: str
    bars: Bars
    gate: Callable[[Path, Path | None], GateResult] | None
    stages: dict[str, float] = field(default_factory=dict)  # seconds per finished stage
    intake: Intake | None = None
    vectorizer: ArticleVectorizer | None = None
    vectors: Vectors | None = None
    rows: list[dict] = field(default_factory=list)
    index: faiss.Index | None = None
    corpus: Corpus | None = None
    neighbours: tuple[np.ndarray, np.ndarray] | None = None
    simhash: np.ndarray | None = None
    served: tuple[np.ndarray, np.ndarray] | None = None
    version: Path | None = None


def ingest(run: BuildRun) -> None:
    """Validated articles and rejects; too many rejects fail the build before any work is done."""
    run.intake = run.executor.ingest(run.location, run.bars)
    write_rejects(run.intake.rejects, run.data_dir / "rejects.jsonl")
    for reject in run.intake.rejects[:20]:
        log.warning("rejected line %s (id=%s): %s", reject.line, reject.id, reject.reason)
    check_rejects(run.intake, run.location, run.config)


def vectorize(run: BuildRun) -> None:
    """Analysis, term counts, vocabulary and IDF, TF-IDF rows and their LSA vectors."""
    run.vectorizer = ArticleVectorizer(run.config.text, run.config.reduce)
    run.vectors, run.rows = run.executor.vectorize(run.vectorizer, run.config, run.bars)


def index_vectors(run: BuildRun) -> None:
    dense = run.vectors.dense
    with run.bars("index", len(dense)) as advance:  # cells are trained before the first rows count
        run.index = build_index(dense, IndexParams(**run.config.index.model_dump()), progress=advance)


def find_neighbours(run: BuildRun) -> None:
    params = run.config.neighbours.params()
    vectors = run.vectors
    run.corpus = Corpus(
        index=run.index, sparse=prune_rows(vectors.sparse, params.signature_terms),
        times=publication_times(run.rows), dense=vectors.dense, rerank=rerank_factor(run.index, run.config.index.rerank),
    )
    if params.rare_candidates > 0:
        run.corpus.rare_postings(params.rare_max_df)
    with run.bars("neighbours", 2 * len(run.rows)) as advance:  # each article twice: two passes
        run.neighbours = run.executor.neighbours(run.corpus, params, advance)


def serve_lists(run: BuildRun) -> None:
    """SimHash signatures (the copy screen), and the policy's unfiltered lists when the policy
    does not depend on the request."""
    vectors = run.vectors
    run.simhash = signatures(vectors.sparse)
    if precomputable(run.config.policy):
        catalog = Catalog.from_rows(
            run.rows, sparse=vectors.sparse, dense=vectors.dense, alive=np.ones(len(run.rows), dtype=bool),
            simhash=run.simhash,
        )
        ids, scores = run.neighbours
        parts = []
        with run.bars("served", len(ids)) as advance:
            for part in np.array_split(np.arange(len(ids)), max(1, len(ids) // SERVED_CHUNK)):
                parts.append(served_lists(run.config.policy, catalog, ids, scores, part))
                advance(len(part))
        run.served = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def write(run: BuildRun) -> None:
    """Commit the version, gate it, make it current and prune old ones."""
    n = len(run.rows)
    with VersionWriter(run.data_dir) as writer:
        write_version(
            writer, vectorizer=run.vectorizer, sparse=run.vectors.sparse, dense=run.vectors.dense,
            simhash=run.simhash, corpus=run.corpus, neighbours=run.neighbours, served=run.served,
            rows=run.rows, alive=np.ones(n, dtype=bool),
        )
        write_rejects(run.intake.rejects, writer.path("rejects.jsonl"))
        meta = {
            "kind": "build",
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "source": {"path": run.location, "records": run.intake.records},
            "config": run.config.model_dump(mode="json"),
            "counts": {"articles": n, "rejects": len(run.intake.rejects), "vocabulary": len(run.vectorizer.terms_)},
            "dims": int(run.vectors.dense.shape[1]),
            "index_type": type(run.index).__name__,
            "libraries": library_versions(),
            "executor": run.executor.describe(),
            "stages": run.stages,  # serialized at commit: the stages before this one
            "drift": {"articles_since_build": 0, "oov_token_share": 0.0},
        }
        if run.intake.sync is not None:
            meta["sync"] = run.intake.sync
        with run.bars("write", writer.staged_bytes(), unit="B", unit_scale=True) as advance:
            run.version = writer.commit(meta, run.digest, progress=advance)
    check_gate(run.gate, run.version, run.data_dir)
    publish(run.data_dir, run.version, checksums=False)  # commit just hashed every file it wrote
    for old in prune(run.data_dir, run.config.build.keep):
        log.info("pruned old version %s", old.name)


STAGES = (
    Stage("ingest", ingest),
    Stage("vectorize", vectorize),
    Stage("index", index_vectors),
    Stage("neighbours", find_neighbours),
    Stage("served", serve_lists),
    Stage("write", write),
)


def build(
    source: Path | str,
    data_dir: Path,
    config: PipelineConfig,
    *,
    force: bool = False,
    progress: bool = False,
    gate: Callable[[Path, Path | None], GateResult] | None = None,
    executor: Executor | None = None,
) -> BuildReport:
    """Build a new version from `source` and make it current. Raises RelatedError on user errors.

    `executor`: where the work runs (default: this process, `build.workers` processes for analysis).
    """
    started = time.perf_counter()
    workers = config.build.workers or os.cpu_count() or 1
    if is_database_url(source):
        if executor is not None:
            raise RelatedError("a database source is read by the build's own process: drop --dask (and build.dask_scheduler)")
        executor = DatabaseExecutor(DatabaseSource(str(source), config.source.query, fetch_rows=config.source.fetch_rows), workers)
    executor = executor or LocalExecutor(workers)
    location = executor.locate(source)
    with build_lock(data_dir):
        with executor.open(location) as handle:
            digest = content_hash(handle, config)
        existing = None if force else find_version_by_hash(data_dir, digest)
        if existing is not None:
            if current_version(data_dir) != existing.resolve():
                check_gate(gate, existing, data_dir)
                publish(data_dir, existing)
            return BuildReport(existing, 0, 0, 0, time.perf_counter() - started, unchanged=True)
        run = BuildRun(location, data_dir, config, executor, digest, bars(progress), gate)
        for stage in STAGES:
            stage.timed(run, run.stages, log)
    intake = run.intake
    return BuildReport(
        run.version, intake.records, intake.articles, len(intake.rejects), time.perf_counter() - started,
        stages=run.stages,
    )
