"""FAISS nearest-neighbour index over L2-normalised float32 vectors.

Inner product on unit vectors is cosine similarity. Ids are row positions
0..N-1 (no IndexIDMap): callers keep their own row -> article mapping, and
plain positional ids work for both Flat and HNSW.

Exact (IndexFlatIP) up to `IndexParams.exact_max` vectors, because brute force
is fast enough there and has perfect recall; above it IVF (default), HNSW or
IVF-PQ, because brute-force all-pairs neighbours become quadratic. IVF is the
default for large corpora because the build computes every article's neighbours:
at 100k x 256 dims on 2 cores IVF trains, adds and answers all queries in a small
fraction of the time HNSW needs just to insert (benchmarks/build_scale.py).
IVF-SQ8 (the default above `exact_max`) is IVF with each vector stored as 8-bit
codes on one uniform scale: a quarter of IVF-Flat's bytes, so a query scans its
cells about twice as fast (the scan is bound by memory traffic; 1M articles:
0.96 vs 2.04 ms/query at nprobe 16, recall of the exact top 10 unchanged).
IVF-PQ stores 1/16 of the bytes per article (64-byte codes instead of 1 KiB
vectors). Both are lossy: `search` re-scores a short list exactly against the
dense vectors the service memory-maps anyway (benchmarks/index_choice.py
measures all of them).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from index.errors import ReadOnlyIndexError

__all__ = [
    "IndexParams",
    "build_index",
    "search",
    "add_vectors",
    "stack",
    "flat",
    "save_index",
    "load_index",
    "exact_search",
    "recall_at_k",
    "is_mmapped",
    "is_lossy",
    "rerank_factor",
]

LARGE_KINDS = ("ivfsq8", "ivf", "hnsw", "ivfpq")
IVF_KINDS = ("ivfsq8", "ivf", "ivfpq")
_IVF_TRAIN_PER_CELL = 40  # k-means training points per IVF cell
_PQ_TRAIN_PER_CENTROID = 64  # training points per PQ centroid (faiss warns below 39)
# Rows added per faiss call: bounds temporary memory and keeps progress granular.
_ADD_BATCH = 65_536


@dataclass(frozen=True)
class IndexParams:
    """How to build the index. Defaults favour recall over build speed."""

    exact_max: int = 50_000  # IndexFlatIP up to this many vectors, `large` above
    large: str = "ivfsq8"  # "ivfsq8", "ivf", "hnsw" or "ivfpq"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    nlist: int = 0  # IVF cells; 0 = 4 * sqrt(N)
    nprobe: int = 16
    pq_m: int = 64  # IVF-PQ sub-quantizers: bytes per article at 8 bits; must divide the dimension
    pq_nbits: int = 8
    rerank: int = 1  # IVF-SQ8, IVF-PQ: k * rerank candidates are re-scored exactly, the best k kept

    def __post_init__(self) -> None:
        if self.exact_max < 0:
            raise ValueError(f"exact_max must be >= 0, got {self.exact_max}")
        if self.large not in LARGE_KINDS:
            raise ValueError(f"large must be one of {LARGE_KINDS}, got {self.large!r}")
        if not 1 <= self.pq_nbits <= 16:
            raise ValueError(f"pq_nbits must be in 1..16, got {self.pq_nbits}")
        for name in ("hnsw_m", "ef_construction", "ef_search", "nprobe", "pq_m", "rerank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _as_matrix(vectors: np.ndarray, what: str, d: int | None = None) -> np.ndarray:
    """FAISS needs float32 C-contiguous 2-D input; copy only if necessary."""
    arr = np.ascontiguousarray(vectors, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D [n, d], got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, index has {d}")
    return arr


def _find_hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    """Unwrap common wrappers to reach an HNSW index, if there is one."""
    idx = faiss.downcast_index(index)
    for _ in range(4):  # wrappers nest shallowly; bound the walk
        if isinstance(idx, faiss.IndexHNSW):
            return idx
        inner = getattr(idx, "index", None)
        if inner is None:
            return None
        idx = faiss.downcast_index(inner)
    return None


def _set_query_knobs(index: faiss.Index, ef_search: int | None, nprobe: int | None) -> None:
    """Query-time knobs (efSearch for HNSW, nprobe for IVF); Flat indexes have none."""
    for name, value in (("ef_search", ef_search), ("nprobe", nprobe)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    hnsw = _find_hnsw(index)
    if hnsw is not None and ef_search is not None:
        hnsw.hnsw.efSearch = int(ef_search)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and nprobe is not None:
        ivf.nprobe = int(nprobe)


def build_index(
    vectors: np.ndarray, params: IndexParams, progress: Callable[[int], object] | None = None
) -> faiss.Index:
    """Build an inner-product index over already L2-normalised rows.

    Row i gets id i. Vectors are not normalised here: that is the caller's
    contract, and normalising would hide a bug upstream. `progress` is called
    with the number of rows after each batch is added (training comes first).
    """
    x = _as_matrix(vectors, "vectors")
    n, d = x.shape
    if d < 1:
        raise ValueError("vectors must have at least one dimension")
    index: faiss.Index
    # Too few rows to train PQ codes well are also few enough for exact search to be cheap.
    pq_rows = (1 << params.pq_nbits) * _PQ_TRAIN_PER_CENTROID
    if n <= params.exact_max or (params.large == "ivfpq" and n < pq_rows):
        index = faiss.IndexFlatIP(d)
    elif params.large in IVF_KINDS:
        if params.large == "ivfpq" and d % params.pq_m:
            raise ValueError(f"pq_m ({params.pq_m}) must divide the dimension ({d})")
        nlist = max(1, min(n, params.nlist or int(4 * np.sqrt(n))))
        train = nlist * _IVF_TRAIN_PER_CELL if params.large != "ivfpq" else max(nlist * _IVF_TRAIN_PER_CELL, pq_rows)
        sample = x[np.sort(np.random.default_rng(0).choice(n, min(n, train), replace=False))]
        mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
        quantizer = _centred_cells(sample, mean, nlist)
        if params.large == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        elif params.large == "ivfsq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT
            )
            index.by_residual = False  # codes of the rows themselves: cells are of centred directions
        else:
            index = faiss.IndexIVFPQ(quantizer, d, nlist, params.pq_m, params.pq_nbits, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)  # the cells are trained: only the codes' scale or PQ codebooks learn here
        index.nprobe = params.nprobe
        _add_to_cells(index, x, mean, progress)
        return index
    else:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
    add_vectors(index, x, progress)
    return index


def _centred(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Directions of the rows about the corpus mean (zero rows stay zero)."""
    y = x - mean
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return y / np.where(norms > 0, norms, 1.0)


def _centred_cells(sample: np.ndarray, mean: np.ndarray, nlist: int) -> faiss.IndexFlatIP:
    """IVF cells by spherical k-means of the *centred* directions.

    LSA vectors of news share a large common component (the corpus mean has norm 0.6 on the
    archive-shaped benchmark corpus), so k-means on the raw vectors piles most articles into a
    few cells: an imbalance factor of 7.9 at 100k, where a query scans 8x the rows `nprobe`
    promises and still misses neighbours in the crowded cells. Cells of the centred directions
    are balanced (1.4), and recall@10 at nprobe 16 rose from 0.53 to 0.78 on that corpus.
    """
    quantizer = faiss.IndexFlatIP(sample.shape[1])
    clustering = faiss.Clustering(sample.shape[1], nlist)
    clustering.spherical = True
    clustering.niter = 10  # what faiss's IndexIVF trains its cells with
    clustering.seed = 1234
    clustering.train(_centred(sample, mean), quantizer)
    return quantizer


def _add_to_cells(
    index: faiss.IndexIVF, x: np.ndarray, mean: np.ndarray, progress: Callable[[int], object] | None
) -> None:
    """Each row into the cell of its centred direction, stored as it is.

    The lists hold the raw vectors and queries stay raw, so scores are exact inner products
    and the file is a plain IVF index: only where rows live changed, not how it is searched.
    """
    for start in range(0, x.shape[0], _ADD_BATCH):
        rows = x[start : start + _ADD_BATCH]
        _, cells = index.quantizer.search(_centred(rows, mean), 1)
        index.add_core(len(rows), faiss.swig_ptr(rows), None, faiss.swig_ptr(np.ascontiguousarray(cells[:, 0])))
        if progress is not None:
            progress(len(rows))


def is_mmapped(index: faiss.Index) -> bool:
    """True if the index's storage is a read-only view of a mapped file."""
    idx = faiss.downcast_index(index)
    owners = []
    hnsw = _find_hnsw(idx)
    ivf = faiss.try_extract_index_ivf(idx)
    if hnsw is not None:
        owners.append(getattr(faiss.downcast_index(hnsw.storage), "codes", None))
        owners.append(getattr(hnsw.hnsw, "neighbors", None))
    elif ivf is not None:
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if getattr(lists, "read_only", False):  # OnDiskInvertedLists (IO_FLAG_MMAP)
            return True
        codes = getattr(lists, "codes", None)
        if codes is not None and ivf.nlist > 0:
            owners.append(codes.at(0))  # lists are mapped all together or not at all
    else:
        owners.append(getattr(idx, "codes", None))
    # Older faiss used std::vector (always owned, no `is_owned`).
    return any(o is not None and getattr(o, "is_owned", True) is False for o in owners)


def _parts(index: faiss.Index) -> list[faiss.Index]:
    """The indexes a `stack` searches, or the index itself."""
    idx = faiss.downcast_index(index)
    if isinstance(idx, faiss.IndexShards):
        return [faiss.downcast_index(idx.at(i)) for i in range(idx.count())]
    return [idx]


def is_lossy(index: faiss.Index) -> bool:
    """True if the index's scores are approximations (SQ or PQ codes) rather than exact inner products."""
    ivfs = (faiss.try_extract_index_ivf(p) for p in _parts(index))
    coded = (faiss.IndexIVFPQ, faiss.IndexIVFScalarQuantizer)
    return any(ivf is not None and isinstance(faiss.downcast_index(ivf), coded) for ivf in ivfs)


def rerank_factor(index: faiss.Index, rerank: int) -> int:
    """`rerank` for a lossy index, 0 (no re-scoring) for one whose scores are exact.

    Decided once per loaded index: the check costs tens of microseconds, a request's budget.
    """
    return rerank if is_lossy(index) else 0


def add_vectors(index: faiss.Index, vectors: np.ndarray, progress: Callable[[int], object] | None = None) -> None:
    """Append rows (incremental update); they get ids ntotal..ntotal+n-1."""
    if is_mmapped(index):
        raise ReadOnlyIndexError(
            "cannot add vectors to a memory-mapped index; load it with mmap=False to update it"
        )
    x = _as_matrix(vectors, "vectors", index.d)
    for start in range(0, x.shape[0], _ADD_BATCH):
        index.add(x[start : start + _ADD_BATCH])
        if progress is not None:
            progress(min(_ADD_BATCH, x.shape[0] - start))


def stack(parts: list[faiss.Index]) -> faiss.Index:
    """Several indexes searched as one: row j of part i gets id (rows of parts before i) + j.

    How an update appends rows without rewriting (or even loading) the build's index: the
    base stays memory-mapped and the new rows go into a small exact part. Read-only: add a part
    instead of adding vectors.
    """
    if not parts:
        raise ValueError("stack needs at least one index")
    stacked = faiss.IndexShards(parts[0].d, False, True)  # not threaded; successive ids
    for part in parts:
        if part.d != parts[0].d or part.metric_type != parts[0].metric_type:
            raise ValueError("stacked indexes must share dimension and metric")
        stacked.add_shard(part)  # faiss's wrapper keeps a reference to each part
    return stacked


def flat(vectors: np.ndarray) -> faiss.Index:
    """Exact inner-product index over `vectors` (the part an update appends)."""
    x = _as_matrix(vectors, "vectors")
    index = faiss.IndexFlatIP(x.shape[1])
    add_vectors(index, x)
    return index


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    *,
    batch_size: int = 8192,
    vectors: np.ndarray | None = None,
    rerank: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product, in batches to bound the result buffers.

    Returns (scores float32 [n, k'], ids int64 [n, k']) with k' = min(k, ntotal).
    Where the index returns fewer than k' hits (possible with HNSW) the id is -1
    and the score -inf.

    `vectors`: the rows the index holds (the memory-mapped dense.npy). Given them,
    k * `rerank` candidates are re-scored by exact inner product and the best k kept:
    what a lossy index (`is_lossy`) needs for exact scores and IVF-Flat-like recall.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if batch_size < 1 or rerank < 1:
        raise ValueError(f"batch_size and rerank must be >= 1, got {batch_size}, {rerank}")
    q = _as_matrix(queries, "queries", index.d)
    n = q.shape[0]
    k = min(k, int(index.ntotal))
    scores = np.empty((n, k), dtype=np.float32)
    ids = np.empty((n, k), dtype=np.int64)
    if k == 0 or n == 0:
        return scores, ids
    shortlist = min(k * rerank, int(index.ntotal)) if vectors is not None else k
    for start in range(0, n, batch_size):
        s, i = index.search(q[start : start + batch_size], shortlist)
        if vectors is not None:
            s, i = _rescore(vectors, q[start : start + batch_size], i, k)
        scores[start : start + len(s)] = s
        ids[start : start + len(i)] = i
    scores[ids < 0] = -np.inf
    return scores, ids


# Gathered candidate vectors per chunk: 4 MiB stays in cache (2x faster than 64 MiB, measured).
_RESCORE_BYTES = 1 << 22


def _rescore(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products of each query with its candidates, best k first (-1 ids last)."""
    scores = np.empty((len(ids), k), dtype=np.float32)
    best = np.empty((len(ids), k), dtype=np.int64)
    rows = max(1, _RESCORE_BYTES // max(1, ids.shape[1] * queries.shape[1] * 4))
    for start in range(0, len(ids), rows):
        cand = ids[start : start + rows]
        exact = np.matmul(vectors[np.maximum(cand, 0)], queries[start : start + rows, :, None])[:, :, 0]
        exact = np.where(cand >= 0, exact, -np.inf).astype(np.float32)
        top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores[start : start + rows] = np.take_along_axis(exact, top, axis=1)
        best[start : start + rows] = np.take_along_axis(cand, top, axis=1)
    return scores, best


def save_index(index: faiss.Index, path: Path) -> None:
    """Write via a temp file + rename so a crash never leaves half an index."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as err:  # FAISS reports a failed fwrite with strerror in its message
            for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS):
                if os.strerror(code) in str(err):
                    raise OSError(code, os.strerror(code), str(tmp)) from err
            raise
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _mmap_flags() -> int:
    # IO_FLAG_MMAP_IFC (faiss >= 1.10) maps flat codes, HNSW graphs and IVF lists
    # (checked on 1.15.1: no anonymous memory grows); the older IO_FLAG_MMAP only maps IVF lists.
    mmap_flag = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)
    return mmap_flag | faiss.IO_FLAG_READ_ONLY


def load_index(
    path: Path, *, mmap: bool = True, ef_search: int | None = None, nprobe: int | None = None
) -> faiss.Index:
    """Read an index, memory-mapped when possible so several API workers share
    the page cache instead of each holding a private copy.

    A mapped index is read-only (see `is_mmapped`); load with mmap=False to
    append to it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no index file at {path}")
    index: faiss.Index | None = None
    if mmap:
        try:
            index = faiss.read_index(str(path), _mmap_flags())
        except RuntimeError:
            index = None  # this index type cannot be mapped: read it plainly
    if index is None:
        index = faiss.read_index(str(path))
    _set_query_knobs(index, ef_search, nprobe)
    return index


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force reference (IndexFlatIP): ground truth for ANN recall."""
    x = _as_matrix(vectors, "vectors")
    index = faiss.IndexFlatIP(x.shape[1])
    add_vectors(index, x)
    return search(index, queries, k)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Fraction of the exact top-k ids that the approximate top-k found.

    Micro-averaged over all queries; -1 padding is ignored on both sides.
    Returns 1.0 when there is no ground truth at all (vacuously perfect).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    a = np.asarray(approx_ids)[:, :k]
    e = np.asarray(exact_ids)[:, :k]
    if a.shape[0] != e.shape[0]:
        raise ValueError(f"row count differs: approx {a.shape[0]}, exact {e.shape[0]}")
    hits = 0
    total = 0
    for start in range(0, e.shape[0], 4096):  # chunk the n*k*k comparison
        ea = e[start : start + 4096]
        aa = a[start : start + 4096]
        valid = ea >= 0
        found = (ea[:, :, None] == aa[:, None, :]).any(axis=2) & valid
        hits += int(found.sum())
        total += int(valid.sum())
    return 1.0 if total == 0 else hits / total
