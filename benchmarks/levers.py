"""Quality levers of the neighbour stage and the policy, swept on every labelled dataset without re-vectorizing.

Each dataset is built once with the default config (text analysis, TF-IDF, SVD and FAISS are
shared by every variant; a variant with its own [text] or [reduce] settings gets a build of its
own); each variant then recomputes the neighbour lists from that version's
stored vectors (`index.neighbours.build_neighbours`, both passes, the build's own code) with its
`[neighbours]` settings, ranks them through its `[policy]` and scores nDCG@10 and
novelty_nDCG@10 on the same queries `related evaluate` uses. The default is measured in the same
run and every variant is reported as a difference from it.

Variants are config overrides given as JSON, section by section (repeatable), e.g.

    python benchmarks/levers.py --variant '{"neighbours": {"time_weight": 0.5}}' \
        --variant '{"policy": {"duplicate_threshold": 0.95}}' --variant '{"text": {"name_weight": 2}}'

A `shared_neighbours` section re-ranks the lists by shared neighbours (benchmarks/shared_neighbours.py,
a lever measured here but not built into the pipeline): `{"shared_neighbours": {"top": 10, "weight": 0.5}}`;
a `second_feedback` section adds a second feedback round over the final lists
(benchmarks/second_feedback.py, likewise): `{"second_feedback": {"neighbours": 7}}`.

Confirm a chosen setting with benchmarks/evaluate_datasets.py (the full `related evaluate`).
Writes benchmarks/results/levers.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import second_feedback  # noqa: E402
import shared_neighbours  # noqa: E402
from index.neighbours import Corpus, build_neighbours  # noqa: E402
from recommender.config import NeighbourConfig, PipelineConfig  # noqa: E402
from recommender.evaluation import metrics, trec  # noqa: E402
from recommender.evaluation.evaluate import ideal_novel_gains, novelty  # noqa: E402
from recommender.evaluation.judgments import judgments_from_labels, read_labels  # noqa: E402
from recommender.evaluation.resemblance import CopyRelation  # noqa: E402
from recommender.pipeline.build import build  # noqa: E402
from recommender.pipeline.sources import read_source  # noqa: E402
from recommender.policy.ranking import Policy, RelatedQuery  # noqa: E402
from recommender.related import RelatedIndex  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ("duc2004", "bbc", "10kgnad-test", "reuters21578")
# Benchmark-only levers a variant may name, with their functions' keyword arguments:
SHARED = "shared_neighbours"  # shared_neighbours.rerank
SECOND = "second_feedback"  # second_feedback.refine


def inputs(index: RelatedIndex) -> tuple[Corpus, np.ndarray]:
    """The version's corpus (without the stored feedback rows) and dense vectors, as the build has them."""
    corpus = dataclasses.replace(index.corpus, expanded=None, postings=None)
    return corpus, np.ascontiguousarray(np.asarray(index.dense, dtype=np.float32))


def neighbour_lists(index: RelatedIndex, neighbours: NeighbourConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every article's neighbour list when computed with `neighbours`."""
    corpus, dense = inputs(index)
    return build_neighbours(corpus, neighbours.params(), dense)


def vectors_key(config: PipelineConfig) -> str:
    """What the stored vectors depend on: variants that agree on it share one build."""
    return json.dumps([config.text.model_dump(mode="json"), config.reduce.model_dump(mode="json")], sort_keys=True)


def built(indexes: dict[str, RelatedIndex], folder: Path, work: Path, config: PipelineConfig) -> RelatedIndex:
    """The dataset built with `config`'s vectors: once per distinct [text]/[reduce], in its own directory."""
    key = vectors_key(config)
    if key not in indexes:
        data_dir = work / f"vectors-{len(indexes)}"
        build(folder / "corpus.jsonl", data_dir, config)
        indexes[key] = RelatedIndex.open(data_dir)
    return indexes[key]


def served(index: RelatedIndex, policy: Policy, lists: tuple[np.ndarray, np.ndarray], queries: list[str]) -> dict:
    """Served top 10 of each query from these lists through `policy`."""
    (ids, scores), catalog, query = lists, index.catalog, RelatedQuery(limit=10)
    out = {}
    for qid in queries:
        row = index.row_of[qid]
        items = policy.rank(catalog, index.context(row), query, ids[row].astype(np.int64), scores[row])
        out[qid] = [(catalog.ids[item.row], item.score) for item in items]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--variant", action="append", default=[], help="JSON object of config overrides by section.")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "related-levers")
    args = parser.parse_args()
    base = PipelineConfig()
    variants = [{}] + [json.loads(v) for v in args.variant]
    results: dict[str, list[dict]] = {}
    for dataset in args.datasets:
        folder = DATA / dataset
        if not (folder / "corpus.jsonl").is_file():
            print(f"skip {dataset}: not found", file=sys.stderr)
            continue
        indexes: dict[str, RelatedIndex] = {}
        articles = read_source(folder / "corpus.jsonl").articles
        judgments = judgments_from_labels(read_labels(folder / "labels.jsonl"), [a.id for a in articles], args.queries, 0)
        copies = CopyRelation.of(articles)
        ideal = {q: ideal_novel_gains(judgments.qrels[q], q, copies) for q in judgments.queries}
        rows, cache = [], {}
        for variant in variants:
            started = time.perf_counter()
            sections = {section: value for section, value in variant.items() if section not in (SHARED, SECOND)}
            config = PipelineConfig.from_dict(base.model_dump() | {
                section: getattr(base, section).model_dump() | sections[section] for section in sections})
            index = built(indexes, folder, args.work / dataset, config)
            key = vectors_key(config) + config.neighbours.model_dump_json()
            if key not in cache:
                cache[key] = neighbour_lists(index, config.neighbours)
            lists = cache[key]
            if SECOND in variant:
                corpus, dense = inputs(index)
                lists = second_feedback.refine(corpus, config.neighbours.params(), dense, *lists, **variant[SECOND])
            if SHARED in variant:
                lists = shared_neighbours.rerank(*lists, **variant[SHARED])
            ranked = served(index, Policy(config.policy), lists, judgments.queries)
            values = metrics.per_query(judgments.qrels, trec.ranked_to_run(ranked), judgments.level, judgments.queries)
            novel, duplicates = novelty(ranked, judgments, copies, ideal)
            row = {"variant": variant, "nDCG@10": float(np.mean(list(values["nDCG@10"].values()))),
                   metrics.NOVELTY: float(np.mean(list(novel.values()))), "duplicate_rate": duplicates,
                   "seconds": round(time.perf_counter() - started, 1)}
            row["delta"] = row["nDCG@10"] - (rows[0]["nDCG@10"] if rows else row["nDCG@10"])
            rows.append(row)
            print(f"{dataset:14s} {json.dumps(variant):60s} nDCG@10 {row['nDCG@10']:.4f} ({row['delta']:+.4f}) "
                  f"novelty {row[metrics.NOVELTY]:.4f} dup {duplicates:.4f}", flush=True)
        results[dataset] = rows
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "levers.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\nworst delta per variant over datasets:")
    for i, variant in enumerate(variants[1:], 1):
        deltas = {d: rows[i]["delta"] for d, rows in results.items()}
        print(f"  {json.dumps(variant):60s} min {min(deltas.values()):+.4f}  " + "  ".join(f"{d} {v:+.4f}" for d, v in deltas.items()))


if __name__ == "__main__":
    main()
