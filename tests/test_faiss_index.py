"""Contract tests for index.faiss_index: the same checks for Flat, HNSW and IVF; IVF-PQ's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.errors import ReadOnlyIndexError
from index.faiss_index import (
    IndexParams,
    add_vectors,
    build_index,
    exact_search,
    flat,
    is_lossy,
    is_mmapped,
    load_index,
    recall_at_k,
    rerank_factor,
    save_index,
    search,
    stack,
)

N, D, K = 5_000, 64, 10


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return unit_vectors(N, D, seed=0)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return unit_vectors(500, D, seed=1)


@pytest.fixture(scope="module")
def exact(data: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return exact_search(data, queries, K)


KINDS = {
    "flat": IndexParams(),
    "hnsw": IndexParams(exact_max=0, large="hnsw"),  # force HNSW
    "ivf": IndexParams(exact_max=0, large="ivf", nlist=32, nprobe=24),  # force IVF
    "ivfsq8": IndexParams(exact_max=0, large="ivfsq8", nlist=32, nprobe=24),
}
INDEX_TYPES = {
    "flat": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat,
    "ivfsq8": faiss.IndexIVFScalarQuantizer,
}


def exact_scores(index: faiss.Index, data: np.ndarray) -> np.ndarray | None:
    """The stored rows, for `search` to re-score a lossy index's shortlist exactly."""
    return data if is_lossy(index) else None


@pytest.fixture(scope="module", params=sorted(KINDS))
def built(request: pytest.FixtureRequest, data: np.ndarray) -> tuple[str, faiss.Index]:
    return request.param, build_index(data, KINDS[request.param])


def test_index_type_follows_exact_max(built: tuple[str, faiss.Index], data: np.ndarray) -> None:
    kind, index = built
    assert isinstance(index, INDEX_TYPES[kind])
    assert index.ntotal == len(data)
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    if kind == "hnsw":
        assert index.hnsw.efSearch == IndexParams().ef_search
        assert index.hnsw.efConstruction == IndexParams().ef_construction


def test_recall_against_exact(built: tuple[str, faiss.Index], data: np.ndarray, queries: np.ndarray, exact) -> None:
    kind, index = built
    scores, ids = search(index, queries, K, vectors=exact_scores(index, data))
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (len(queries), K)
    recall = recall_at_k(ids, exact[1], K)
    # Uniform random vectors are IVF's worst case (no cluster structure); real LSA vectors cluster.
    assert recall >= {"flat": 0.999, "hnsw": 0.95, "ivf": 0.85, "ivfsq8": 0.85}[kind], recall
    # scores are sorted descending and are cosine similarities
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert np.all(scores <= 1.0 + 1e-5)


def test_self_is_top1(built: tuple[str, faiss.Index], data: np.ndarray) -> None:
    _, index = built
    rows = np.arange(0, len(data), 7)
    scores, ids = search(index, data[rows], 5, batch_size=97, vectors=exact_scores(index, data))  # odd batch size
    assert np.array_equal(ids[:, 0], rows)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_batching_does_not_change_results(built: tuple[str, faiss.Index], data: np.ndarray, queries: np.ndarray) -> None:
    _, index = built
    s1, i1 = search(index, queries, K, vectors=exact_scores(index, data))
    s2, i2 = search(index, queries, K, batch_size=33, vectors=exact_scores(index, data))
    assert np.array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(
    built: tuple[str, faiss.Index], queries: np.ndarray, tmp_path: Path, mmap: bool
) -> None:
    kind, index = built
    path = tmp_path / "index.faiss"
    save_index(index, path)
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]  # no temp file left
    loaded = load_index(path, mmap=mmap, ef_search=IndexParams().ef_search)
    assert type(loaded) is type(index)
    assert loaded.ntotal == index.ntotal
    s1, i1 = search(index, queries, K)
    s2, i2 = search(loaded, queries, K)
    assert np.array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    # IO_FLAG_MMAP_IFC maps every kind; the older IO_FLAG_MMAP maps IVF lists only.
    assert is_mmapped(loaded) == (mmap and (kind.startswith("ivf") or hasattr(faiss, "IO_FLAG_MMAP_IFC")))


def test_load_sets_ef_search(tmp_path: Path, data: np.ndarray) -> None:
    index = build_index(data[:500], IndexParams(exact_max=0, large="hnsw", ef_search=40))
    save_index(index, tmp_path / "h.faiss")
    for mmap in (True, False):
        assert load_index(tmp_path / "h.faiss", mmap=mmap, ef_search=300).hnsw.efSearch == 300
    # ef_search on a Flat index is meaningless and simply ignored
    flat = build_index(data[:50], IndexParams())
    save_index(flat, tmp_path / "f.faiss")
    assert load_index(tmp_path / "f.faiss", ef_search=300).ntotal == 50
    # nprobe alone reaches an IVF index (it used to be applied only together with ef_search)
    save_index(build_index(data[:500], KINDS["ivf"]), tmp_path / "i.faiss")
    assert load_index(tmp_path / "i.faiss", nprobe=3).nprobe == 3


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_index(tmp_path / "nope.faiss")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_k_larger_than_ntotal(kind: str) -> None:
    x = unit_vectors(7, 16, seed=3)
    index = build_index(x, KINDS[kind])
    scores, ids = search(index, x, 50)
    assert ids.shape == scores.shape == (7, 7)
    assert np.array_equal(ids[:, 0], np.arange(7))
    for row in ids:  # every vector found exactly once
        assert sorted(row.tolist()) == list(range(7))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_empty_index_and_empty_queries(kind: str) -> None:
    index = build_index(np.empty((0, 8), dtype=np.float32), KINDS[kind])
    assert index.ntotal == 0
    scores, ids = search(index, unit_vectors(3, 8, seed=4), 10)
    assert scores.shape == ids.shape == (3, 0)
    full = build_index(unit_vectors(5, 8, seed=5), KINDS[kind])
    scores, ids = search(full, np.empty((0, 8), dtype=np.float32), 3)
    assert scores.shape == ids.shape == (0, 3)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_add_vectors_appends_with_next_ids(kind: str) -> None:
    x = unit_vectors(300, 16, seed=6)
    index = build_index(x[:200], KINDS[kind])
    add_vectors(index, x[200:])
    assert index.ntotal == 300
    _, ids = search(index, x[200:], 1)
    assert np.array_equal(ids[:, 0], np.arange(200, 300))


def test_add_to_mmapped_index_is_refused(tmp_path: Path) -> None:
    x = unit_vectors(50, 8, seed=7)
    for kind, params in KINDS.items():
        save_index(build_index(x, params), tmp_path / f"{kind}.faiss")
        mapped = load_index(tmp_path / f"{kind}.faiss", mmap=True)
        if not is_mmapped(mapped):
            pytest.skip("this faiss cannot memory-map flat codes")
        with pytest.raises(ReadOnlyIndexError):  # faiss itself would abort()
            add_vectors(mapped, x)
        writable = load_index(tmp_path / f"{kind}.faiss", mmap=False)
        add_vectors(writable, x)
        assert writable.ntotal == 100


def test_input_validation() -> None:
    index = build_index(unit_vectors(10, 8, seed=8), IndexParams())
    with pytest.raises(ValueError):
        search(index, unit_vectors(2, 9, seed=9), 3)  # wrong dimension
    with pytest.raises(ValueError):
        search(index, np.zeros(8, dtype=np.float32), 3)  # 1-D
    with pytest.raises(ValueError):
        search(index, unit_vectors(2, 8, seed=9), -1)
    with pytest.raises(ValueError):
        add_vectors(index, unit_vectors(2, 9, seed=9))
    with pytest.raises(ValueError):
        IndexParams(hnsw_m=0)
    # float64 / non-contiguous input is converted, not rejected
    q = unit_vectors(4, 16, seed=10).astype(np.float64)[:, ::2]
    _, ids = search(index, q, 3)
    assert ids.shape == (4, 3)


def test_exact_search_matches_numpy() -> None:
    x = unit_vectors(200, 12, seed=11)
    q = unit_vectors(20, 12, seed=12)
    scores, ids = exact_search(x, q, 5)
    sims = q @ x.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    assert recall_at_k(ids, expected, 5) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, axis=1), atol=1e-5)


def test_recall_at_k_examples() -> None:
    exact_ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(exact_ids, exact_ids, 3) == 1.0
    assert recall_at_k(np.array([[3, 2, 9], [7, 8, 9]]), exact_ids, 3) == pytest.approx(2 / 6)
    assert recall_at_k(np.array([[1, 9], [4, 9]]), exact_ids, 1) == 1.0  # only top-1 counts
    # -1 padding in the ground truth is not counted as a miss
    assert recall_at_k(np.array([[1, -1, -1]]), np.array([[1, -1, -1]]), 3) == 1.0
    assert recall_at_k(np.empty((0, 3), dtype=np.int64), np.empty((0, 3), dtype=np.int64), 3) == 1.0


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    k=st.integers(min_value=0, max_value=60),
    hnsw=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_search_shape_property(n: int, k: int, hnsw: bool, seed: int) -> None:
    x = unit_vectors(n, 8, seed=seed)
    index = build_index(x, IndexParams(exact_max=0 if hnsw else 10**6, large="hnsw", hnsw_m=4))
    scores, ids = search(index, x[:3], k)
    kk = min(k, n)
    assert scores.shape == ids.shape == (min(3, n), kk)
    assert np.all((ids >= -1) & (ids < n))
    assert np.all(np.isneginf(scores[ids < 0]))
    for row in ids:
        valid = row[row >= 0]
        assert len(set(valid.tolist())) == len(valid)  # no duplicate ids


# -- IVF-PQ: lossy codes, re-scored exactly against the dense vectors ------------------------

PQ = IndexParams(exact_max=0, large="ivfpq", nlist=64, nprobe=16, pq_m=16, pq_nbits=6)  # 6 bits: trains fast


def clustered_vectors(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors around 200 topics, the structure LSA vectors have (uniform ones have none)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((200, d)).astype(np.float32)
    x = topics[rng.integers(0, len(topics), n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pq_data() -> np.ndarray:
    return clustered_vectors(10_000, D, seed=20)


@pytest.fixture(scope="module")
def pq_index(pq_data: np.ndarray) -> faiss.Index:
    return build_index(pq_data, PQ)


def test_ivfpq_is_lossy_and_rescored(pq_index: faiss.Index, pq_data: np.ndarray) -> None:
    assert isinstance(pq_index, faiss.IndexIVFPQ) and is_lossy(pq_index)
    assert pq_index.code_size == PQ.pq_m * PQ.pq_nbits // 8  # bytes per article
    queries = pq_data[::100]
    _, exact_ids = exact_search(pq_data, queries, K)
    _, coded = search(pq_index, queries, K)
    scores, ids = search(pq_index, queries, K, vectors=pq_data, rerank=8)
    assert recall_at_k(ids, exact_ids, K) >= 0.95 > recall_at_k(coded, exact_ids, K)
    np.testing.assert_allclose(scores, np.einsum("nkd,nd->nk", pq_data[ids], queries), atol=1e-5)  # exact scores
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert np.array_equal(ids[:, 0], np.arange(0, len(pq_data), 100))  # each query finds itself first


def test_rerank_spans_stacked_parts(pq_index: faiss.Index, pq_data: np.ndarray) -> None:
    extra = clustered_vectors(50, D, seed=21)
    stacked = stack([pq_index, flat(extra)])
    assert is_lossy(stacked) and not is_lossy(flat(extra))
    assert rerank_factor(stacked, 4) == 4 and rerank_factor(flat(extra), 4) == 0
    _, ids = search(stacked, extra, 1, vectors=np.concatenate([pq_data, extra]), rerank=4)
    assert np.array_equal(ids[:, 0], np.arange(len(pq_data), len(pq_data) + 50))


@pytest.mark.parametrize("mmap", [True, False])
def test_ivfpq_save_load(pq_index: faiss.Index, pq_data: np.ndarray, tmp_path: Path, mmap: bool) -> None:
    save_index(pq_index, tmp_path / "pq.faiss")
    loaded = load_index(tmp_path / "pq.faiss", mmap=mmap, ef_search=PQ.ef_search, nprobe=4)
    assert faiss.extract_index_ivf(loaded).nprobe == 4
    assert is_mmapped(loaded) == (mmap and hasattr(faiss, "IO_FLAG_MMAP_IFC"))
    faiss.extract_index_ivf(pq_index).nprobe = 4
    queries = pq_data[:300]
    for a, b in zip(search(pq_index, queries, K, vectors=pq_data), search(loaded, queries, K, vectors=pq_data)):
        np.testing.assert_array_equal(a, b)
    faiss.extract_index_ivf(pq_index).nprobe = PQ.nprobe


def test_ivfpq_falls_back_to_exact_when_too_small_to_train() -> None:
    x = clustered_vectors(4_000, D, seed=22)
    index = build_index(x, PQ)
    assert isinstance(index, faiss.IndexFlatIP) and not is_lossy(index)
    with pytest.raises(ValueError, match="must divide"):
        build_index(clustered_vectors(5_000, 60, seed=23), PQ)
    with pytest.raises(ValueError):
        IndexParams(large="pq")


MAPPED_RSS = """
import sys
import numpy as np
from index.faiss_index import load_index, search

def rss_anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

before = rss_anon_kib()
index = load_index(sys.argv[1], mmap=sys.argv[2] == "1", nprobe=64)
search(index, np.eye(index.d, dtype=np.float32), 10)  # touches every list
print(rss_anon_kib() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_mapped_index_holds_no_private_copy(kind: str, tmp_path: Path) -> None:
    """What a serving worker adds: anonymous (private) memory, the rest is shared page cache."""
    x = clustered_vectors(40_000, D, seed=24)  # 10 MiB of vectors
    params = IndexParams(exact_max=0, large=kind, nlist=64, hnsw_m=8, ef_construction=16)
    save_index(build_index(x, params), tmp_path / "i.faiss")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def anon_kib(mmap: bool) -> int:
        out = subprocess.run(
            [sys.executable, "-c", MAPPED_RSS, str(tmp_path / "i.faiss"), "1" if mmap else "0"],
            capture_output=True, text=True, check=True, env=env,
        )
        return int(out.stdout.split()[-1])

    size_kib = (tmp_path / "i.faiss").stat().st_size // 1024
    assert anon_kib(mmap=False) > 0.8 * size_kib
    assert anon_kib(mmap=True) < 0.1 * size_kib


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_build_reports_every_row_added(kind: str, data: np.ndarray) -> None:
    added: list[int] = []
    index = build_index(data, KINDS[kind], progress=added.append)
    assert sum(added) == index.ntotal == len(data)
