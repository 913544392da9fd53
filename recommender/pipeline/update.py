"""Incremental update: add, replace and delete articles in the current version without refitting.

`related update --source FILE` reads an update file (the corpus format, plus records
`{"id": ..., "deleted": true}`) and writes a new version derived from `current`:

- The vocabulary, IDF and SVD of the last full build are reused (`ArticleVectorizer.from_state`
  + `transform`); nothing is refitted, so old and new rows live in the same vector space.
- Rows are append-only. A new article gets a new row; an edited article (same id, different
  metadata or text) is *tombstoned* (`alive.npy` False) and re-added as a new row; a deleted
  one is only tombstoned. Row numbers of existing articles never change, so the FAISS index,
  the sparse matrices and every neighbour list stay valid and are appended to, not rebuilt.
  The API's id -> row map takes the last row of an id, which is the alive one. Tombstones are
  dropped by the next full build, which is why drift (below) recommends one.
- New rows get neighbour lists by the build's own two passes (FAISS candidates re-ranked by
  exact sparse cosine, then by the cosine of feedback-expanded rows, times the date factor),
  against the corpus *with* the new rows, so articles of one update find each other. Their
  expanded rows are appended to the stored expanded matrix.
- Targeted refresh: the score is symmetric (sparse and dense cosine, |date difference|), so
  the score of existing row r for new row j is the one computed for candidate r of j. Every
  FAISS candidate r of a new row j whose k-th score j beats gets j merged into its list.
- Lists that contained a tombstoned row drop it and are refilled by re-running the two-pass
  scoring for those rows only (their stored expanded rows are kept: they describe the
  neighbourhood at build time, as for every other row).
- Drift since the last full build (share of new articles, share of their word tokens outside
  the vocabulary) is carried from version to version in the manifest; past the configured
  thresholds `related info` and the update summary recommend a full rebuild.

Per-row artifacts (metadata, vectors, sparse rows, the FAISS index) are written as segments
(index/segments.py): the new version hard-links every part of its parent and adds one part
holding only the new rows, so an update writes kilobytes to megabytes, not the whole corpus;
past MAX_DELTAS parts the rows added since the build are merged into one part, and the next
full build writes single files again. Lists, tombstones and rejects are rewritten whole.

The build lock is held throughout; the new version is committed, verified and published
atomically, then old versions are pruned, exactly like a build.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp

from index import segments
from index.artifacts import Manifest, Version, VersionWriter, build_lock, current_version, prune, publish, read_manifest
from index.columns import KeyIndex
from index.errors import CorruptArtifactError, NoIndexError
from index.faiss_index import flat, load_index, rerank_factor, stack
from index.neighbours import (
    MISSING,
    Corpus,
    NeighbourParams,
    Queries,
    batches,
    expand,
    first_pass,
    prune_rows,
    rescore,
    subset,
    top_k,
)
from index.postings import FILES as POSTINGS_FILES, RarePostings
from index.simhash import signatures
from recommender.pipeline.articles import Ingested, Reject
from recommender.pipeline.build import article_rows, documents, library_versions
from recommender.policy.catalog import FILES as CATALOG_FILES, STRINGS, ArticleColumns, Catalog, item_fragment, language_counts
from recommender.config import BuildConfig, PipelineConfig, PolicyConfig
from recommender.errors import RejectedRecords, RelatedError
from recommender.policy.served import precomputable, served_lists
from recommender.pipeline.stages import Stage
from recommender.pipeline.changes import Changes, changes_of
from recommender.pipeline.sources import write_rejects
from recommender.vectors.language import LanguageDetector
from recommender.vectors.tfidf import STATE_ARRAYS, ArticleVectorizer, Vectors

log = logging.getLogger("related.update")

# The build's rare-term postings: the rows appended since get theirs at load (index/postings.py).
POSTINGS = tuple(f"{name}.npy" for name in POSTINGS_FILES)
# Fitted state an update reuses as is: hard-linked (or copied) into the new version.
UNCHANGED = ("vocabulary.json", "display_terms.json") + tuple(f"{name}.npy" for name in STATE_ARRAYS) + POSTINGS
# Per-row artifacts, append-only: the parent's parts are linked, the new rows go into a new part.
SPARSE = ("tfidf", "signature", "expanded")
SEGMENTED = ("articles.jsonl", "dense.npy", "simhash.npy", "index.faiss") + tuple(
    f"{prefix}_{field}.npy" for prefix in SPARSE for field in ("data", "indices", "indptr")
) + CATALOG_FILES
# Files an update rewrites whole. A version holding any other file is refused: an update that does not
# know a (new) per-article artifact would copy it unchanged and leave it out of step with the rows.
REWRITTEN = ("alive.npy", "neighbours.npy", "neighbour_scores.npy", "served.npy", "served_scores.npy", "rejects.jsonl")
MAX_DELTAS = 8  # parts appended since the build before they are merged into one
# Changed lists whose served list (served.py) an update recomputes, new articles first: about 0.3 ms
# each. The served lists of the others are cleared, so their unfiltered requests take the
# request-time policy (same answer, a little slower) until the next build: a large update
# changes most lists, and recomputing them all would cost more than the rest of the update.
SERVED_RECOMPUTE_MAX = 2_000


# --------------------------------------------------------------------------- report


@dataclass
class UpdateReport:
    version: Path | None  # None when nothing changed (no new version)
    parent: str
    records: int = 0
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    unchanged: int = 0
    not_found: int = 0  # deletions of ids the index does not hold
    rejects: int = 0
    rejected: list[Reject] = field(default_factory=list)  # the rejects themselves, with their lines
    refreshed: int = 0  # existing lists a new article entered
    refilled: int = 0  # existing lists refilled after losing a replaced/deleted article
    served_cleared: int = 0  # changed lists left to the request-time policy (SERVED_RECOMPUTE_MAX)
    articles: int = 0  # alive articles in the new version
    seconds: float = 0.0
    drift: dict[str, Any] = field(default_factory=dict)
    rebuild_reasons: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "updated" if self.version is not None else "unchanged"

    def summary(self) -> str:
        """One key=value line for logs (cron greps it)."""
        name = self.version.name if self.version else self.parent
        return (
            f"status={self.status} version={name} parent={self.parent} articles={self.articles} "
            f"added={self.added} replaced={self.replaced} deleted={self.deleted} unchanged={self.unchanged} "
            f"not_found={self.not_found} rejects={self.rejects} refreshed={self.refreshed} "
            f"refilled={self.refilled} new_share={self.drift.get('new_share', 0.0):.3f} "
            f"oov_share={self.drift.get('oov_token_share', 0.0):.3f} "
            f"rebuild_recommended={'yes' if self.rebuild_reasons else 'no'} seconds={self.seconds:.2f}"
        )


# --------------------------------------------------------------------------- drift


def drift_advice(drift: dict[str, Any] | None, config: BuildConfig) -> list[str]:
    """Why a full rebuild is recommended (empty: it is not)."""
    if not drift:
        return []
    reasons = []
    new_share = float(drift.get("new_share", 0.0) or 0.0)
    oov_share = float(drift.get("oov_token_share", 0.0) or 0.0)
    if new_share > config.drift_new_share:
        reasons.append(
            f"{new_share:.0%} of the articles are new since the last full build "
            f"(build.drift_new_share={config.drift_new_share:.0%})"
        )
    if oov_share > config.drift_oov_share:
        reasons.append(
            f"{oov_share:.0%} of their word tokens are outside the vocabulary "
            f"(build.drift_oov_share={config.drift_oov_share:.0%})"
        )
    return reasons


def base_drift(manifest: Manifest) -> dict[str, Any]:
    """The drift record of a version, normalised; a full build starts a fresh one."""
    data = manifest.data
    drift = dict(data.get("drift") or {})
    if data.get("kind", "build") == "build" or "base_version" not in drift:
        articles = int((data.get("counts") or {}).get("articles", 0))
        return {
            "base_version": manifest.name, "base_articles": articles, "updates_since_build": 0,
            "articles_since_build": 0, "deleted_since_build": 0, "tokens_since_build": 0,
            "oov_tokens_since_build": 0, "new_share": 0.0, "oov_token_share": 0.0,
        }
    return drift


def oov_counts(vectorizer: ArticleVectorizer, analysed: list[list[str]]) -> tuple[int, int]:
    """(word tokens, word tokens outside the vocabulary) of analysed documents (`vectorizer.analyze`).

    Only unigrams count: n-grams of known words are mostly unseen combinations, not new words.
    """
    vocabulary = vectorizer.vocabulary  # not a set of its own: the worker that posts an update keeps what it allocates
    total = oov = 0
    for terms in analysed:
        words = [t for t in terms if " " not in t]
        total += len(words)
        oov += sum(1 for w in words if w not in vocabulary)
    return total, oov


# --------------------------------------------------------------------------- loading


class ParentVersion:
    """The current version, read for an update.

    Every file the update reads whole or rewrites is checked against its sha256 first, so a
    corrupt parent is not carried forward. The build's per-row parts (vectors, sparse rows, the
    FAISS index: most of the bytes) are only size-checked: they are linked unchanged into the
    new version with their checksums, so every reader still verifies them, and hashing them
    here would cost more than the rest of a small update.
    """

    def __init__(self, path: Path) -> None:
        self.version = Version(read_manifest(path))
        self.manifest = self.version.manifest
        self.path = path
        self.name = self.manifest.name
        self.files: dict[str, dict[str, Any]] = self.manifest.data["files"]
        self._hashed: set[str] = set()  # files already checked by hash in this update

    def logical_files(self) -> set[str]:
        """Artifact names, with segments counted once under their own name."""
        segmented = self.manifest.data.get("segments", {})
        parts = {part for names in segmented.values() for part in names}
        return (set(self.files) - parts) | set(segmented)

    def _checked(self, name: str, *, hashed: bool = True) -> Path:
        """Path of a listed file after checking its size (and sha256) against the manifest."""
        entry = self.files.get(name)
        if entry is None:
            raise CorruptArtifactError(f"version {self.name} has no file {name}")
        path = self.path / name
        hashed = hashed and name not in self._hashed
        try:
            if not hashed:
                size = path.stat().st_size
            else:
                with open(path, "rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                    size = handle.tell()
                if digest != entry["sha256"]:
                    raise CorruptArtifactError(f"checksum mismatch for {name} in version {self.name}: not updating it")
        except FileNotFoundError:
            raise CorruptArtifactError(f"missing file {name} in version {self.name}") from None
        if size != entry["bytes"]:
            raise CorruptArtifactError(f"size mismatch for {name} in version {self.name}: not updating it")
        if hashed:
            self._hashed.add(name)
        return path

    def parts(self, name: str) -> list[str]:
        return self.manifest.parts(name)

    def _paths(self, name: str) -> list[Path]:
        """The files of `name`, checked: the build's part of a per-row array (linked as is) by size, the rest by hash."""
        big = name in SEGMENTED
        return [self._checked(part, hashed=not (big and i == 0)) for i, part in enumerate(self.parts(name))]

    def raw(self, name: str) -> bytes:
        return self._checked(name).read_bytes()  # the second read comes from the page cache

    def has(self, name: str) -> bool:
        return self.version.has(name)

    def array(self, name: str) -> np.ndarray:
        """Checked, then memory-mapped read-only (versions are immutable): no copy of large arrays.
        The build's postings, linked as they are, are checked by size like its per-row parts."""
        return np.load(self._checked(name, hashed=name not in POSTINGS), mmap_mode="r", allow_pickle=False)

    def rows_array(self, name: str) -> np.ndarray:
        """A per-row artifact: its parts concatenated, memory-mapped and read-only."""
        return segments.concatenate(self._paths(name))

    def json(self, name: str) -> Any:
        return json.loads(self.raw(name))

    def columns(self) -> tuple[ArticleColumns, KeyIndex]:
        """The metadata columns, memory-mapped, and the id -> row index."""
        if not self.has("items.npy"):
            raise CorruptArtifactError(
                f"version {self.name} has no metadata columns (items.npy): it predates them, run a full `related build`"
            )
        arrays = {name.removesuffix(".npy"): self.rows_array(name) for name in CATALOG_FILES}
        columns = ArticleColumns.from_arrays(arrays)
        bounds = np.cumsum(segments.part_lengths(self._paths("id_hashes.npy"))).tolist()
        return columns, KeyIndex(columns.ids, arrays["id_hashes"], arrays["id_rows"], bounds)

    def raw_lines(self, name: str, start: int) -> bytes:
        """The bytes of the parts of a JSON Lines artifact from part `start` on."""
        return b"".join(path.read_bytes() for path in self._paths(name)[start:])

    def page_offsets(self, parts: dict[str, list[str]]) -> dict[str, int]:
        """Where in a page the data of a part appended to `parts` starts, per .npy artifact (index.segments)."""
        return {
            name: segments.append_offset([self.path / part for part in names])
            for name, names in parts.items() if name.endswith(".npy")
        }

    def sparse(self, prefix: str, n_terms: int) -> sp.csr_matrix | None:
        if not self.has(f"{prefix}_indptr.npy"):
            return None
        indptr = self.rows_array(f"{prefix}_indptr.npy")
        return sp.csr_matrix(
            (self.rows_array(f"{prefix}_data.npy"), self.rows_array(f"{prefix}_indices.npy"), indptr),
            shape=(len(indptr) - 1, n_terms), copy=False,
        )

    def rows_with(self, name: str, extra: np.ndarray) -> np.ndarray:
        """The rows of per-row artifact `name`, then `extra`, in one new array."""
        return segments.read_rows(self._paths(name), extra)

    def sparse_with(self, prefix: str, n_terms: int, extra: sp.csr_matrix) -> sp.csr_matrix | None:
        """The CSR rows of `prefix`, then `extra`'s, read into new arrays (None when not stored)."""
        if not self.has(f"{prefix}_indptr.npy"):
            return None
        indptr_paths = self._paths(f"{prefix}_indptr.npy")
        before = int(np.load(indptr_paths[-1], mmap_mode="r")[-1])
        indptr = segments.read_rows(indptr_paths, extra.indptr[1:].astype(np.int64) + before)
        data = self.rows_with(f"{prefix}_data.npy", extra.data)
        indices = self.rows_with(f"{prefix}_indices.npy", extra.indices)
        return sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_terms), copy=False)

    def nnz(self, prefix: str) -> int:
        """Non-zeros of a stored CSR artifact (the last offset of its last `indptr` part)."""
        return int(np.load(self._paths(f"{prefix}_indptr.npy")[-1], mmap_mode="r")[-1])

    def index_parts(self) -> list[faiss.Index]:
        """The index's parts, memory-mapped: an update adds a part, it never changes one."""
        return [load_index(path) for path in self._paths("index.faiss")]

    def link_into(self, writer: VersionWriter, name: str) -> None:
        """Unchanged file: hard link (versions are immutable) with its known checksum."""
        writer.link(name, self.path / name, self.files[name])


def append_rows(top: sp.csr_matrix, bottom: sp.csr_matrix) -> sp.csr_matrix:
    """Rows of `top` then `bottom` as float32 CSR (scipy's vstack is several times slower on large inputs)."""
    indptr = np.concatenate([top.indptr.astype(np.int64), bottom.indptr[1:].astype(np.int64) + top.indptr[-1]])
    return sp.csr_matrix(
        (np.concatenate([top.data, bottom.data]).astype(np.float32, copy=False),
         np.concatenate([top.indices, bottom.indices]).astype(np.int32, copy=False), indptr),
        shape=(top.shape[0] + bottom.shape[0], top.shape[1]), copy=False,
    )


@dataclass(frozen=True)
class Placement:
    """Where a new part goes after the parts it follows."""

    first_row: int
    blob_before: dict[str, int]  # bytes of each string column (catalog.STRINGS) before it
    page_offsets: dict[str, int]  # per .npy artifact, where in a page its data starts (index.segments)


def save_rows(writer: VersionWriter, folder: str, place: Placement, *, dense: np.ndarray, columns: ArticleColumns,
              metadata: bytes, matrices: dict[str, tuple[sp.csr_matrix, int]], simhash: np.ndarray | None) -> None:
    """One new part of every per-row artifact in `folder`/: these rows, appended after the parent's.

    `metadata`: the part's lines of articles.jsonl. `matrices`: prefix -> (the part's CSR rows,
    non-zeros in the rows before them). The part of an `indptr` holds global offsets without
    the leading 0, so parts simply concatenate. Every array is written to be mapped in place
    after the parts before it (`place`), so the service maps the new rows instead of copying.
    """
    offset = place.page_offsets.get
    writer.save_array(f"{folder}/dense.npy", dense, page_offset=offset("dense.npy"))
    writer.save_index(f"{folder}/index.faiss", flat(dense))
    writer.path(f"{folder}/articles.jsonl").write_bytes(metadata)
    columns.save(writer, folder, first_row=place.first_row, blob_before=place.blob_before, page_offsets=place.page_offsets)
    if simhash is not None:
        writer.save_array(f"{folder}/simhash.npy", simhash, page_offset=offset("simhash.npy"))
    for prefix, (matrix, before) in matrices.items():
        if not matrix.has_sorted_indices:
            matrix = matrix.sorted_indices()
        for name, array in (("data", np.asarray(matrix.data, dtype=np.float32)),
                            ("indices", np.asarray(matrix.indices, dtype=np.int32)),
                            ("indptr", matrix.indptr[1:].astype(np.int64) + before)):
            writer.save_array(f"{folder}/{prefix}_{name}.npy", array, page_offset=offset(f"{prefix}_{name}.npy"))


def changed_served_lists(
    policy: PolicyConfig, old_columns: ArticleColumns, new_columns: ArticleColumns, old_sparse: sp.csr_matrix,
    new_sparse: sp.csr_matrix, dense: np.ndarray, simhash: np.ndarray, alive: np.ndarray, lists: Lists,
    changed: np.ndarray, width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Served lists of the `changed` rows, from a catalog of only those rows and their neighbours:
    the collapse reads only the rows of the lists it collapses, so a small update stays small."""
    involved = np.union1d(changed, lists.ids[changed][lists.ids[changed] >= 0])
    n_old = old_sparse.shape[0]
    old, new = involved[involved < n_old], involved[involved >= n_old] - n_old
    catalog = Catalog.of(
        old_columns.take(old).then(new_columns.take(new)),
        sparse=sp.vstack([old_sparse[old], new_sparse[new]], format="csr", dtype=np.float32),
        dense=np.asarray(dense[involved]), alive=alive[involved], simhash=np.asarray(simhash[involved]),
    )
    local = lambda ids: np.where(ids >= 0, np.searchsorted(involved, np.maximum(ids, 0)), -1)  # noqa: E731
    at = local(changed)
    neighbours = np.full((len(involved), lists.ids.shape[1]), -1, np.int32)
    scores = np.zeros(neighbours.shape, np.float32)
    neighbours[at], scores[at] = local(lists.ids[changed]), lists.scores[changed]
    out_rows, out_scores = served_lists(policy, catalog, neighbours, scores, at, width=width)
    return np.where(out_rows >= 0, involved[np.maximum(out_rows, 0)], -1).astype(np.int32), out_scores


def tail(matrix: sp.csr_matrix, start: int) -> tuple[sp.csr_matrix, int]:
    """Rows `start`.. of `matrix` and the non-zeros before them."""
    return matrix[start:], int(matrix.indptr[start])


# --------------------------------------------------------------------------- neighbours


@dataclass
class Lists:
    ids: np.ndarray  # int32 [N, K]
    scores: np.ndarray  # float32 [N, K]


def score_rows(
    corpus: Corpus, queries: Queries, params: NeighbourParams, *, expand_queries: bool = True,
) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], sp.csr_matrix | None]:
    """First pass over the FAISS candidates of `queries`, per batch, as in build_neighbours.

    With `expand_queries` the queries' feedback-expanded rows are computed from their first
    pass (returned; the caller appends them to `corpus.expanded` before `finish_rows`, so new
    rows can be each other's candidates). Returns the per-batch first-pass state.
    """
    parts = []
    feedback_parts = []
    for part in batches(queries.sparse.shape[0], params.batch_size):
        q = subset(queries, part)
        ids, dense_scores, first = first_pass(corpus, q, params, params.candidates)
        parts.append((ids, dense_scores, first))
        if expand_queries and params.feedback > 0:
            fb_ids, fb_scores = top_k(ids, first, params.feedback)
            feedback_parts.append(
                expand(q.sparse, corpus.sparse, fb_ids, fb_scores, params.feedback_weight, params.signature_terms)
            )
    computed = sp.vstack(feedback_parts).tocsr().astype(np.float32) if feedback_parts else None
    return parts, computed


def finish_rows(
    corpus: Corpus, queries: Queries, params: NeighbourParams, parts: list, expanded: sp.csr_matrix | None,
) -> tuple[Lists, np.ndarray, np.ndarray]:
    """Second pass: top-k lists of the queries plus every (candidate, score) for the refresh."""
    n = queries.sparse.shape[0]
    out = Lists(np.full((n, params.k), MISSING, np.int32), np.zeros((n, params.k), np.float32))
    all_ids, all_scores = [], []
    for part, (ids, dense_scores, first) in zip(batches(n, params.batch_size), parts):
        q = subset(queries, part)
        exp = None if expanded is None or corpus.expanded is None else expanded[part]
        scores = rescore(corpus, q, params, ids, dense_scores, first, exp)
        out.ids[part], out.scores[part] = top_k(ids, scores, params.k)
        all_ids.append(ids)
        all_scores.append(np.where(ids >= 0, scores, -np.inf).astype(np.float32))
    width = max((a.shape[1] for a in all_ids), default=0)
    pad = lambda a, v: np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=v)  # noqa: E731
    cand_ids = np.vstack([pad(a, MISSING) for a in all_ids]) if all_ids else np.empty((0, 0), np.int64)
    cand_scores = np.vstack([pad(a, -np.inf) for a in all_scores]) if all_scores else np.empty((0, 0), np.float32)
    return out, cand_ids, cand_scores


def merge_new(lists: Lists, new_rows: np.ndarray, cand_ids: np.ndarray, cand_scores: np.ndarray,
              eligible: np.ndarray) -> int:
    """Insert new row new_rows[i] into the list of each candidate cand_ids[i, j] it now ranks in.

    `eligible[r]`: row r's list may be changed here (alive, existing, not about to be refilled).
    Returns the number of lists changed. Whole-array work; no loop per pair.
    """
    k = lists.ids.shape[1]
    targets = cand_ids.ravel()
    sources = np.repeat(new_rows, cand_ids.shape[1])
    scores = cand_scores.ravel()
    keep = (targets >= 0) & np.isfinite(scores)
    keep[keep] &= eligible[targets[keep]]
    targets, sources, scores = targets[keep], sources[keep], scores[keep]
    if targets.size == 0:
        return 0
    last_ids = lists.ids[targets, k - 1]
    kth = np.where(last_ids >= 0, lists.scores[targets, k - 1], -np.inf)
    wins = scores > kth
    targets, sources, scores = targets[wins], sources[wins], scores[wins]
    if targets.size == 0:
        return 0
    order = np.lexsort((-scores, targets))  # by target, best first
    targets, sources, scores = targets[order], sources[order], scores[order]
    rows, start, counts = np.unique(targets, return_index=True, return_counts=True)
    rank = np.arange(targets.size) - np.repeat(start, counts)
    top = rank < k  # no more than k new ones can enter one list
    group = np.repeat(np.arange(rows.size), counts)[top]
    width = int(min(k, counts.max()))
    block_ids = np.full((rows.size, width), MISSING, np.int64)
    block_scores = np.full((rows.size, width), -np.inf, np.float32)
    block_ids[group, rank[top]] = sources[top]
    block_scores[group, rank[top]] = scores[top]
    old_ids = lists.ids[rows].astype(np.int64)
    old_scores = np.where(old_ids >= 0, lists.scores[rows], -np.inf).astype(np.float32)
    merged_ids, merged_scores = top_k(
        np.hstack([old_ids, block_ids]), np.hstack([old_scores, block_scores]), k
    )
    lists.ids[rows], lists.scores[rows] = merged_ids, merged_scores
    return int(rows.size)


# --------------------------------------------------------------------------- update


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _same(row: dict, columns: ArticleColumns, old: int, new_sparse: sp.csr_matrix, old_sparse: sp.csr_matrix) -> bool:
    """An unchanged re-send: same metadata as stored row `old` and the same TF-IDF row (hence the same text)."""
    if item_fragment(row) != columns.items.raw(old) or bool(row.get("evergreen")) != bool(columns.evergreen[old]):
        return False
    return (
        new_sparse.nnz == old_sparse.nnz
        and np.array_equal(new_sparse.indices, old_sparse.indices)
        and np.array_equal(new_sparse.data, old_sparse.data)
    )


def update_hash(parent: Manifest, changes: Changes) -> str:
    digest = hashlib.sha256(b"related-update\0")
    digest.update(parent.content_hash.encode())
    digest.update(changes.digest().encode())
    return digest.hexdigest()


@dataclass
class UpdateRun:
    """One update on its way through the stages: what it starts from, then what each stage adds."""

    changes: Changes
    data_dir: Path
    parent: ParentVersion
    config: PipelineConfig
    build_config: BuildConfig
    params: NeighbourParams
    report: UpdateReport
    stages: dict[str, float] = field(default_factory=dict)
    ingested: Ingested | None = None
    # vectorize: the parent's rows and what the records change
    terms: list[str] = field(default_factory=list)
    vectorizer: ArticleVectorizer | None = None
    columns: ArticleColumns | None = None
    alive: np.ndarray | None = None
    sparse: sp.csr_matrix | None = None  # the parent's TF-IDF rows, read only when needed
    new_meta: list[dict] = field(default_factory=list)
    analysed: list[list[str]] = field(default_factory=list)
    vectors: Vectors | None = None
    dead: list[int] = field(default_factory=list)
    keep_new: list[int] = field(default_factory=list)  # positions in the ingested articles
    # load: the corpus with the new rows
    new_columns: ArticleColumns | None = None
    new_sparse: sp.csr_matrix | None = None
    new_dense: np.ndarray | None = None
    new_signature: sp.csr_matrix | None = None
    dense: np.ndarray | None = None
    simhash: np.ndarray | None = None
    index_parts: list[faiss.Index] = field(default_factory=list)
    corpus: Corpus | None = None
    # lists
    lists: Lists | None = None
    candidates: tuple[np.ndarray, np.ndarray] | None = None  # the new rows' candidates, for merge_new
    served: tuple[np.ndarray, np.ndarray] | None = None
    version: Path | None = None

    @property
    def n_old(self) -> int:
        return len(self.columns)

    @property
    def n_new(self) -> int:
        return len(self.keep_new)

    @property
    def new_rows(self) -> np.ndarray:
        return np.arange(self.n_old, self.n_old + self.n_new)

    def live_row(self, article_id: str, row_of: KeyIndex) -> int | None:
        row = row_of.get(article_id)
        return row if row is not None and self.alive[row] else None


def open_parent(changes: Changes, data_dir: Path, build_config: BuildConfig | None) -> UpdateRun:
    """The current version, checked to be one an update knows how to extend."""
    current = current_version(data_dir)
    if current is None:
        raise NoIndexError(f"no current version in {data_dir}: run `related build` before `related update`")
    parent = ParentVersion(current)
    unknown = sorted(parent.logical_files() - set(UNCHANGED) - set(REWRITTEN) - set(SEGMENTED))
    if unknown:
        raise RelatedError(
            f"version {parent.name} has files `related update` does not know how to extend "
            f"({', '.join(unknown)}): run a full `related build`"
        )
    config = PipelineConfig.from_manifest(parent.manifest.data["config"], origin=f"manifest of {parent.name}")
    return UpdateRun(
        changes, data_dir, parent, config, build_config or config.build, config.neighbours.params(),
        UpdateReport(version=None, parent=parent.name),
    )


def ingest(run: UpdateRun) -> None:
    """Validated records and deletions; too many rejects fail the update before any work."""
    ingested = run.ingested = run.changes.read(run.parent.manifest)
    run.report.records, run.report.rejects, run.report.rejected = ingested.records, len(ingested.rejects), ingested.rejects
    for reject in ingested.rejects[:20]:
        log.warning("rejected line %s (id=%s): %s", reject.line, reject.id, reject.reason)
    first = "; ".join(f"line {r.line}: {r.reason}" for r in ingested.rejects[:3])
    if ingested.records and not ingested.articles and not ingested.deletions:
        where = run.changes.describe().get("path") or run.changes.describe().get("url")
        raise RejectedRecords(f"no valid record in {where}: {ingested.records} records, all rejected ({first})",
                              ingested.rejects)
    share = len(ingested.rejects) / max(1, ingested.records)
    if share > run.build_config.max_reject_share:
        raise RejectedRecords(
            f"{len(ingested.rejects)} of {ingested.records} update records rejected ({share:.0%}), more than "
            f"build.max_reject_share={run.build_config.max_reject_share:.0%} (first: {first})", ingested.rejects,
        )


def vectorize(run: UpdateRun) -> None:
    """Vectors of the records with the parent's vocabulary, and what they change: rows that die
    (replaced, deleted) and records that become rows (added, replaced)."""
    parent, report, ingested = run.parent, run.report, run.ingested
    run.terms = parent.json("vocabulary.json")
    state = {name: parent.array(f"{name}.npy") for name in STATE_ARRAYS}
    run.vectorizer = ArticleVectorizer.from_state(run.config.text, run.config.reduce, run.terms, state)
    run.columns, row_of = parent.columns()
    run.alive = np.array(parent.array("alive.npy"), dtype=bool)
    if not parent.has("tfidf_indptr.npy") or run.alive.shape[0] != run.n_old:
        raise CorruptArtifactError(f"version {parent.name}: no tfidf rows, or row counts of articles and alive differ")
    # The stored TF-IDF rows are read only to compare re-sent articles (or as signatures of old builds).
    if any(run.live_row(a.id, row_of) is not None for a in ingested.articles) or not parent.has("signature_indptr.npy"):
        run.sparse = parent.sparse("tfidf", len(run.terms))
        if run.sparse.shape[0] != run.n_old:
            raise CorruptArtifactError(f"version {parent.name}: row counts of articles and tfidf differ")
    counts = language_counts(run.columns.lang_codes, run.alive, run.columns.items)
    docs = documents(ingested.articles, run.config, LanguageDetector.for_index(run.config.text, counts))
    run.new_meta = article_rows(ingested.articles, docs)
    run.analysed = [run.vectorizer.analyze(doc) for doc in docs]  # once: the drift counts read them too
    run.vectors = run.vectorizer.transform(docs, run.analysed) if docs else None
    for i, article in enumerate(ingested.articles):
        old = run.live_row(article.id, row_of)
        if old is not None:
            if _same(run.new_meta[i], run.columns, old, run.vectors.sparse[i], run.sparse[old]):
                report.unchanged += 1
                continue
            report.replaced += 1
            run.dead.append(old)
        else:
            report.added += 1
        run.keep_new.append(i)
    for deletion in ingested.deletions:
        old = run.live_row(deletion.id, row_of)
        if old is None:
            report.not_found += 1
            if not run.changes.repeats_deletions:  # a sync lists every deleted row, applied or not
                log.warning("delete: no article with id %r in version %s", deletion.id, parent.name)
            continue
        report.deleted += 1
        run.dead.append(old)


def load(run: UpdateRun) -> None:
    """The corpus with the new rows appended and the dead ones tombstoned; the parent's per-row
    artifacts are read (memory-mapped where they can be) with the new rows after them."""
    parent, n_new = run.parent, run.n_new
    run.alive[np.array(sorted(set(run.dead)), dtype=np.int64)] = False
    pick = np.array(run.keep_new, dtype=np.int64)
    run.new_columns = ArticleColumns.from_rows([run.new_meta[i] for i in run.keep_new])
    run.new_sparse = run.vectors.sparse[pick] if n_new else sp.csr_matrix((0, len(run.terms)), dtype=np.float32)
    run.new_dense = run.vectors.dense[pick] if n_new else np.empty((0, 0), np.float32)
    n_rows = run.n_old + n_new
    run.alive = np.concatenate([run.alive, np.ones(n_new, dtype=bool)])
    # Pair scores use each row's top-weighted terms (signatures) when the build stored them.
    if not parent.has("signature_indptr.npy"):
        run.params = replace(run.params, signature_terms=0)
        run.new_signature = run.new_sparse
        signature = append_rows(run.sparse, run.new_sparse)
    else:
        run.new_signature = prune_rows(run.new_sparse, run.params.signature_terms)
        signature = parent.sparse_with("signature", len(run.terms), run.new_signature)
    run.dense = parent.rows_with("dense.npy", run.new_dense if n_new else None)
    run.index_parts = parent.index_parts()  # memory-mapped; the new rows get a part of their own
    if n_new:
        run.index_parts.append(flat(run.new_dense))
    index = run.index_parts[0] if len(run.index_parts) == 1 else stack(run.index_parts)
    if index.ntotal != n_rows or run.dense.shape[0] != n_rows or signature.shape[0] != n_rows:
        raise CorruptArtifactError(f"version {parent.name}: row counts of articles, dense, signatures and index differ")
    if parent.has("simhash.npy"):
        run.simhash = parent.rows_with("simhash.npy", signatures(run.new_sparse) if n_new else None)
    times = np.concatenate([run.columns.published, run.new_columns.published])
    run.corpus = Corpus(
        index=index, sparse=signature, times=times, alive=run.alive, dense=run.dense,
        rerank=rerank_factor(index, run.config.index.rerank), postings=RarePostings.stored(parent, signature, times),
    )


def new_lists(run: UpdateRun) -> None:
    """Neighbour lists of the new rows, exactly as a build computes them."""
    parent, corpus, params = run.parent, run.corpus, run.params
    new_expanded = None
    if run.n_new:
        queries = Queries(run.new_signature, run.new_dense, corpus.times[run.new_rows], self_ids=run.new_rows)
        parts, new_expanded = score_rows(corpus, queries, params)  # does not read corpus.expanded
        if parent.has("expanded_indptr.npy") and new_expanded is None:  # feedback off: the build stored plain rows
            new_expanded = run.new_signature
    if parent.has("expanded_indptr.npy"):
        corpus.expanded = parent.sparse_with(
            "expanded", len(run.terms), run.new_signature[:0] if new_expanded is None else new_expanded
        )
    if run.n_new:
        lists, cand_ids, cand_scores = finish_rows(corpus, queries, params, parts, new_expanded)
        run.candidates = (cand_ids, cand_scores)
    else:
        lists = Lists(np.empty((0, params.k), np.int32), np.empty((0, params.k), np.float32))
    run.lists = Lists(parent.rows_with("neighbours.npy", lists.ids), parent.rows_with("neighbour_scores.npy", lists.scores))


def refresh(run: UpdateRun) -> None:
    """New articles enter the lists where they now rank in the top k; lists that held a dead row
    are recomputed."""
    lists, alive, corpus = run.lists, run.alive, run.corpus
    dead_rows = np.array(sorted(set(run.dead)), dtype=np.int64)
    if dead_rows.size:
        lists.ids[dead_rows] = MISSING
        lists.scores[dead_rows] = 0.0
        stale = np.flatnonzero(np.isin(lists.ids, dead_rows).any(axis=1) & alive)
    else:
        stale = np.empty(0, np.int64)
    eligible = alive.copy()
    eligible[run.n_old:] = False
    eligible[stale] = False
    if run.n_new:  # targeted refresh of existing lists
        run.report.refreshed = merge_new(lists, run.new_rows, *run.candidates, eligible)
    if stale.size:
        queries = Queries(corpus.sparse[stale], run.dense[stale], corpus.times[stale], self_ids=stale)
        stored = None if corpus.expanded is None else corpus.expanded[stale]
        parts, _ = score_rows(corpus, queries, run.params, expand_queries=False)
        refilled, _, _ = finish_rows(corpus, queries, run.params, parts, stored)
        lists.ids[stale], lists.scores[stale] = refilled.ids, refilled.scores
        run.report.refilled = int(stale.size)


def serve_lists(run: UpdateRun) -> None:
    """Served lists recomputed for the lists that changed (at most SERVED_RECOMPUTE_MAX, new
    articles first; the others are cleared and left to the request-time policy)."""
    parent, lists, n_old, n_new = run.parent, run.lists, run.n_old, run.n_new
    if not (parent.has("served.npy") and run.simhash is not None and precomputable(run.config.policy)):
        return
    old_ids, old_scores = parent.array("neighbours.npy"), parent.array("neighbour_scores.npy")
    changed = np.flatnonzero((lists.ids[:n_old] != old_ids).any(axis=1) | (lists.scores[:n_old] != old_scores).any(axis=1))
    changed = np.concatenate([run.new_rows, changed])
    changed, cleared = changed[:SERVED_RECOMPUTE_MAX], changed[SERVED_RECOMPUTE_MAX:]
    width = parent.array("served.npy").shape[1]
    served = run.served = (
        parent.rows_with("served.npy", np.full((n_new, width), -1, np.int32)),
        parent.rows_with("served_scores.npy", np.zeros((n_new, width), np.float32)),
    )
    if run.sparse is None:
        run.sparse = parent.sparse("tfidf", len(run.terms))
    served[0][cleared], served[1][cleared] = -1, 0.0
    if changed.size:
        served[0][changed], served[1][changed] = changed_served_lists(
            run.config.policy, run.columns, run.new_columns, run.sparse, run.new_sparse, run.dense, run.simhash,
            run.alive, lists, changed, width,
        )
    run.report.served_cleared = int(cleared.size)


def measure_drift(run: UpdateRun) -> None:
    """How far the corpus has moved from the build's vocabulary: new articles and unknown words."""
    drift = base_drift(run.parent.manifest)
    tokens, oov = oov_counts(run.vectorizer, [run.analysed[i] for i in run.keep_new])
    drift["updates_since_build"] = int(drift["updates_since_build"]) + 1
    drift["articles_since_build"] = int(drift["articles_since_build"]) + run.n_new
    drift["deleted_since_build"] = int(drift["deleted_since_build"]) + run.report.deleted
    drift["tokens_since_build"] = int(drift["tokens_since_build"]) + tokens
    drift["oov_tokens_since_build"] = int(drift["oov_tokens_since_build"]) + oov
    drift["new_share"] = round(drift["articles_since_build"] / max(1, int(drift["base_articles"])), 6)
    drift["oov_token_share"] = round(drift["oov_tokens_since_build"] / max(1, drift["tokens_since_build"]), 6)
    run.report.drift = drift
    run.report.rebuild_reasons = drift_advice(drift, run.build_config)
    run.report.articles = int(run.alive.sum())


def write(run: UpdateRun) -> None:
    """The new version: the parent's unchanged files and parts hard-linked, one new part with the
    new rows (or, past MAX_DELTAS parts, one merged part of every row since the build), the lists
    rewritten whole."""
    parent, report, drift, n_old = run.parent, run.report, run.report.drift, run.n_old
    columns, corpus, ingested = run.columns, run.corpus, run.ingested
    new_rows_meta = [run.new_meta[i] for i in run.keep_new]
    with VersionWriter(run.data_dir) as writer:
        for name in UNCHANGED:
            if parent.has(name):
                parent.link_into(writer, name)
        parts = {name: parent.parts(name) for name in SEGMENTED if parent.has(name)}
        # The build's rows stay in its files; the rows since then are in the later parts.
        n_base = int(np.load(parent.path / parts["dense.npy"][0], mmap_mode="r").shape[0])
        compact = len(parts["dense.npy"]) > MAX_DELTAS
        start = n_base if compact else n_old
        if compact:
            parts = {name: names[:1] for name, names in parts.items()}
        for part in sorted({part for names in parts.values() for part in names}):
            parent.link_into(writer, part)
        if compact or run.n_new:
            folder = f"delta-{drift['updates_since_build']:04d}"
            while any(part.startswith(f"{folder}/") for part in parent.files):
                folder += "x"  # never reuse a parent's part name (a rolled-back lineage)
            if compact:  # the parent's tfidf rows since the build, then the new ones
                sparse = parent.sparse("tfidf", len(run.terms)) if run.sparse is None else run.sparse
                old_rows, before = tail(sparse, start)
                matrices = {"tfidf": (append_rows(old_rows, run.new_sparse), before)}
            else:
                matrices = {"tfidf": (run.new_sparse, parent.nnz("tfidf"))}
            if "signature_indptr.npy" in parts:
                matrices["signature"] = tail(corpus.sparse, start)
            if "expanded_indptr.npy" in parts and corpus.expanded is not None:
                matrices["expanded"] = tail(corpus.expanded, start)
            # The parent's rows since the build, then the new ones (only the new ones unless compacting).
            metadata = (parent.raw_lines("articles.jsonl", 1) if compact else b"") + b"".join(
                json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for row in new_rows_meta
            )
            part_columns = columns.take(np.arange(start, n_old)).then(run.new_columns) if compact else run.new_columns
            place = Placement(
                start, {name: int(getattr(columns, name).offsets[start]) for name in STRINGS}, parent.page_offsets(parts)
            )
            save_rows(writer, folder, place, dense=run.dense[start:], columns=part_columns, metadata=metadata,
                      matrices=matrices, simhash=None if run.simhash is None else run.simhash[start:])
            parts = {name: names + [f"{folder}/{name}"] for name, names in parts.items()}
        writer.save_array("neighbours.npy", run.lists.ids)
        writer.save_array("neighbour_scores.npy", run.lists.scores)
        if run.served is not None:
            writer.save_array("served.npy", run.served[0])
            writer.save_array("served_scores.npy", run.served[1])
        writer.save_array("alive.npy", run.alive)
        write_rejects(ingested.rejects, writer.path("rejects.jsonl"))
        parent_meta = parent.manifest.data
        meta = {
            "kind": "update",
            "parent": parent.name,
            "built_at": _utc_now(),
            "base_built_at": parent_meta.get("base_built_at", parent_meta.get("built_at")),
            "source": run.changes.describe() | {"records": ingested.records},
            "config": parent_meta["config"],
            "counts": {
                "articles": report.articles, "rows": n_old + run.n_new, "tombstones": int((~run.alive).sum()),
                "rejects": report.rejects, "vocabulary": len(run.terms),
            },
            "update": {
                "added": report.added, "replaced": report.replaced, "deleted": report.deleted,
                "unchanged": report.unchanged, "not_found": report.not_found,
                "refreshed": report.refreshed, "refilled": report.refilled, "served_cleared": report.served_cleared,
            },
            "dims": int(run.dense.shape[1]),
            "index_type": type(faiss.downcast_index(run.index_parts[0])).__name__,
            "libraries": library_versions(),
            "stages": run.stages,  # serialized at commit: the stages before this one
            "drift": drift,
        }
        sync = run.changes.sync_state()
        if sync is not None:
            meta["sync"] = sync  # the watermark advances with the version's publication, never before
        run.version = writer.commit(meta, update_hash(parent.manifest, run.changes), parts)


def publish_version(run: UpdateRun) -> None:
    publish(run.data_dir, run.version, checksums=False)  # commit just hashed every file it wrote


# The stages of a build (recommender/pipeline/build.py), where an update has them, plus its own.
STAGES = (
    Stage("ingest", ingest),
    Stage("vectorize", vectorize),
    Stage("load", load),
    Stage("new_lists", new_lists),
    Stage("refresh", refresh),
    Stage("served", serve_lists),
    Stage("drift", measure_drift),
    Stage("write", write),
    Stage("publish", publish_version),
)


def update(
    source: Path | str | Changes, data_dir: Path, *, build_config: BuildConfig | None = None, progress: bool = False,
    max_reject_share: float | None = None,
) -> UpdateReport:
    """Apply an update file (or a database's rows, see changes.py) to the current version and
    publish the result. Holds the build lock.

    `build_config` (keep, drift thresholds) defaults to the current version's; the text, index
    and neighbour settings always come from the current version, whose vocabulary is reused.
    `max_reject_share` overrides build.max_reject_share, the share of rejected records that
    refuses the whole file (RejectedRecords): a bulk file that bad is probably the wrong file, while
    a CMS posting one article at a time wants the good ones applied (1.0) or all-or-nothing (0.0).
    """
    started = time.perf_counter()
    changes = changes_of(source) if isinstance(source, (str, Path)) else source
    data_dir = Path(data_dir)
    with build_lock(data_dir):
        run = open_parent(changes, data_dir, build_config)
        if max_reject_share is not None:
            run.build_config = run.build_config.model_copy(update={"max_reject_share": max_reject_share})
        report = run.report
        for stage in STAGES:
            stage.timed(run, run.stages, log)
            if stage.name == "vectorize" and not run.keep_new and not run.dead:  # nothing changes: no version
                prune(data_dir, run.build_config.keep)  # leftovers of killed runs; we hold the lock
                report.articles = int(run.alive.sum())
                report.drift = base_drift(run.parent.manifest)
                report.rebuild_reasons = drift_advice(report.drift, run.build_config)
                report.seconds = time.perf_counter() - started
                return report
        for old in prune(data_dir, run.build_config.keep):
            log.info("pruned old version %s", old.name)
        report.version = run.version
        report.stages = run.stages
        report.seconds = time.perf_counter() - started
        return report

