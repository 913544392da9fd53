"""A build past one machine: the stages' corpus-sized work as tasks on a Dask cluster.

`related build --dask tcp://scheduler:8786` runs the stages of recommender.pipeline.build with this
executor, on Dask's distributed scheduler (no scheduler of our own). Only what a version holds
comes back to the build's process:

- ingest: partitions of the source (recommender.pipeline.partitions) are read and validated by tasks;
  this process applies the duplicate rule to the ids and lines they found;
- vectorize: per partition, language detection, analysis and term counts; this process merges
  the partitions' term statistics into the vocabulary and IDF one process would fit, tasks weigh
  each partition's counts into TF-IDF rows, and the LSA projection is fitted on the gathered
  rows by the local code (a seeded sample), so the vectors are the local build's;
- neighbours: the index and the corpus matrices reach the workers once (sent to every worker
  process, or written to a shared directory they map), and ranges of rows are searched as
  tasks: first pass and feedback expansion, then (with every row's expansion shared the same
  way) the final pass.

The FAISS index, the served lists and the version are made here, as in a local build.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from operator import itemgetter
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Self

import fsspec
import numpy as np
import scipy.sparse as sp
from distributed import Client, Future, as_completed

from index.faiss_index import load_index, save_index
from index.neighbours import (
    Corpus, FirstPass, NeighbourParams, expanded_rows, final_pass_rows, first_pass_rows, row_ranges,
)
from index.postings import RarePostings
from recommender.pipeline.build import Intake, article_rows, documents
from recommender.config import PipelineConfig
from recommender.errors import RelatedError
from recommender.pipeline.progress import Advance, Bars
from recommender.pipeline.partitions import Partition, PartRead, plan_partitions, read_partition
from recommender.pipeline.sources import LastWins, source_format
from recommender.vectors.tfidf import ArticleVectorizer, Document, TermCounts, TermStatistics, Vectors, count_documents

CONNECT_SECONDS = 30
TASKS_PER_THREAD = 4  # neighbour-search tasks per worker thread: enough to even out uneven ranges


class DaskExecutor:
    """Runs a build's ingest, analysis, term counting, weighting and neighbour search as tasks on
    the cluster whose scheduler is at `address`; `partition_bytes` of source per partition.

    `shared_dir`: a directory this process and every worker see at the same path; the neighbour
    search's inputs go there instead of to every worker process (see `share_corpus`)."""

    def __init__(self, address: str, partition_bytes: int, shared_dir: Path | str = "") -> None:
        self.address = address
        self.partition_bytes = partition_bytes
        self.shared_dir = shared_dir
        self._client: Client | None = None
        self._partitions: list[Partition] = []
        self._reads: list[Future] = []  # PartRead per partition, kept on the workers
        self._winners: list[np.ndarray] = []  # per partition: lines of the records that won their id

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Client:
        """Connected on first use, so a build with nothing to do needs no cluster."""
        if self._client is None:
            try:
                self._client = Client(self.address, timeout=CONNECT_SECONDS, set_as_default=False)
            except OSError as e:
                raise RelatedError(f"cannot reach the Dask scheduler at {self.address}: {e}") from e
        return self._client

    def describe(self) -> dict[str, object]:
        threads = self.client.nthreads()
        return {
            "kind": "dask", "scheduler": self.address, "workers": len(threads), "threads": sum(threads.values()),
            "partitions": len(self._partitions),
        }

    def locate(self, source: Path | str) -> str:
        """A local path made absolute (workers must see it at the same place) or an fsspec URL."""
        location = str(source)
        if fsspec.core.split_protocol(location)[0] is None:
            location = str(Path(location).resolve())
        fs, path = fsspec.core.url_to_fs(location)
        if not fs.isfile(path):
            raise RelatedError(f"source file not found: {source}")
        source_format(PurePosixPath(path))  # an unknown format fails before any task runs
        return location

    def open(self, location: str) -> BinaryIO:
        return fsspec.open(location, "rb").open()

    def ingest(self, location: str, bars: Bars) -> Intake:
        client = self.client
        self._partitions = plan_partitions(client, location, self.partition_bytes)
        self._reads = client.map(read_partition, self._partitions, pure=False)
        duplicates = LastWins()
        rejects = []
        records = 0
        occurrences = client.map(PartRead.occurrences, self._reads, pure=False)
        with bars("ingest", len(occurrences), unit="part") as advance:
            tick(client, occurrences, advance)
        for lines, ids, part_rejects, part_records in client.gather(occurrences):
            for line, article_id in zip(lines.tolist(), ids):
                duplicates.admit(line, article_id, None)
            rejects += part_rejects
            records += part_records
        winners = np.sort(np.fromiter((line for line, _ in duplicates.winners.values()), dtype=np.int64))
        self._winners = np.split(winners, np.searchsorted(winners, [p.first_line for p in self._partitions[1:]]))
        return Intake(records, len(winners), sorted(rejects + duplicates.rejects, key=lambda r: r.line))

    def vectorize(self, vectorizer: ArticleVectorizer, config: PipelineConfig, bars: Bars) -> tuple[Vectors, list[dict]]:
        client = self.client
        prepared = client.map(prepare, self._reads, self._winners, config=config, pure=False)
        self._reads, self._winners = [], []  # the workers drop the partitions' records once prepared
        counts = client.map(count_partition, prepared, config=config, pure=False)
        statistics = client.map(TermStatistics.of, counts, pure=False)
        with bars("vectorize", len(statistics), unit="part") as advance:
            tick(client, statistics, advance)
        vectorizer.fit_vocabulary(TermStatistics.merge(client.gather(statistics)))
        fitted = client.scatter(vectorizer, broadcast=True, hash=False)
        weighed = client.map(weigh_partition, counts, vectorizer=fitted, pure=False)
        rows = [row for part in client.gather(client.map(itemgetter(1), prepared, pure=False)) for row in part]
        sparse = sp.vstack(client.gather(weighed)).tocsr()
        return Vectors(sparse=sparse, dense=vectorizer.fit_reduce(sparse, bars)), rows

    def neighbours(
        self, corpus: Corpus, params: NeighbourParams, progress: Callable[[int], object]
    ) -> tuple[np.ndarray, np.ndarray]:
        client = self.client
        ranges = row_ranges(corpus.sparse.shape[0], params.batch_size, TASKS_PER_THREAD * sum(client.nthreads().values()))
        with self.sharing() as directory:
            shared = share_corpus(client, corpus, directory)
            found = client.map(first_pass_range, ranges, corpus=shared, params=params, pure=False)
            expansions = client.map(expansion, found, corpus=shared, params=params, pure=False)
            report(client, found, ranges, progress)
            if params.feedback > 0:
                corpus.expanded = sp.vstack(client.gather(expansions)).tocsr()
            expanded = share_expanded(client, corpus.expanded, directory)
            final = client.map(final_pass_range, found, corpus=shared, expanded=expanded, params=params, pure=False)
            report(client, final, ranges, progress)
            lists = client.gather(final)
        return np.concatenate([ids for ids, _ in lists]), np.concatenate([scores for _, scores in lists])

    @contextmanager
    def sharing(self) -> Iterator[Path | None]:
        """A scratch directory in `shared_dir` for the neighbour search's inputs, removed afterwards
        (workers first drop what they mapped); None without a shared directory."""
        if not self.shared_dir:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix=".related-corpus-", dir=self.shared_dir) as directory:
            os.chmod(directory, 0o755)  # workers may run as another user
            try:
                yield Path(directory)
            finally:
                self.client.run(forget_shared)


def tick(client: Client, futures: list[Future], advance: Advance) -> None:
    """Advance by one as each task finishes; returns when all have."""
    for _ in as_completed(futures, loop=client.loop):
        advance(1)


def report(client: Client, futures: list[Future], ranges: list[slice], progress: Callable[[int], object]) -> None:
    """Each range's rows as its task of one of the two passes finishes."""
    rows = {future.key: r.stop - r.start for future, r in zip(futures, ranges)}
    for done in as_completed(futures, loop=client.loop):
        progress(rows[done.key])


def save_matrix(directory: Path, prefix: str, matrix: sp.csr_matrix) -> None:
    for part in ("data", "indices", "indptr"):
        np.save(directory / f"{prefix}_{part}.npy", getattr(matrix, part))
    np.save(directory / f"{prefix}_shape.npy", np.asarray(matrix.shape))


def load_matrix(directory: Path, prefix: str) -> sp.csr_matrix:
    data, indices, indptr = (np.load(directory / f"{prefix}_{part}.npy", mmap_mode="r") for part in ("data", "indices", "indptr"))
    shape = tuple(np.load(directory / f"{prefix}_shape.npy").tolist())
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def share_corpus(client: Client, corpus: Corpus, directory: Path | None) -> Future | str:
    """What the search tasks get of the corpus: files in `directory` (memory-mapped by the workers,
    so the processes of one machine share one copy in its page cache), or a copy per worker process."""
    if directory is None:
        return client.scatter(corpus, broadcast=True, hash=False)
    save_index(corpus.index, directory / "index.faiss")
    save_matrix(directory, "signature", corpus.sparse)
    np.save(directory / "dense.npy", corpus.dense)
    np.save(directory / "times.npy", corpus.times)
    if corpus.postings is not None:
        for name, array in corpus.postings.arrays().items():
            np.save(directory / f"{name}.npy", array)
    # The re-scoring factor: without it a lossy index's candidates would keep their approximate
    # dense scores on the workers, and every blended score would differ from the local build's.
    (directory / "corpus.json").write_text(json.dumps({"rerank": corpus.rerank}), encoding="utf-8")
    return str(directory)


def share_expanded(client: Client, expanded: sp.csr_matrix | None, directory: Path | None) -> Future | str | None:
    if expanded is None or directory is None:
        return None if expanded is None else client.scatter(expanded, broadcast=True, hash=False)
    save_matrix(directory, "expanded", expanded)
    return str(directory)


# Tasks: module functions, so workers import them instead of receiving their code.


@lru_cache(maxsize=1)
def shared_corpus(directory: str) -> Corpus:
    """The corpus a scratch directory holds, mapped once per worker process."""
    path = Path(directory)
    sparse, times = load_matrix(path, "signature"), np.load(path / "times.npy")
    return Corpus(
        index=load_index(path / "index.faiss"), sparse=sparse, times=times, dense=np.load(path / "dense.npy", mmap_mode="r"),
        rerank=json.loads((path / "corpus.json").read_text(encoding="utf-8"))["rerank"],
        postings=RarePostings.stored(SharedFiles(path), sparse, times),
    )


@dataclass(frozen=True)
class SharedFiles:
    """A scratch directory's arrays, as `RarePostings.stored` reads a version's."""

    path: Path

    def has(self, name: str) -> bool:
        return (self.path / name).exists()

    def array(self, name: str) -> np.ndarray:
        return np.load(self.path / name, mmap_mode="r")


@lru_cache(maxsize=1)
def shared_expanded(directory: str) -> sp.csr_matrix:
    return load_matrix(Path(directory), "expanded")


def forget_shared() -> None:
    """Unmap a finished build's scratch files (run on every worker)."""
    shared_corpus.cache_clear()
    shared_expanded.cache_clear()


def corpus_of(shared: Corpus | str) -> Corpus:
    return shared_corpus(shared) if isinstance(shared, str) else shared




def prepare(read: PartRead, winners: np.ndarray, config: PipelineConfig) -> tuple[list[Document], list[dict]]:
    """The partition's winning articles as vectorizer documents (language detected) and metadata rows."""
    keep = set(winners.tolist())
    articles = [article for line, article in read.items if line in keep]
    docs = documents(articles, config)
    return docs, article_rows(articles, docs)


def count_partition(prepared: tuple[list[Document], list[dict]], config: PipelineConfig) -> TermCounts:
    return count_documents(ArticleVectorizer(config.text, config.reduce), prepared[0])


def weigh_partition(counts: TermCounts, vectorizer: ArticleVectorizer) -> sp.csr_matrix:
    return vectorizer.weigh(counts)


def first_pass_range(rows: slice, corpus: Corpus | str, params: NeighbourParams) -> FirstPass:
    corpus = corpus_of(corpus)
    return first_pass_rows(corpus, params, corpus.dense, rows)


def expansion(found: FirstPass, corpus: Corpus | str, params: NeighbourParams) -> sp.csr_matrix | None:
    return expanded_rows(corpus_of(corpus), params, found)


def final_pass_range(
    found: FirstPass, corpus: Corpus | str, expanded: sp.csr_matrix | str | None, params: NeighbourParams
) -> tuple[np.ndarray, np.ndarray]:
    corpus = corpus_of(corpus)
    if isinstance(expanded, str):
        expanded = shared_expanded(expanded)
    return final_pass_rows(replace(corpus, expanded=expanded), params, corpus.dense, found)
