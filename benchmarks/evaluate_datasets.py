"""`related evaluate` on every labelled dataset in ../shared/data that exists.

Full outputs (report.html with article titles, TREC runs, indexes) go to a scratch directory outside
the repository, because the datasets' texts must not enter it; only numbers are copied here:
benchmarks/results/evaluate-<dataset>.json (metrics.json) and .md (summary.md), plus
benchmarks/results/evaluate-datasets.md, one table over all datasets.

    python benchmarks/evaluate_datasets.py                              # all datasets, default configs
    python benchmarks/evaluate_datasets.py --datasets duc2004 bbc --config default --config sparse_only
    python benchmarks/evaluate_datasets.py --config default --config duplicates_off   # duplicate policy on / off
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recommender.evaluation.evaluate import load_configs, run_evaluation  # noqa: E402
from recommender.evaluation.metrics import NOVELTY, RANK_MEASURES  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
DATASETS = ("duc2004", "bbc", "10kgnad-test", "reuters21578")


def table(results: dict[str, dict]) -> str:
    header = ["dataset", "queries", "config", *RANK_MEASURES, NOVELTY, "dup rate", "ANN R@10", "p50 ms", "p99 ms",
              "build s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, report in results.items():
        for config in report["configs"]:
            cells = [dataset, str(report["queries"]), config["name"]]
            cells += [f"{config['metrics'][name]:.3f}" for name in (*RANK_MEASURES, NOVELTY)]
            ann = config["ann_recall@10"]
            cells += [f"{config['beyond']['duplicate_rate']:.4f}", "exact" if ann is None else f"{ann:.3f}",
                      f"{config['latency']['p50_ms']:.2f}", f"{config['latency']['p99_ms']:.2f}",
                      f"{config['build']['seconds']:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--config", action="append", default=[], help="Config file or shipped name (repeatable).")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "related-eval",
                        help="Scratch dir for full outputs (outside the repo).")
    args = parser.parse_args()

    configs = load_configs(args.config)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {}
    for dataset in args.datasets:
        folder = DATA / dataset
        if not (folder / "corpus.jsonl").is_file():
            print(f"skip {dataset}: {folder} not found", file=sys.stderr)
            continue
        out = args.work / dataset
        started = time.perf_counter()
        run_evaluation(
            folder / "corpus.jsonl", configs, out, labels_path=folder / "labels.jsonl", queries=args.queries,
            seed=args.seed, force_build=True, progress=lambda message, d=dataset: print(f"{d}: {message}", file=sys.stderr),
        )
        shutil.copyfile(out / "metrics.json", RESULTS / f"evaluate-{dataset}.json")
        shutil.copyfile(out / "summary.md", RESULTS / f"evaluate-{dataset}.md")
        results[dataset] = json.loads((out / "metrics.json").read_text())
        print(f"{dataset}: done in {time.perf_counter() - started:.0f}s; report {out / 'report.html'}", file=sys.stderr)
    # merge with datasets evaluated by earlier runs, so separate runs build one table
    for dataset in DATASETS:
        saved = RESULTS / f"evaluate-{dataset}.json"
        if dataset not in results and saved.is_file():
            results[dataset] = json.loads(saved.read_text())
    text = "# related evaluate on shared/data\n\n" + table(results) + "\n"
    (RESULTS / "evaluate-datasets.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
