"""RelatedIndex: stored lists, drafts, the wider-search fallback and fill_reason, item shape."""
from __future__ import annotations

import pytest

from index.errors import NoIndexError
from recommender.errors import ArticleNotFoundError
from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.corpora import build_records, newsroom, story_article

ITEM_KEYS = {"id", "title", "url", "published", "category", "lang", "score"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    data_dir, report = build_records(tmp_path_factory.mktemp("related"), newsroom())
    return data_dir, report


@pytest.fixture(scope="module")
def news(built) -> RelatedIndex:
    return RelatedIndex.open(built[0])


def ids(result) -> list[str]:
    return [item["id"] for item in result.items]


def test_stored_list_is_the_story_first(news):
    result = news.for_article("quake-2", RelatedQuery(limit=4))
    assert result.article_id == "quake-2" and result.index_version == news.name
    assert sorted(ids(result)) == ["quake-0", "quake-1", "quake-3", "quake-4"]
    assert result.fill_reason is None


def test_items_have_the_documented_fields_and_sorted_scores(news):
    result = news.for_article("flood-1", RelatedQuery(limit=8))
    assert len(result.items) == 8
    for item in result.items:
        assert set(item) == ITEM_KEYS
        assert item["id"] != "flood-1"
    scores = [item["score"] for item in result.items]
    assert scores == sorted(scores, reverse=True)
    first = result.items[0]
    source = next(r for r in newsroom() if r["id"] == first["id"])
    assert (first["title"], first["url"], first["published"]) == (source["title"], source["url"], source["published"])


def test_unknown_article_is_a_readable_error(news):
    with pytest.raises(ArticleNotFoundError, match="nope"):
        news.for_article("nope", RelatedQuery())


def test_limit_beyond_the_stored_list_is_filled_by_a_wider_search(news):
    result = news.for_article("flood-0", RelatedQuery(limit=20, lang="any"))  # k=10 stored
    assert len(result.items) == 20 == len(set(ids(result)))
    assert "flood-0" not in ids(result)
    assert result.fill_reason == "wider_search"
    assert ids(result)[:4] == ids(news.for_article("flood-0", RelatedQuery(limit=4, lang="any")))


def test_filter_leaving_too_few_items_is_exhausted(news):
    result = news.for_article("flood-0", RelatedQuery(limit=5, lang="fr"))
    assert result.items == [] and result.fill_reason == "exhausted"
    result = news.for_article("hochwasser-0", RelatedQuery(limit=50))
    assert len(result.items) == 9 and result.fill_reason == "exhausted"  # every other German article


def test_same_answer_twice(news):
    query = RelatedQuery(limit=6, explain=True)
    assert news.for_article("chips-3", query).items == news.for_article("chips-3", query).items


def test_draft_language_is_detected_or_given(news):
    draft = story_article("haushalt", 50, seed=3)
    detected = news.for_draft(draft["title"], draft["body"], None, RelatedQuery(limit=3))
    assert detected.article_id is None and {item["lang"] for item in detected.items} == {"de"}
    assert all(item["id"].startswith("haushalt") for item in detected.items)
    given = news.for_draft(draft["title"], draft["body"], "en", RelatedQuery(limit=3))
    assert {item["lang"] for item in given.items} == {"en"}


def test_draft_sharing_no_word_with_the_corpus_gets_no_filler(news):
    # Nothing in common is not related: an empty box beats three arbitrary articles.
    result = news.for_draft("Zzyzx", "qwertyuiop asdfghjkl", "en", RelatedQuery(limit=3))
    assert result.items == []


def test_draft_identical_to_a_stored_article_does_not_list_it(news):
    source = next(r for r in newsroom() if r["id"] == "cup-2")
    result = news.for_draft(source["title"], source["body"].removeprefix("<p>").removesuffix("</p>"), "en",
                            RelatedQuery(limit=4))
    assert "cup-2" not in ids(result)
    assert all(i.startswith("cup-") for i in ids(result))


def test_info_reports_the_version(news, built):
    info = news.info()
    assert info["version"] == built[1].version.name
    assert info["articles"] == len(newsroom())
    assert info["dims"] == 8 and info["built_at"].endswith("Z")
    assert info["counts"]["articles"] == len(newsroom())


def test_open_without_a_build_is_a_no_index_error(tmp_path):
    with pytest.raises(NoIndexError, match="related build"):
        RelatedIndex.open(tmp_path)
