"""Synthetic news-like corpora for scale benchmarks (no real text).

Words are drawn from a Zipf distribution over a made-up vocabulary; articles come in
stories of a few members that share a handful of rare "name" words, the way real stories
share the names of people and places. Lengths vary around ~400 words.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

SYLLABLES = [
    "ka", "lo", "mi", "ra", "ten", "su", "vor", "an", "el", "dri", "po", "nex", "ul", "sa", "ber",
    "gu", "ti", "mor", "en", "qua", "zi", "fal", "ro", "den", "it", "ve", "sto", "ham", "ly", "cor",
]


def make_vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct pronounceable pseudo-words."""
    words: set[str] = set()
    while len(words) < size:
        parts = rng.integers(0, len(SYLLABLES), size=rng.integers(2, 5))
        words.add("".join(SYLLABLES[p] for p in parts))
    return np.array(sorted(words))


def synthetic_articles(n: int, seed: int = 0, *, vocab_size: int = 50_000, story_size: int = 5):
    """Yield (record, story_id) for n articles."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(vocab_size, rng)
    ranks = np.arange(1, vocab_size + 1)
    probs = 1.0 / ranks**1.07
    probs /= probs.sum()
    cdf = np.cumsum(probs)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    n_stories = max(1, n // story_size)
    story_names = rng.integers(vocab_size // 2, vocab_size, size=(n_stories, 6))
    story_days = rng.integers(0, 700, size=n_stories)
    categories = ["politics", "world", "local", "sports", "economy", "culture", "science", "technology"]
    for i in range(n):
        story = i % n_stories
        length = int(np.clip(rng.normal(400, 120), 60, 1200))
        words = vocab[np.searchsorted(cdf, rng.random(length))]
        names = vocab[story_names[story]]
        slots = rng.integers(0, length, size=12)
        words[slots] = names[rng.integers(0, len(names), size=12)]
        title = " ".join(np.concatenate([names[:2], words[:6]]))
        published = start + timedelta(days=int(story_days[story] + rng.integers(0, 5)), minutes=int(rng.integers(0, 1440)))
        record = {
            "id": f"syn-{i}",
            "title": title,
            "body": " ".join(words),
            "published": published.isoformat().replace("+00:00", "Z"),
            "lang": "en",
            "category": categories[story % len(categories)],
            "url": f"https://synthetic.example/{i}",
        }
        yield record, f"story-{story}"


def synthetic_corpus(n: int, seed: int = 0, path: Path | None = None) -> Path:
    """Write (or reuse) corpus + labels JSONL for n articles; returns the corpus path."""
    path = Path(path or f"benchmarks/results/synthetic-{n}-{seed}.jsonl")
    labels = path.with_name(path.stem + "-labels.jsonl")
    if path.exists() and labels.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as corpus, open(labels, "w", encoding="utf-8") as label_file:
        for record, story in synthetic_articles(n, seed):
            corpus.write(json.dumps(record) + "\n")
            label_file.write(json.dumps({"id": record["id"], "story": story, "category": record["category"]}) + "\n")
    return path
