"""Which FAISS index above `exact_max`: build time, memory per article, latency and recall@10.

Candidates, each built by index.faiss_index.build_index and served as the API serves it
(load_index from disk, memory-mapped, re-scored against the memory-mapped dense.npy):
IndexFlatIP (the exact reference, measured in the same run), HNSW (M=32, efConstruction 80)
at several efSearch, IVF-Flat (nlist = 4 sqrt N) at several nprobe, IVF-PQ (64- and 32-byte
codes) at several nprobe without re-scoring and with a short list of k x rerank candidates
re-scored exactly.

Per setting: build seconds (train + add, 2 threads), bytes on disk per article, what two
serving workers that load the same file each add (anonymous = private copy, file-backed =
page cache the workers share, PSS = their fair share), single-query latency on one thread
(how the API queries), batch throughput on 2 threads (how the build queries), and recall@10
against exact search over 1,000 seeded sampled articles (each its own query, itself excluded).
Latency, throughput and recall are measured twice: asking k=10, and asking the width the
build and the API really ask (NeighbourConfig.candidates + 1) and keeping its top 10.

    python benchmarks/index_choice.py --synthetic 100000        # quick; synthetic vectors flatter
    python benchmarks/index_choice.py --vectors /path/to/version/dense.npy
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from index.faiss_index import IndexParams, build_index, load_index, save_index, search  # noqa: E402
from recommender.config import NeighbourConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
K = 10
TARGET_RECALL = 0.98
EPSILON = 0.01  # cosine tolerance of the tolerant recall (ann-benchmarks' "epsilon" metric)
SYNTHETIC_NOTE = (
    "synthetic vectors (Gaussian topics) are not LSA vectors and may flatter the ANN indexes; "
    "decide on a real dense.npy"
)


@dataclass(frozen=True)
class Candidate:
    """One index to build and the query-time settings to measure on it."""

    name: str
    params: IndexParams
    settings: list[dict] = field(default_factory=lambda: [{}])  # load_index / search keyword sets


def candidates(n: int) -> list[Candidate]:
    """nprobe as shares of the cells (build_index's default nlist = 4 sqrt N), so the grid
    means the same at 100k and at 1M; efSearch alone sets HNSW's recall (a larger k does not
    widen its search: measured on faiss 1.15.1)."""
    exact = IndexParams(exact_max=n)
    hnsw = IndexParams(exact_max=0, large="hnsw", hnsw_m=32, ef_construction=80)
    ivf = IndexParams(exact_max=0, large="ivf")
    nlist = int(4 * np.sqrt(n))
    rerank = [{"nprobe": max(1, nlist // share), "rerank": r} for share in (16, 8, 4) for r in (0, 1, 4)]
    return [
        Candidate("flat", exact),
        Candidate("hnsw32", hnsw, [{"ef_search": ef} for ef in (32, 64, 128, 256, 512)]),
        Candidate("ivf-flat", ivf, [{"nprobe": max(1, nlist // share)} for share in (250, 64, 32, 16, 8, 4)]),
        Candidate(  # the default above exact_max; 1/250 of the cells is the default nprobe 16 at 1M
            "ivf-sq8", IndexParams(exact_max=0, large="ivfsq8"),
            [{"nprobe": max(1, nlist // share), "rerank": 1} for share in (250, 64, 32, 16, 8, 4)],
        ),
        Candidate("ivf-pq64", IndexParams(exact_max=0, large="ivfpq", pq_m=64), rerank),
        Candidate("ivf-pq32", IndexParams(exact_max=0, large="ivfpq", pq_m=32), rerank),
    ]


def synthetic(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around n/50 topics with an LSA-like decaying spectrum."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.sqrt(np.arange(1, d + 1))).astype(np.float32)
    topics = rng.standard_normal((max(8, n // 50), d)).astype(np.float32) * scale
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65_536):
        rows = min(65_536, n - start)
        noise = rng.standard_normal((rows, d)).astype(np.float32) * scale
        x[start : start + rows] = topics[rng.integers(0, len(topics), rows)] + 0.8 * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def without_self(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Top-k ids of each row with the query's own row dropped (the service never lists it)."""
    keep = ids != rows[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")  # kept ids first, in rank order
    return np.take_along_axis(ids, order, axis=1)[:, :k]


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(a[a >= 0], t)) for a, t in zip(ids, truth))
    return hits / truth.size


def exact_scores(dense: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    scores = np.einsum("qkd,qd->qk", dense[np.maximum(ids, 0)], queries)
    return np.where(ids >= 0, scores, -np.inf)


def tolerant_recall(ids: np.ndarray, scores: np.ndarray, floor: np.ndarray) -> float:
    """ann-benchmarks' "epsilon" recall for a similarity: the share of the returned top 10 whose
    exact cosine is within EPSILON of the exact 10th best. Where the exact top 10 are near-ties
    (an article with no close neighbour), any of the tied articles is as right as the others."""
    return float(np.mean(scores[:, : ids.shape[1]] >= floor[:, None] - EPSILON))


Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def searcher(index: faiss.Index, dense: np.ndarray, setting: dict) -> Search:
    """search() as the API calls it for this setting (re-scored when `rerank` > 0)."""
    r = setting.get("rerank", 0)
    return lambda q, k: search(index, q, k, vectors=dense if r else None, rerank=max(r, 1))


def latencies(run: Search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One query at a time on one thread; (milliseconds per query, ids)."""
    faiss.omp_set_num_threads(1)
    times = np.empty(len(queries))
    ids = []
    for i in range(len(queries)):
        started = time.perf_counter()
        ids.append(run(queries[i : i + 1], k)[1][0])
        times[i] = (time.perf_counter() - started) * 1000
    return times, np.array(ids)


def throughput(run: Search, queries: np.ndarray, k: int, threads: int) -> float:
    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    run(queries, k)
    return len(queries) / (time.perf_counter() - started)


WORKER = """
import json, sys
import faiss, numpy as np, psutil
from index.faiss_index import is_mmapped, load_index, search
faiss.omp_set_num_threads(1)
path, mmap, setting, queries = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3]), np.load(sys.argv[4])
me = psutil.Process()
before = me.memory_full_info()
index = load_index(path, mmap=mmap, ef_search=setting.get("ef_search"), nprobe=setting.get("nprobe"))
search(index, queries, 10)
print("ready", flush=True)
sys.stdin.readline()  # the other worker has loaded and searched too
after = me.memory_full_info()
mib = lambda b: round(b / 2**20, 1)
print(json.dumps({
    "mapped": is_mmapped(index),
    "anon_mib": mib((after.rss - after.shared) - (before.rss - before.shared)),
    "file_mib": mib(after.shared - before.shared),
    "uss_mib": mib(after.uss - before.uss),
    "pss_mib": mib(after.pss - before.pss),
}), flush=True)
"""


def worker_memory(path: Path, mmap: bool, setting: dict, queries_path: Path) -> dict:
    """What each of two workers loading the same file at once adds (the first's figures)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", WORKER, str(path), "1" if mmap else "0", json.dumps(setting), str(queries_path)]
    workers = [subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        if w.stdout.readline().strip() != "ready":
            raise RuntimeError(f"memory worker failed on {path}")
    reports = []
    for w in workers:
        out, _ = w.communicate("go\n")
        reports.append(json.loads(out))
    return reports[0]


def measure(args: argparse.Namespace, dense: np.ndarray, workdir: Path) -> dict:
    n = dense.shape[0]
    width = NeighbourConfig().candidates + 1
    rng = np.random.default_rng(args.seed)
    rows = np.sort(rng.choice(n, args.queries, replace=False))
    queries = np.ascontiguousarray(dense[rows])
    batch = np.ascontiguousarray(dense[np.sort(rng.choice(n, min(n, args.batch), replace=False))])
    queries_path = workdir / "queries.npy"
    np.save(queries_path, queries)
    faiss.omp_set_num_threads(args.threads)
    truth = without_self(search(build_index(dense, IndexParams(exact_max=n)), queries, K + 1)[1], rows, K)
    floor = exact_scores(dense, queries, truth).min(axis=1)  # each query's exact 10th best cosine

    built, measured = [], []
    for cand in candidates(n):
        if args.only and cand.name not in args.only:
            continue
        faiss.omp_set_num_threads(args.threads)
        started = time.perf_counter()
        index = build_index(dense, cand.params)
        build_s = time.perf_counter() - started
        path = workdir / f"{cand.name}.faiss"
        save_index(index, path)
        kind = type(index).__name__
        del index
        heaviest = cand.settings[-1]
        record = {
            "index": cand.name,
            "type": kind,
            "build_s": round(build_s, 2),
            "disk_bytes": path.stat().st_size,
            "bytes_per_article": round(path.stat().st_size / n, 1),
            "memory_plain": worker_memory(path, False, heaviest, queries_path),
            "memory_mmap": worker_memory(path, True, heaviest, queries_path),
        }
        built.append(record)
        print(f"built {cand.name}: {build_s:.1f}s, {record['bytes_per_article']} B/article", flush=True)
        for setting in cand.settings:
            served = load_index(path, mmap=True, ef_search=setting.get("ef_search"), nprobe=setting.get("nprobe"))
            run = searcher(served, dense, setting)
            row = {"index": cand.name, "setting": setting or None}
            for label, k in (("k10", K), ("width", width)):
                ms, ids = latencies(run, queries, k + 1)
                top = without_self(ids, rows, K)
                row[label] = {
                    "k": k,
                    "recall_at_10": round(recall(top, truth), 4),
                    f"recall_at_10_eps{EPSILON}": round(tolerant_recall(top, exact_scores(dense, queries, top), floor), 4),
                    "p50_ms": round(float(np.percentile(ms, 50)), 3),
                    "p99_ms": round(float(np.percentile(ms, 99)), 3),
                    "batch_qps": round(throughput(run, batch, k + 1, args.threads)),
                }
            measured.append(row)
            print(f"  {describe(row)}", flush=True)
        del served
    return {"built": built, "settings": measured, "width": width}


def describe(row: dict) -> str:
    setting = ",".join(f"{k}={v}" for k, v in (row["setting"] or {}).items()) or "-"
    k10, wide = row["k10"], row["width"]
    return (
        f"{row['index']:<9} {setting:<22} recall@10 {k10['recall_at_10']:.4f} / {wide['recall_at_10']:.4f}  "
        f"(within {EPSILON}: {k10[f'recall_at_10_eps{EPSILON}']:.4f} / {wide[f'recall_at_10_eps{EPSILON}']:.4f})  "
        f"p50 {k10['p50_ms']:.3f} / {wide['p50_ms']:.3f} ms  p99 {k10['p99_ms']:.3f} / {wide['p99_ms']:.3f} ms  "
        f"qps {k10['batch_qps']} / {wide['batch_qps']}"
    )


def with_ratios(result: dict, n: int) -> None:
    """Each setting against the exact baseline of the same run; the pick per criterion."""
    built = {b["index"]: b for b in result["built"]}
    exact_build = built.get("flat")
    exact_row = next((r for r in result["settings"] if r["index"] == "flat"), None)
    for row in result["settings"]:
        b = built[row["index"]]
        # the build's FAISS cost: train + add, then every article's `width` neighbours
        row["build_and_search_all_s"] = round(b["build_s"] + n / row["width"]["batch_qps"], 1)
        if exact_build and exact_row:
            row["vs_exact"] = {
                "bytes_per_article": round(b["bytes_per_article"] / exact_build["bytes_per_article"], 3),
                "build_and_search_all": round(row["build_and_search_all_s"] / exact_row["build_and_search_all_s"], 3),
                "width_p50": round(row["width"]["p50_ms"] / exact_row["width"]["p50_ms"], 3),
                "width_qps": round(row["width"]["batch_qps"] / exact_row["width"]["batch_qps"], 2),
            }
    passing = [r for r in result["settings"] if r["width"]["recall_at_10"] >= TARGET_RECALL]  # exact included
    picks = {
        "build": min(passing, key=lambda r: r["build_and_search_all_s"], default=None),
        "memory": min(passing, key=lambda r: (built[r["index"]]["bytes_per_article"], r["width"]["p50_ms"]), default=None),
        "latency": min(passing, key=lambda r: r["width"]["p50_ms"], default=None),
    }
    result["picks"] = {k: v and {"index": v["index"], "setting": v["setting"]} for k, v in picks.items()}


def print_table(result: dict) -> None:
    print(f"\nN={result['n']:,} d={result['d']} ({result['source']}); recall/latency/qps: k=10 / width={result['width']}")
    print("index      build_s  B/article  plain anon/file MiB  mmap anon/file/PSS MiB (of 2 workers)")
    for b in result["built"]:
        p, m = b["memory_plain"], b["memory_mmap"]
        print(
            f"{b['index']:<9} {b['build_s']:>8.1f} {b['bytes_per_article']:>10.1f}  {p['anon_mib']:>8.1f} / {p['file_mib']:<8.1f}"
            f"  {m['anon_mib']:>6.1f} / {m['file_mib']:.1f} / {m['pss_mib']:.1f}  mapped={m['mapped']}"
        )
    print()
    for row in result["settings"]:
        ratio = row.get("vs_exact", {})
        print(f"{describe(row)}  all-N {row['build_and_search_all_s']}s (x{ratio.get('build_and_search_all', '?')} exact)")
    print(f"\ncheapest with recall@10 >= {TARGET_RECALL} at width {result['width']}:")
    for criterion, pick in result["picks"].items():
        print(f"  {criterion:<8} {pick}")
    if result.get("note"):
        print(f"NOTE: {result['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vectors", type=Path, help="a version's dense.npy (memory-mapped)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic vectors (quick runs only)")
    parser.add_argument("--dims", type=int, default=256, help="synthetic dimension")
    parser.add_argument("--queries", type=int, default=1000, help="sampled articles for recall and latency")
    parser.add_argument("--batch", type=int, default=10_000, help="queries in the throughput batch")
    parser.add_argument("--threads", type=int, default=2, help="FAISS threads for builds and batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "index_choice.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="index-choice-") as tmp:
        workdir = Path(tmp)
        if args.vectors:
            dense = np.load(args.vectors, mmap_mode="r")
            source = str(args.vectors)
        else:
            np.save(workdir / "dense.npy", synthetic(args.synthetic, args.dims, args.seed))
            dense = np.load(workdir / "dense.npy", mmap_mode="r")  # served the same way as a real one
            source = f"synthetic {args.synthetic}"
        if args.synthetic:
            print(f"NOTE: {SYNTHETIC_NOTE}", flush=True)
        result = {
            "n": int(dense.shape[0]),
            "d": int(dense.shape[1]),
            "source": source,
            "note": SYNTHETIC_NOTE if args.synthetic else None,
            "queries": args.queries,
            "batch": args.batch,
            "threads": args.threads,
            "faiss": faiss.__version__,
            "target_recall_at_10": TARGET_RECALL,
        } | measure(args, dense, workdir)
    with_ratios(result, result["n"])
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
