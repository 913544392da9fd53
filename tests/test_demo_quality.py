"""Issue 3: the embedded demo corpus recommends within the story, and the North Korea scenario holds."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from recommender.pipeline.build import build
from recommender.config import PipelineConfig
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.corpora import DEMO_ARTICLES, DEMO_LABELS, load_jsonl

NK_QUERY = "nk-ukraine-en-1"
NK_STORY = "nk-troops-ukraine"
DISTRACTORS = {"care-home-death", "iran-drone-tanker", "spring-beer-festival-prices"}


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> RelatedIndex:
    """The demo corpus built with the default configuration, as `make run` serves it."""
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    build(DEMO_ARTICLES, data_dir, PipelineConfig())
    return RelatedIndex.open(data_dir)


@pytest.fixture(scope="session")
def story_of() -> dict[str, str | None]:
    return {label["id"]: label["story"] for label in load_jsonl(DEMO_LABELS)}


def test_demo_corpus_is_what_its_readme_says(demo, story_of):
    articles = load_jsonl(DEMO_ARTICLES)
    assert len(articles) == 191 and [a["id"] for a in articles] == list(story_of)
    assert len({s for s in story_of.values() if s}) == 44
    assert Counter(a["lang"] for a in articles) == {"en": 121, "de": 58, "fr": 4, "es": 4, "it": 4}
    assert demo.size == 191


def test_every_story_gets_two_of_its_own_in_the_top_three(demo, story_of):
    """Per story: its articles' top 3 hold on average at least 2 of the story; per article: 95% do.

    A few demo articles are hard on purpose (a drone strike on a grain port beside an Iran
    drone story; "Haushalte" = households stems like "Haushalt" = budget), so a single
    article may miss while its story as a whole holds.
    """
    members: dict[str, list[str]] = defaultdict(list)
    for article_id, story in story_of.items():
        if story:
            members[story].append(article_id)
    stories = {story: ids for story, ids in members.items() if len(ids) >= 3}
    story_means: dict[str, float] = {}
    misses: list[str] = []
    for story, ids in sorted(stories.items()):
        own_counts = []
        for article_id in ids:
            top = [item["id"] for item in demo.for_article(article_id, RelatedQuery()).items[:3]]
            own_counts.append(sum(story_of[i] == story for i in top))
            if own_counts[-1] < 2:
                misses.append(f"{article_id} -> {[story_of[i] for i in top]}")
        story_means[story] = sum(own_counts) / len(own_counts)
    queries = sum(len(ids) for ids in stories.values())
    weak = {story: mean for story, mean in story_means.items() if mean < 2}
    share = 1 - len(misses) / queries
    print(f"\ndemo 2-of-top-3: {len(stories) - len(weak)}/{len(stories)} stories pass on average; "
          f"{queries - len(misses)}/{queries} article queries pass ({share:.1%})")
    for line in misses:
        print(f"  miss {line}")
    assert not weak, f"stories below 2 of 3 on average: {weak}"
    assert share >= 0.95, misses


def test_north_korea_story_comes_first_without_distractors(demo, story_of):
    result = demo.for_article(NK_QUERY, RelatedQuery(limit=10, explain=True))
    stories = [story_of[item["id"]] for item in result.items]
    assert story_of[NK_QUERY] == NK_STORY
    own = stories.count(NK_STORY)
    assert own >= 3 and stories[:own] == [NK_STORY] * own  # same-story articles first
    assert not DISTRACTORS & set(stories[:5])
    assert all(item["why"] for item in result.items)
    assert {"north", "korean"} <= set(result.items[0]["why"])


def test_north_korea_distractors_stay_out_in_any_language(demo, story_of):
    result = demo.for_article(NK_QUERY, RelatedQuery(limit=5, lang="any"))
    assert not DISTRACTORS & {story_of[item["id"]] for item in result.items}


def test_german_demo_articles_get_german_neighbours(demo):
    german = [a["id"] for a in map(demo.item_metadata, range(len(demo.catalog.ids))) if a["lang"] == "de"]
    assert len(german) == 58
    for article_id in german:
        langs = {item["lang"] for item in demo.for_article(article_id, RelatedQuery(limit=5)).items}
        assert langs == {"de"}, article_id
