"""Metrics of related-article lists: ranking quality (via ir_measures), beyond-accuracy, significance.

Ranking measures come from ir_measures (pytrec_eval underneath, i.e. trec_eval's definitions), so
our numbers are the ones trec_eval would print for the exported TREC files:

- nDCG@10 uses the graded qrels with linear gains (gain = grade: 2 same story, 1 same category),
  log2 discounts, and the ideal ranking of all judged documents.
- P@k, R@k and MRR@10 (`RR@10`) count a document as relevant when its grade is at least
  `level`: 2 (same story) when the data has stories, otherwise 1 (same category).

Means are taken over all evaluated queries; a query with no list (or one the measure cannot score)
counts as 0, never silently dropped.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import ir_measures
import numpy as np
import scipy.sparse as sp
from scipy import stats

RANK_MEASURES = ("nDCG@10", "P@5", "P@10", "R@10", "R@100", "MRR@10")
NOVELTY = "novelty_nDCG@10"  # computed in evaluate.py from the copy relation, not by ir_measures


def ir_measure_objects(level: int) -> dict[str, object]:
    """Our measure names -> ir_measures measure objects at relevance `level`."""
    return {
        "nDCG@10": ir_measures.nDCG @ 10,
        "P@5": ir_measures.P(rel=level) @ 5,
        "P@10": ir_measures.P(rel=level) @ 10,
        "R@10": ir_measures.R(rel=level) @ 10,
        "R@100": ir_measures.R(rel=level) @ 100,
        "MRR@10": ir_measures.RR(rel=level) @ 10,
    }


def per_query(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    level: int,
    queries: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """`{measure: {qid: value}}` for every query in `queries` (default: all qids of `qrels`), 0 when unscored."""
    measures = ir_measure_objects(level)
    by_object = {str(obj): name for name, obj in measures.items()}
    queries = list(qrels) if queries is None else list(queries)
    out: dict[str, dict[str, float]] = {name: dict.fromkeys(queries, 0.0) for name in measures}
    wanted = set(queries)
    # pytrec_eval wants non-empty dicts; queries without a list keep their 0.
    sub_qrels = {q: dict(qrels[q]) for q in queries if qrels.get(q)}
    sub_run = {q: dict(run[q]) for q in queries if run.get(q)}
    if sub_qrels and sub_run:
        for metric in ir_measures.iter_calc(list(measures.values()), sub_qrels, sub_run):
            if metric.query_id in wanted:
                out[by_object[str(metric.measure)]][metric.query_id] = float(metric.value)
    return out


def means(values: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {name: float(np.mean(list(v.values()))) if v else math.nan for name, v in values.items()}


def novelty_ndcg(grades: Sequence[int], redundant: Sequence[bool], ideal: Sequence[int], k: int = 10) -> float:
    """nDCG@k where a redundant item (a copy of the query or of an item above it) gains 0.

    `grades` are the listed items' grades in rank order; `ideal` the gains the best list could
    collect (one per copy group, see evaluate.py). Linear gains and log2 discounts as trec_eval's
    nDCG, so with no copies anywhere this equals `nDCG@10`.
    """
    dcg = sum(0 if copy else g / math.log2(r + 2) for r, (g, copy) in enumerate(zip(grades[:k], redundant[:k])))
    best = sorted((g for g in ideal if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(best))
    return dcg / idcg if idcg > 0 else 0.0


# -- beyond accuracy ------------------------------------------------------------------------------
def catalog_coverage(lists: Sequence[Sequence[int]], n_articles: int) -> float:
    """Share of the catalogue that appears in at least one list."""
    seen = {row for items in lists for row in items}
    return len(seen) / n_articles if n_articles else math.nan


def _pair_cosines(rows: Sequence[int], vectors: sp.csr_matrix) -> np.ndarray:
    """Cosines of all unordered pairs of `rows` (rows of `vectors` are L2-normalized)."""
    block = vectors[list(rows)]
    cos = (block @ block.T).toarray()
    upper = np.triu_indices(len(rows), k=1)
    return np.clip(cos[upper], 0.0, 1.0)


def intra_list_diversity(lists: Sequence[Sequence[int]], vectors: sp.csr_matrix) -> float:
    """Mean over lists (of >= 2 items) of the mean pairwise 1 - cosine."""
    values = [float(np.mean(1.0 - _pair_cosines(items, vectors))) for items in lists if len(items) >= 2]
    return float(np.mean(values)) if values else math.nan


def duplicate_rate(lists: Sequence[Sequence[int]], vectors: sp.csr_matrix, threshold: float = 0.9) -> float:
    """Share of item pairs, pooled over all lists, whose cosine is at least `threshold`."""
    pairs = dups = 0
    for items in lists:
        if len(items) >= 2:
            cos = _pair_cosines(items, vectors)
            pairs += cos.size
            dups += int((cos >= threshold).sum())
    return dups / pairs if pairs else math.nan


def set_recall(served: Sequence[Sequence[str]], exact: Sequence[Sequence[str]]) -> float:
    """Mean |served ∩ exact| / |exact| over queries with a non-empty exact list."""
    values = [len(set(s) & set(e)) / len(e) for s, e in zip(served, exact) if e]
    return float(np.mean(values)) if values else math.nan


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {"p50_ms": math.nan, "p99_ms": math.nan, "mean_ms": math.nan}
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


# -- significance -----------------------------------------------------------------------------
def paired_test(baseline: Sequence[float], other: Sequence[float]) -> dict[str, float | int]:
    """Paired t-test and Wilcoxon signed-rank test of `other` against `baseline` (same query order).

    p-values are two-sided; with no differences at all both are 1.0.
    """
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(other, dtype=float)
    diff = b - a
    result: dict[str, float | int] = {
        "queries": int(len(a)),
        "mean_diff": float(diff.mean()) if len(a) else math.nan,
        "wins": int((diff > 1e-12).sum()),
        "losses": int((diff < -1e-12).sum()),
        "ties": int((np.abs(diff) <= 1e-12).sum()),
    }
    if len(a) < 2 or not np.any(np.abs(diff) > 1e-12):
        result.update(ttest_p=1.0, wilcoxon_p=1.0)
        return result
    result["ttest_p"] = float(stats.ttest_rel(b, a).pvalue)
    try:
        result["wilcoxon_p"] = float(stats.wilcoxon(b, a).pvalue)
    except ValueError:
        result["wilcoxon_p"] = math.nan
    return result
