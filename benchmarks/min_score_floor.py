"""Choose the relevance floor (`policy.min_score`) by measurement, on every labelled set in ../shared/data.

Runs `related evaluate` once per dataset with no floor, then cuts each served top-10 list at a grid of
floors (a floor only drops the list's low-scoring tail) and measures, per floor: nDCG@10, its drop
against no floor, the share of listed items with gain 0 (strangers) and the mean list length. The
chosen floor is the highest at which nDCG@10 drops by at most --max-drop on every dataset.

    python benchmarks/min_score_floor.py                       # all datasets
    python benchmarks/min_score_floor.py --datasets duc2004 bbc --max-drop 0.002

Writes benchmarks/results/min-score-floor.json and .md (numbers only; the texts stay in the scratch dir).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender.config import PipelineConfig  # noqa: E402
from recommender.evaluation import metrics as m  # noqa: E402
from recommender.evaluation import trec  # noqa: E402
from recommender.evaluation.evaluate import SERVED, EvalConfig, Evaluation, run_evaluation  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ("duc2004", "bbc", "10kgnad-test", "reuters21578")
FLOORS = tuple(round(0.01 * i, 2) for i in range(31))


def at_floor(evaluation: Evaluation, floor: float) -> dict[str, float]:
    """nDCG@10, gain-0 share and mean length of the served lists cut at `floor`."""
    result = evaluation.systems[0]
    queries = evaluation.judgments.queries
    lists = {q: [(d, s) for d, s in result.ranked[q][:SERVED] if s >= floor] for q in queries}
    values = m.per_query(evaluation.judgments.qrels, trec.ranked_to_run(lists), evaluation.judgments.level, queries)
    listed = [(q, d) for q in queries for d, _ in lists[q]]
    strangers = sum(evaluation.grade(q, d) == 0 for q, d in listed)
    return {
        "floor": floor,
        "nDCG@10": m.means(values)["nDCG@10"],
        "gain0_share": strangers / len(listed) if listed else 0.0,
        "mean_length": len(listed) / len(queries),
        "short_lists": sum(len(v) < SERVED for v in lists.values()) / len(queries),
    }


def measure(dataset: str, queries: int, work: Path) -> list[dict[str, float]]:
    folder = DATA / dataset
    config = EvalConfig("no_floor", "pipeline", pipeline=PipelineConfig.from_dict({"name": "no_floor", "policy": {"min_score": 0.0}}))
    evaluation = run_evaluation(
        folder / "corpus.jsonl", [config], work / dataset, labels_path=folder / "labels.jsonl", queries=queries,
        force_build=True, progress=lambda message: print(f"{dataset}: {message}", file=sys.stderr),
    )
    rows = [at_floor(evaluation, floor) for floor in FLOORS]
    for row in rows:
        row["drop"] = rows[0]["nDCG@10"] - row["nDCG@10"]
    return rows


def choose(results: dict[str, list[dict[str, float]]], max_drop: float) -> float:
    """The highest floor of the grid whose drop is within `max_drop` on every dataset (and at every lower floor)."""
    chosen = 0.0
    for i, floor in enumerate(FLOORS):
        if all(rows[i]["drop"] <= max_drop + 1e-12 for rows in results.values()):
            chosen = floor
        else:
            break
    return chosen


def table(results: dict[str, list[dict[str, float]]], chosen: float) -> str:
    lines = ["| dataset | floor | nDCG@10 | drop | gain-0 share | mean length | short lists |", "|---|---|---|---|---|---|---|"]
    for dataset, rows in results.items():
        for row in rows:
            if row["floor"] in (0.0, chosen) or row["floor"] * 100 % 5 == 0:
                mark = " (chosen)" if row["floor"] == chosen else ""
                lines.append(
                    f"| {dataset} | {row['floor']:.2f}{mark} | {row['nDCG@10']:.4f} | {row['drop']:.4f} | "
                    f"{row['gain0_share']:.3f} | {row['mean_length']:.2f} | {row['short_lists']:.3f} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--max-drop", type=float, default=0.002)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "related-floor")
    args = parser.parse_args()
    results = {}
    for dataset in args.datasets:
        if not (DATA / dataset / "corpus.jsonl").is_file():
            print(f"skip {dataset}: {DATA / dataset} not found", file=sys.stderr)
            continue
        results[dataset] = measure(dataset, args.queries, args.work)
    if not results:
        sys.exit("no dataset found under " + str(DATA))
    saved = RESULTS / "min-score-floor.json"
    if saved.is_file():  # datasets measured by an earlier run stay in the table
        earlier = json.loads(saved.read_text())["datasets"]
        results = {d: results.get(d) or earlier[d] for d in DATASETS if d in results or d in earlier}
    chosen = choose(results, args.max_drop)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "min-score-floor.json").write_text(
        json.dumps({"max_drop": args.max_drop, "chosen": chosen, "datasets": results}, indent=2) + "\n", encoding="utf-8"
    )
    text = (f"# Relevance floor (policy.min_score) on shared/data\n\nHighest floor with an nDCG@10 drop <= "
            f"{args.max_drop} on every dataset: **{chosen:.2f}**\n\n" + table(results, chosen) + "\n")
    (RESULTS / "min-score-floor.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
