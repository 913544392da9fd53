"""A second round of pseudo-relevance feedback, a quality lever measured by benchmarks/levers.py and not
yet built into the pipeline (README "Quality levers" says why and what it would take).

The build's feedback expands each article with its best `feedback` neighbours of the first pass
(plain sparse cosine), which are noisier than the final list. A second round expands each article
again, from its original row, with its best `neighbours` of the final list, and re-scores only that
list (top k, not all FAISS candidates) by the cosine of the twice-expanded rows, blended with the
dense score and the time factor like every pass. Cost: one expansion per article and k pair scores,
against the final pass's `candidates` pair scores.
"""
from __future__ import annotations

import numpy as np

from index.neighbours import Corpus, NeighbourParams, blend, corpus_queries, expand, subset, top_k


def refine(
    corpus: Corpus, params: NeighbourParams, dense: np.ndarray, ids: np.ndarray, scores: np.ndarray, *,
    neighbours: int = 7, weight: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every corpus row's final list [N, k] re-scored by its twice-expanded row (`weight`: the
    feedback weight of the second round; None: the first round's)."""
    ids = ids.astype(np.int64)
    best_ids, best_scores = top_k(ids, scores, neighbours)
    again = expand(
        corpus.sparse, corpus.sparse, best_ids, best_scores,
        params.feedback_weight if weight is None else weight, params.signature_terms,
    )
    queries = corpus_queries(corpus, dense)
    out_ids, out_scores = np.empty(ids.shape, np.int32), np.empty(ids.shape, np.float32)
    for start in range(0, ids.shape[0], params.batch_size):
        part = slice(start, min(ids.shape[0], start + params.batch_size))
        rows = ids[part]
        dense_scores = np.einsum("ncd,nd->nc", dense[np.maximum(rows, 0)], dense[part]).astype(np.float32)
        rescored = blend(subset(queries, part), corpus, params, rows, dense_scores, again[part], again)
        out_ids[part], out_scores[part] = top_k(rows, rescored, params.k)
    return out_ids, out_scores
