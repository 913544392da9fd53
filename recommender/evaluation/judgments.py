"""Relevance judgments for evaluation and the quality gate: which articles are queries and how
relevant each other article is to them, from labels (2 same story, 1 same category) or from
TREC qrels. Kept apart from evaluate.py so the gate, which runs inside a build, can judge a
version without importing the evaluation (which itself runs builds).
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recommender.evaluation import trec
from recommender.errors import RelatedError


@dataclass
class Labels:
    story: dict[str, str | None] = field(default_factory=dict)
    category: dict[str, str | None] = field(default_factory=dict)

    @property
    def has_categories(self) -> bool:
        return any(v is not None for v in self.category.values())


def _label_value(record: dict, key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int)):
        raise RelatedError(f"{where}: {key} must be a string or null")
    return str(value)


def read_labels(path: Path) -> Labels:
    """Labels JSONL: `{"id", "story", "category"}` per line; other keys are ignored."""
    labels = Labels()
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise RelatedError(f"labels file not found: {path}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RelatedError(f"{where}: not JSON: {err}") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str) or not record["id"]:
                raise RelatedError(f"{where}: each line needs a non-empty string id")
            labels.story[record["id"]] = _label_value(record, "story", where)
            labels.category[record["id"]] = _label_value(record, "category", where)
    return labels


def _groups(values: dict[str, str | None], ids: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for article_id in ids:
        value = values.get(article_id)
        if value is not None:
            groups[value].append(article_id)
    return groups


@dataclass
class Judgments:
    queries: list[str]
    qrels: trec.Qrels
    level: int  # grade a document needs to count as relevant for P, R and MRR
    source: str  # "labels" or "qrels"


def sample(ids: Sequence[str], limit: int, seed: int) -> list[str]:
    if len(ids) <= limit:
        return list(ids)
    rng = np.random.default_rng(seed)
    return [ids[i] for i in sorted(rng.choice(len(ids), size=limit, replace=False))]


def judgments_from_labels(labels: Labels, corpus_ids: Sequence[str], limit: int, seed: int) -> Judgments:
    stories = {k: v for k, v in _groups(labels.story, corpus_ids).items() if len(v) >= 2}
    categories = _groups(labels.category, corpus_ids)
    if stories:
        level = 2
        eligible = [i for i in corpus_ids if labels.story.get(i) in stories]
    else:
        level = 1
        eligible = [i for i in corpus_ids if len(categories.get(labels.category.get(i) or "", ())) >= 2]
    if not eligible:
        raise RelatedError("the labels give no query with a relevant article (no story or category with 2 members)")
    queries = sample(eligible, limit, seed)
    qrels: trec.Qrels = {}
    for q in queries:
        judged: dict[str, int] = {}
        category = labels.category.get(q)
        if category is not None:
            judged.update(dict.fromkeys(categories[category], 1))
        story = labels.story.get(q)
        if story is not None and story in stories:
            judged.update(dict.fromkeys(stories[story], 2))
        judged.pop(q, None)
        qrels[q] = judged
    return Judgments(queries, qrels, level, "labels")


def judgments_from_qrels(
    qrels: trec.Qrels, corpus_ids: Sequence[str], limit: int, seed: int, level: int | None
) -> Judgments:
    known = set(corpus_ids)
    kept = {
        q: {d: g for d, g in docs.items() if d in known and d != q}
        for q, docs in qrels.items()
        if q in known
    }
    eligible = [q for q in corpus_ids if any(g > 0 for g in kept.get(q, {}).values())]
    if not eligible:
        raise RelatedError("the qrels judge no corpus article as relevant to another corpus article")
    top = max(g for q in eligible for g in kept[q].values())
    queries = sample(eligible, limit, seed)
    return Judgments(queries, {q: kept[q] for q in queries}, level or (2 if top >= 2 else 1), "qrels")
