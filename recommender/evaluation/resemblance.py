"""The copy relation used to judge lists: independent of the ranking model.

Two articles are copies when the word 5-shingles of their normalized bodies have a resemblance
(Jaccard) of at least 0.8 (Broder's measure for near-duplicate documents), or when they have the
same canonical URL. The ranking model's own notion of a copy (TF-IDF cosine, SimHash, same
title: recommender/policy/copies.py) is what is being judged, so it must not be the judge.

All pairs are found exactly, not estimated: SetSimilaritySearch's all-pairs join (Bayardo et al.,
prefix and position filters) compares only pairs that can still reach the threshold, which keeps a
20,000-article corpus to seconds.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from SetSimilaritySearch import all_pairs

from recommender.pipeline.articles import Article
from recommender.policy.catalog import normalize_url

SHINGLE_WORDS = 5
RESEMBLANCE = 0.8
_WORD = re.compile(r"\w+")


def shingles(body: str, width: int = SHINGLE_WORDS) -> set[str]:
    """Word `width`-shingles of the casefolded body; a shorter, non-empty body is one shingle."""
    words = _WORD.findall(body.casefold())
    if not words:
        return set()
    if len(words) <= width:
        return {" ".join(words)}
    return {" ".join(words[i : i + width]) for i in range(len(words) - width + 1)}


def resemblance(a: set[str], b: set[str]) -> float:
    """Jaccard of two shingle sets (0 when both are empty: no text is no evidence of a copy)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


@dataclass
class CopyRelation:
    """Which articles copy which, and their copy groups (connected components of the relation)."""

    pairs: set[tuple[str, str]]  # each unordered pair once, as (smaller id, larger id)
    group: dict[str, str]  # article id -> id of its group's representative (itself when it has no copy)

    @classmethod
    def of(cls, articles: Sequence[Article], threshold: float = RESEMBLANCE) -> CopyRelation:
        ids = [a.id for a in articles]
        pairs: set[tuple[str, str]] = set()
        sets = [shingles(a.body) for a in articles]
        if any(sets):
            for x, y, _ in all_pairs(sets, similarity_func_name="jaccard", similarity_threshold=threshold):
                pairs.add(_pair(ids[int(x)], ids[int(y)]))
        by_url: dict[str, list[str]] = {}
        for article in articles:
            url = normalize_url(article.url)
            if url is not None:
                by_url.setdefault(url, []).append(article.id)
        for members in by_url.values():
            pairs.update(_pair(a, b) for i, a in enumerate(members) for b in members[i + 1 :])
        return cls(pairs, _components(ids, pairs))

    @property
    def articles_with_a_copy(self) -> int:
        return len({article for pair in self.pairs for article in pair})

    def is_copy(self, a: str, b: str) -> bool:
        return a != b and _pair(a, b) in self.pairs

    def copies_earlier(self, query: str, listed: Sequence[str]) -> list[bool]:
        """For each listed item: does it copy the query or an item listed above it?"""
        flags = []
        for position, item in enumerate(listed):
            flags.append(self.is_copy(query, item) or any(self.is_copy(item, above) for above in listed[:position]))
        return flags


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _components(ids: Iterable[str], pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    parent = {i: i for i in ids}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {i: root(i) for i in parent}
