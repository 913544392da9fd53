"""Small corpora written in code for the pipeline and ranking-policy tests, plus build helpers.

Every corpus is deterministic (seeded per article) and small enough to build in about a second.
Stories are held together by their own words and a rare name, as real news stories are; the
hand-written "policy" corpus has one isolated scenario per ranking behaviour (disjoint words,
so the scenarios do not see each other).
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from recommender.pipeline.build import BuildReport, build
from recommender.config import PipelineConfig
from recommender.related import RelatedIndex

DEMO_DIR = Path(__file__).resolve().parents[1] / "recommender" / "demo"
DEMO_ARTICLES = DEMO_DIR / "articles.jsonl"
DEMO_LABELS = DEMO_DIR / "labels.jsonl"

START = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)
# Few SVD dims, short lists, candidates >= corpus size (FAISS exact over all rows), no process pool; no
# relevance floor, so lists of these tiny corpora fill up to `limit` (tests/test_floor.py tests the floor).
SMALL = {"reduce": {"dims": 8}, "neighbours": {"k": 10, "candidates": 64}, "build": {"workers": 1, "keep": 10},
         "policy": {"min_score": 0.0}}

# story -> (language, category, rare name, story words)
STORIES = {
    "flood": ("en", "local", "Zwieselbrunn",
              "flood river levee sandbags evacuation rain pumps firefighters riverbank water rescue"),
    "budget": ("en", "politics", "Marrowgate",
               "budget parliament minister coalition taxes deficit vote opposition spending treasury"),
    "cup": ("en", "sports", "Pellinore",
            "football final striker goalkeeper penalty stadium coach trophy supporters league"),
    "chips": ("en", "technology", "Quorvex",
              "semiconductor factory chips investment subsidies wafer engineers plant supply jobs"),
    "quake": ("en", "world", "Tarvisco",
              "earthquake magnitude tremor aftershock rubble rescuers epicentre seismologists collapse shelters"),
    "comet": ("en", "science", "Halvorsen",
              "comet telescope astronomers orbit nucleus tail observatory sighting spacecraft dust"),
    # The German flood story reports the same flood in Zwieselbrunn as the English one.
    "hochwasser": ("de", "local", "Zwieselbrunn",
                   "hochwasser fluss deich sandsäcke evakuierung regen pumpen feuerwehr ufer pegel"),
    "haushalt": ("de", "politics", "Kerschbaumer",
                 "haushalt bundestag ministerin koalition steuern schulden abstimmung opposition ausgaben kanzler"),
}
FILLER = {
    "en": "the city said on monday officials reported that people were after week while also local".split(),
    "de": "die stadt sagte am montag beamte berichteten dass menschen nach woche während auch heute".split(),
}
# Everyday words shared by every story of a language, so stories are related but not copies.
COMMON = {
    "en": "news report today region people plan council meeting question answer public statement".split(),
    "de": "bericht heute region leute plan rat sitzung frage antwort öffentlich erklärung zeitung".split(),
}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def day(n: float) -> str:
    """ISO timestamp `n` days after START."""
    return iso(START + timedelta(days=n))


def record(
    article_id: str, title: str, body: str, *, published: str | None = None, lang: str | None = "en",
    category: str | None = None, url: str | None = None,
) -> dict:
    return {"id": article_id, "title": title, "body": body, "published": published, "lang": lang,
            "category": category, "url": url}


def story_article(story: str, i: int, *, seed: int = 0, article_id: str | None = None) -> dict:
    """One article of `story`: a title from the story's words and a body mixing story, common and filler words."""
    lang, category, name, words = STORIES[story]
    vocab = words.split()
    rng = random.Random(f"{story}-{i}-{seed}")
    body = [
        name if draw < 0.05 else rng.choice(vocab) if draw < 0.45 else rng.choice(COMMON[lang]) if draw < 0.7
        else rng.choice(FILLER[lang])
        for draw in (rng.random() for _ in range(70))
    ]
    title = " ".join([name] + rng.sample(vocab, 4))
    return record(
        article_id or f"{story}-{i}", title.capitalize(), "<p>" + " ".join(body) + "</p>",
        published=day(list(STORIES).index(story) * 10 + i * 0.5), lang=lang, category=category,
        url=f"https://news.example/{lang}/{story}/{i}",
    )


def stories(size: int = 5, names: tuple[str, ...] = tuple(STORIES)) -> list[dict]:
    return [story_article(s, i) for s in names for i in range(size)]


def newsroom() -> list[dict]:
    """Eight stories (6 English, 2 German; 5 articles each) plus two syndicated copies of comet-0."""
    records = stories()
    original = next(r for r in records if r["id"] == "comet-0")
    copies = [dict(original, id="comet-0-copy-a"), dict(original, id="comet-0-copy-b", title=original["title"] + " ")]
    # A rare name shared by exactly two budget articles: it should explain why they are related.
    for r in records:
        if r["id"] == "budget-0":
            r["title"] += " Vandersloot"
            r["body"] += " Vandersloot said the budget holds."
        if r["id"] == "budget-1":
            r["body"] += " Vandersloot resigned. Vandersloot said the budget failed."
    return records + copies


def policy_scenarios() -> list[dict]:
    """Hand-written scenarios, each with its own words. Build with POLICY_BUILD: time_weight=0 so
    dates only matter to the policy, k=6 so a filter can empty a stored list, min_df=1 so the
    one-off words that tell the articles apart stay in the vocabulary.

    freshness: fresh-query; fresh-new and fresh-old are equally similar to it by symmetry (x<->y, n<->o).
    mmr:       mmr-query leans to aspect A (mmr-a1..a4, alike each other) and also covers aspect B (mmr-b1..b2).
    age:       age-query (day 100); age-old-* (day 0-5) are the most similar, age-new-* (day 95-99) less so.
    """
    recs = [
        record("fresh-query", "Kestrel bridge closure", "girders inspection xylotrope yarrowind", published=day(30)),
        record("fresh-new", "Kestrel bridge xylotrope", "closure girders inspection nembutrix", published=day(29)),
        record("fresh-old", "Kestrel bridge yarrowind", "closure girders inspection ostravelle", published=day(1)),
    ]
    a_core = "lighthouse keeper lantern foghorn"
    recs.append(record("mmr-query", f"Lighthouse keeper lantern foghorn {a_core}",
                       f"{a_core} glassworks kiln furnace", published=day(40)))
    for i, extra in enumerate(["cliff", "gannet", "shipwreck", "beacon"], 1):
        recs.append(record(f"mmr-a{i}", f"Lighthouse keeper {extra}", f"{a_core} {a_core} {extra}", published=day(40)))
    for i, extra in enumerate(["bottles", "vases"], 1):
        recs.append(record(f"mmr-b{i}", f"Glassworks kiln {extra}", f"glassworks kiln furnace {extra} artisans",
                           published=day(40)))
    age_core = "orchard cider pressing apples harvest"
    recs.append(record("age-query", "Orchard cider pressing", f"{age_core} growers", published=day(100)))
    for i in range(6):
        recs.append(record(f"age-old-{i}", f"Orchard cider pressing apples {i}", f"{age_core} growers old{i}",
                           published=day(i)))
    for i in range(3):
        recs.append(record(f"age-new-{i}", "Cider harvest notes", f"orchard apples rainfall new{i}",
                           published=day(95 + i)))
    return recs


# Sparse-only scores: the scenarios are built on exact term symmetries, which LSA on a tiny corpus blurs.
POLICY_BUILD = {"neighbours": {"time_weight": 0.0, "k": 6, "sparse_weight": 1.0}, "text": {"min_df": 1}}


def merge(base: dict, extra: dict) -> dict:
    """Section-wise merge of two config dicts."""
    out = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        out[key] = out.get(key, {}) | value if isinstance(value, dict) else value
    return out


def small_config(extra: dict | None = None) -> PipelineConfig:
    return PipelineConfig.from_dict(merge(SMALL, extra or {}))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def build_records(
    directory: Path, records: list[dict], extra: dict | None = None, *, force: bool = False
) -> tuple[Path, BuildReport]:
    """Write `records` to directory/corpus.jsonl and build into directory/data; (data_dir, report)."""
    source = write_jsonl(directory / "corpus.jsonl", records)
    data_dir = directory / "data"
    return data_dir, build(source, data_dir, small_config(extra), force=force)


def open_index(directory: Path, records: list[dict], extra: dict | None = None) -> RelatedIndex:
    data_dir, _ = build_records(directory, records, extra)
    return RelatedIndex.open(data_dir)


def load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
