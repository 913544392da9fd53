"""Small deterministic news corpora for the build/update tests: stories with their own words."""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

STORY_WORDS = {
    "flood": "harbour flood storm rain pumps firefighters riverbank sandbags evacuation levee",
    "budget": "parliament budget minister coalition taxes deficit vote opposition spending treasury",
    "cup": "football cup final striker goalkeeper penalty stadium coach trophy supporters",
    "chips": "semiconductor factory chips investment subsidies wafer engineers plant supply jobs",
    "quake": "earthquake magnitude tremor aftershock rubble rescuers epicentre seismologists collapse shelters",
    "comet": "comet telescope astronomers orbit nucleus tail observatory sighting spacecraft dust",
}
FILLER = "the city said on monday officials reported that people were after week while also".split()
# Everyday words every story uses (a few per article, so members of a story are related, not copies).
_SYLLABLES = "ka lo mi ra ten su vor an el dri po nex ul sa ber gu ti mor en qua".split()
POOL = sorted({a + b + c for a in _SYLLABLES for b in _SYLLABLES[::3] for c in ("n", "s", "t")})[:400]
START = datetime(2024, 5, 1, tzinfo=timezone.utc)
# Small lists and few SVD dims keep builds fast; candidates >= corpus size makes FAISS exact over all rows.
# No relevance floor: the tests count on full lists over this tiny corpus (tests/test_floor.py tests the floor).
CONFIG = {"reduce": {"dims": 12}, "neighbours": {"k": 8, "candidates": 64}, "build": {"keep": 10}, "policy": {"min_score": 0.0}}


def article(story: str, i: int, *, seed: int = 0, words: str | None = None, article_id: str | None = None) -> dict:
    rng = random.Random(f"{story}-{i}-{seed}")
    vocab = (words or STORY_WORDS[story]).split()
    body = [
        rng.choice(vocab) if draw < 0.3 else rng.choice(FILLER) if draw < 0.5 else rng.choice(POOL)
        for draw in (rng.random() for _ in range(80))
    ]
    title = " ".join(rng.sample(vocab, 4)).capitalize()
    return {
        "id": article_id or f"{story}-{i}",
        "title": f"{title} ({story} {i})",
        "body": "<p>" + " ".join(body) + "</p>",
        "published": (START + timedelta(hours=6 * i)).isoformat().replace("+00:00", "Z"),
        "lang": "en",
        "category": story,
        "url": f"https://news.example/{story}/{i}",
    }


def corpus(size: int = 6, stories: tuple[str, ...] = tuple(STORY_WORDS), seed: int = 0) -> list[dict]:
    return [article(s, i, seed=seed) for s in stories for i in range(size)]


def scrambled(records: list[dict], seed: int = 1) -> list[dict]:
    """Same ids and metadata, texts drawn from one shared pool: stories no longer hold together."""
    rng = random.Random(seed)
    pool = " ".join(STORY_WORDS.values()).split() + FILLER + POOL
    out = []
    for r in records:
        out.append(r | {"title": " ".join(rng.sample(pool, 4)), "body": " ".join(rng.choice(pool) for _ in range(60))})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def labels(records: list[dict]) -> list[dict]:
    return [{"id": r["id"], "story": r["category"], "category": r["category"]} for r in records]


def write_config(path: Path, extra: dict | None = None) -> Path:
    """CONFIG (+ extra sections) as TOML."""
    sections = {k: dict(v) for k, v in CONFIG.items()}
    for key, values in (extra or {}).items():
        sections.setdefault(key, {}).update(values)
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
