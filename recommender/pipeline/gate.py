"""Quality gate: evaluate a freshly built version against the serving one before switching.

`related build --gate [--gate-labels FILE]` calls `build(..., gate=make_gate(...))`; build()
calls the gate after the new version is committed and before it is published. A refused
version stays on disk, `current` is unchanged, and the CLI exits with EXIT_REFUSED (3).

Two modes, both on a fixed seeded sample of queries present (alive) in both versions:

- labels given: graded nDCG@10 (2 same story, 1 same category; trec_eval's definition via
  ir_measures) of the raw precomputed top-10 lists. Refused when the candidate's mean is
  lower than the previous version's by more than `build.gate_margin`.
- no labels: the previous lists are the reference. Refused when the mean overlap@10 of the
  two versions' lists is below `build.gate_min_overlap`, when catalog coverage (share of alive
  articles in some top-10 list) drops by more than the margin, or when the duplicate rate
  (share of pairs inside a top-10 list with sparse cosine >= 0.9) rises by more than it.

With no previous version, or no query common to both, the gate passes and says why.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.artifacts import Version
from recommender.config import BuildConfig
from recommender.errors import RelatedError

EXIT_REFUSED = 3
TOP = 10
SAMPLE = 1000
SEED = 0
DUPLICATE_COSINE = 0.9


@dataclass
class GateResult:
    passed: bool
    reason: str
    mode: str  # "labels", "lists" or "none"
    metrics: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        parts = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in self.metrics.items())
        return f"gate={'passed' if self.passed else 'refused'} mode={self.mode} {parts}".rstrip()


class GateRefused(RelatedError):
    """The gate refused a built version; it stays on disk and `current` is unchanged."""

    def __init__(self, version: Path, result: GateResult) -> None:
        super().__init__(f"quality gate refused version {version.name}: {result.reason}")
        self.version = version
        self.result = result


@dataclass
class Lists:
    """Top-10 lists of one version, by article id, for alive articles."""

    name: str
    ids: list[str]
    alive: np.ndarray
    rows: dict[str, int]
    top: np.ndarray  # int32 [N, TOP] rows, -1 padded (dead rows removed)
    sparse: Any

    @classmethod
    def load(cls, path: Path) -> Lists:
        from recommender.related import load_sparse

        version = Version.open(path, verify=False)
        ids = [a["id"] for a in version.jsonl("articles.jsonl")]
        alive = np.asarray(version.array("alive.npy", mmap=False), dtype=bool)
        neighbours = np.asarray(version.array("neighbours.npy"))
        n_terms = len(version.json("vocabulary.json"))
        top = np.full((len(ids), TOP), -1, dtype=np.int32)
        for start in range(0, len(ids), 65_536):  # drop dead rows, keep order, first TOP
            block = neighbours[start : start + 65_536]
            ok = (block >= 0) & alive[np.maximum(block, 0)]
            order = np.argsort(~ok, axis=1, kind="stable")[:, :TOP]
            picked = np.take_along_axis(block, order, axis=1)
            valid = np.take_along_axis(ok, order, axis=1)
            top[start : start + len(block), : picked.shape[1]] = np.where(valid, picked, -1)
        rows = {article_id: row for row, article_id in enumerate(ids) if alive[row]}
        return cls(path.name, ids, alive, rows, top, load_sparse(version, "tfidf", n_terms))

    def list_of(self, article_id: str) -> list[str]:
        return [self.ids[r] for r in self.top[self.rows[article_id]] if r >= 0]

    def coverage(self) -> float:
        listed = self.top[self.alive]
        return float(np.unique(listed[listed >= 0]).size / max(1, int(self.alive.sum())))

    def duplicate_rate(self, queries: list[str]) -> float:
        from recommender.evaluation.metrics import duplicate_rate

        lists = [[int(r) for r in self.top[self.rows[q]] if r >= 0] for q in queries]
        value = duplicate_rate(lists, self.sparse, DUPLICATE_COSINE)
        return 0.0 if math.isnan(value) else value


def sample_queries(common: list[str], seed: int = SEED, limit: int = SAMPLE) -> list[str]:
    if len(common) <= limit:
        return sorted(common)
    rng = np.random.default_rng(seed)
    ordered = sorted(common)
    return [ordered[i] for i in sorted(rng.choice(len(ordered), size=limit, replace=False))]


def ndcg_at_10(lists: Lists, queries: list[str], qrels: dict[str, dict[str, int]]) -> float:
    from recommender.evaluation.metrics import means, per_query

    run = {q: {d: float(TOP - rank) for rank, d in enumerate(lists.list_of(q))} for q in queries}
    return means(per_query(qrels, run, 2, queries))["nDCG@10"]


def judge_with_labels(candidate: Lists, previous: Lists, labels_path: Path, margin: float) -> GateResult:
    from recommender.evaluation.judgments import judgments_from_labels, read_labels

    common = sorted(candidate.rows.keys() & previous.rows.keys())
    labels = read_labels(labels_path)
    try:
        judgments = judgments_from_labels(labels, common, SAMPLE, SEED)
    except RelatedError as err:
        return GateResult(True, f"nothing to compare: {err}", "labels", {"queries": 0})
    new = ndcg_at_10(candidate, judgments.queries, judgments.qrels)
    old = ndcg_at_10(previous, judgments.queries, judgments.qrels)
    metrics = {"queries": len(judgments.queries), "ndcg10": new, "previous_ndcg10": old, "margin": margin}
    if new < old - margin:
        return GateResult(False, f"nDCG@10 {new:.4f} < previous {old:.4f} - margin {margin}", "labels", metrics)
    return GateResult(True, f"nDCG@10 {new:.4f} vs previous {old:.4f}", "labels", metrics)


def judge_lists(candidate: Lists, previous: Lists, config: BuildConfig) -> GateResult:
    margin = config.gate_margin
    common = sorted(candidate.rows.keys() & previous.rows.keys())
    if not common:
        return GateResult(True, "nothing to compare: no article in both versions", "lists", {"queries": 0})
    queries = sample_queries(common)
    overlaps = []
    for q in queries:
        old = set(previous.list_of(q))
        new = set(candidate.list_of(q))
        if old or new:
            overlaps.append(len(old & new) / max(1, min(TOP, max(len(old), len(new)))))
    overlap = float(np.mean(overlaps)) if overlaps else 1.0
    coverage, previous_coverage = candidate.coverage(), previous.coverage()
    duplicates, previous_duplicates = candidate.duplicate_rate(queries), previous.duplicate_rate(queries)
    metrics = {
        "queries": len(queries), "overlap10": overlap, "coverage": coverage, "previous_coverage": previous_coverage,
        "duplicate_rate": duplicates, "previous_duplicate_rate": previous_duplicates,
        "margin": margin, "min_overlap": config.gate_min_overlap,
    }
    problems = []
    if overlap < config.gate_min_overlap:
        problems.append(f"top-{TOP} lists overlap {overlap:.2f} with the previous version's "
                        f"(< build.gate_min_overlap={config.gate_min_overlap})")
    if coverage < previous_coverage - margin:
        problems.append(f"catalog coverage {coverage:.3f} < previous {previous_coverage:.3f} - margin {margin}")
    if duplicates > previous_duplicates + margin:
        problems.append(f"duplicate rate {duplicates:.3f} > previous {previous_duplicates:.3f} + margin {margin}")
    if problems:
        return GateResult(False, "; ".join(problems), "lists", metrics)
    return GateResult(True, f"overlap@{TOP} {overlap:.2f}, coverage {coverage:.3f}, duplicates {duplicates:.3f}",
                      "lists", metrics)


def make_gate(config: BuildConfig, labels: Path | None = None):
    """The gate callable build() takes: (candidate version dir, previous or None) -> GateResult."""
    if labels is not None and not Path(labels).is_file():
        raise RelatedError(f"gate labels file not found: {labels}")

    def gate(candidate: Path, previous: Path | None) -> GateResult:
        if previous is None:
            return GateResult(True, "no previous version to compare with", "none")
        if Path(previous).resolve() == Path(candidate).resolve():
            return GateResult(True, "candidate is the current version", "none")
        new, old = Lists.load(Path(candidate)), Lists.load(Path(previous))
        if labels is not None:
            return judge_with_labels(new, old, Path(labels), config.gate_margin)
        return judge_lists(new, old, config)

    return gate


def write_result(result: GateResult, path: Path) -> None:
    """Keep the verdict beside the data (the CLI writes DATA_DIR/gate.json)."""
    path.write_text(json.dumps({"passed": result.passed, "mode": result.mode, "reason": result.reason,
                                "metrics": result.metrics}, indent=2) + "\n", encoding="utf-8")
