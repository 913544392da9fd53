"""IVF cells from raw k-means (faiss's default training, the baseline) against the centred spherical
cells `build_index` trains: imbalance, query time and recall@10 within the build's candidate width,
the same queries on both in the same run.

    python benchmarks/ivf_cells.py --vectors DATA_DIR/current/dense.npy [--queries 3000] [--nprobe 16]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from index.faiss_index import IndexParams, build_index  # noqa: E402
from recommender.config import NeighbourConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def raw_cells(dense: np.ndarray, nprobe: int) -> faiss.Index:
    """The baseline: faiss's IVF training on the raw vectors, as the build did before."""
    n, d = dense.shape
    nlist = int(4 * np.sqrt(n))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(dense[np.sort(np.random.default_rng(0).choice(n, min(n, nlist * 40), replace=False))])
    index.add(dense)
    index.nprobe = nprobe
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS / "ivf_cells.json")
    args = parser.parse_args()
    dense = np.ascontiguousarray(np.load(args.vectors), dtype=np.float32)
    width = NeighbourConfig().candidates + 1
    sample = np.random.default_rng(0).choice(len(dense), min(args.queries, len(dense)), replace=False)
    _, exact = faiss.knn(dense[sample], dense, 11, faiss.METRIC_INNER_PRODUCT)
    truth = [[x for x in exact[r] if x != q][:10] for r, q in enumerate(sample)]
    out: dict[str, dict] = {}
    indexes = {}
    for name, make in (("raw k-means (baseline)", lambda: raw_cells(dense, args.nprobe)),
                       ("centred spherical", lambda: build_index(dense, IndexParams(nprobe=args.nprobe)))):
        started = time.perf_counter()
        indexes[name] = make()
        ivf = faiss.extract_index_ivf(indexes[name])
        out[name] = {"build_s": round(time.perf_counter() - started, 1),
                     "imbalance": round(ivf.invlists.imbalance_factor(), 2), "ms_per_query": []}
    for _ in range(2):  # alternate, so both see the same machine
        for name, index in indexes.items():
            started = time.perf_counter()
            _, got = index.search(dense[sample], width)
            out[name]["ms_per_query"].append(round((time.perf_counter() - started) / len(sample) * 1e3, 3))
            out[name]["recall_at_10_in_candidates"] = round(
                float(np.mean([len(set(t) & set(g)) / 10 for t, g in zip(truth, got)])), 4)
    for name, row in out.items():
        print(f"{name:24s} imbalance {row['imbalance']:6.2f}  build {row['build_s']:7.1f} s  "
              f"ms/query {row['ms_per_query']}  recall@10 {row['recall_at_10_in_candidates']:.3f}")
    base, now = out["raw k-means (baseline)"], out["centred spherical"]
    print(f"query time ratio (centred / baseline): {min(now['ms_per_query']) / min(base['ms_per_query']):.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": len(dense), "nprobe": args.nprobe, "queries": len(sample), "cells": out}, indent=1))


if __name__ == "__main__":
    main()
