"""Synthetic news-like corpora for scale benchmarks (no real text).

Words are drawn from a Zipf distribution over a made-up vocabulary. Two shapes:

- "names" (the original): stories of five members that share six rare "name" words, the way
  real stories share the names of people and places; lengths normal around 400 words. Friendly:
  rare shared names make stories easy to find and copies easy to rule out.
- "archive": the shape of a large, varied archive (issue 11): a 200k-type Zipf vocabulary,
  log-normal lengths around 380 words with a tail up to 3,000, stories of 1 to 8 articles
  (many single-article ones) sharing 12 mid-frequency topic words. LSA captures little of
  such text, so screens that lean on it stop working.
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


SHAPES = ("names", "archive")
CATEGORIES = ["politics", "world", "local", "sports", "economy", "culture", "science", "technology"]
START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def zipf_cdf(size: int, exponent: float = 1.07) -> np.ndarray:
    probs = 1.0 / np.arange(1, size + 1) ** exponent
    return np.cumsum(probs / probs.sum())


def record(i: int, title: str, body: str, published: datetime, category: str) -> dict:
    return {
        "id": f"syn-{i}", "title": title, "body": body,
        "published": published.isoformat().replace("+00:00", "Z"), "lang": "en", "category": category,
        "url": f"https://synthetic.example/{i}",
    }


def archive_articles(n: int, seed: int = 0, *, vocab_size: int = 200_000):
    """Yield (record, story_id) for n articles of the "archive" shape."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(vocab_size, rng)
    cdf = zipf_cdf(vocab_size)
    i = 0
    story = 0
    while i < n:
        size = 1 if rng.random() < 0.35 else int(rng.integers(2, 9))  # many single-article stories
        topic = vocab[rng.integers(2_000, 20_000, size=12)]  # mid-frequency words, not rare names
        day = int(rng.integers(0, 3_650))
        category = CATEGORIES[int(rng.integers(0, len(CATEGORIES)))]
        for _ in range(min(size, n - i)):
            length = int(np.clip(rng.lognormal(np.log(330), 0.55), 30, 3_000))
            words = vocab[np.searchsorted(cdf, rng.random(length))]
            slots = rng.integers(0, length, size=max(4, length // 25))
            words[slots] = topic[rng.integers(0, len(topic), size=len(slots))]
            title = " ".join(np.concatenate([topic[rng.integers(0, 12, size=2)], words[:5]]))
            published = START + timedelta(days=day + int(rng.integers(0, 6)), minutes=int(rng.integers(0, 1440)))
            yield record(i, title, " ".join(words), published, category), f"story-{story}"
            i += 1
        story += 1


def synthetic_articles(n: int, seed: int = 0, *, vocab_size: int = 50_000, story_size: int = 5):
    """Yield (record, story_id) for n articles of the "names" shape."""
    rng = np.random.default_rng(seed)
    vocab = make_vocabulary(vocab_size, rng)
    cdf = zipf_cdf(vocab_size)
    n_stories = max(1, n // story_size)
    story_names = rng.integers(vocab_size // 2, vocab_size, size=(n_stories, 6))
    story_days = rng.integers(0, 700, size=n_stories)
    for i in range(n):
        story = i % n_stories
        length = int(np.clip(rng.normal(400, 120), 60, 1200))
        words = vocab[np.searchsorted(cdf, rng.random(length))]
        names = vocab[story_names[story]]
        slots = rng.integers(0, length, size=12)
        words[slots] = names[rng.integers(0, len(names), size=12)]
        title = " ".join(np.concatenate([names[:2], words[:6]]))
        published = START + timedelta(days=int(story_days[story] + rng.integers(0, 5)), minutes=int(rng.integers(0, 1440)))
        yield record(i, title, " ".join(words), published, CATEGORIES[story % len(CATEGORIES)]), f"story-{story}"


def synthetic_corpus(n: int, seed: int = 0, path: Path | None = None, shape: str = "names") -> Path:
    """Write (or reuse) corpus + labels JSONL for n articles; returns the corpus path."""
    suffix = "" if shape == "names" else f"-{shape}"
    path = Path(path or Path(__file__).resolve().parent / "results" / f"synthetic{suffix}-{n}-{seed}.jsonl")
    articles = synthetic_articles if shape == "names" else archive_articles
    labels = path.with_name(path.stem + "-labels.jsonl")
    if path.exists() and labels.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as corpus, open(labels, "w", encoding="utf-8") as label_file:
        for article, story in articles(n, seed):
            corpus.write(json.dumps(article) + "\n")
            label_file.write(json.dumps({"id": article["id"], "story": story, "category": article["category"]}) + "\n")
    return path
