"""Issue 7: the request-time ranking policy, one small corpus scenario per behaviour.

Policies here have no relevance floor (min_score=0.0): the scenarios fill lists with near-zero strangers
on purpose; tests/test_floor.py tests the floor."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.simhash import signatures
from index.sparse_kernels import SortedRows
from recommender.policy import ranking
from recommender.config import PolicyConfig
from recommender.pipeline.articles import format_timestamp
from recommender.policy.catalog import Catalog, epoch, epochs
from recommender.policy.ranking import Policy, QueryContext, RelatedQuery, shared_terms
from recommender.related import RelatedIndex
from tests.corpora import POLICY_BUILD, STORIES, day, newsroom, open_index, policy_scenarios, story_article


@pytest.fixture(scope="module")
def news(tmp_path_factory) -> RelatedIndex:
    return open_index(tmp_path_factory.mktemp("newsroom"), newsroom())


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory) -> RelatedIndex:
    return open_index(tmp_path_factory.mktemp("policy"), newsroom() + policy_scenarios(), POLICY_BUILD)


def ids(result) -> list[str]:
    return [item["id"] for item in result.items]


def story(article_id: str) -> str:
    return article_id.split("-")[0]


def mean_pairwise_similarity(index: RelatedIndex, item_ids: list[str]) -> float:
    rows = [index.row_of[i] for i in item_ids]
    vectors = index.catalog.sparse[rows]
    sims = (vectors @ vectors.T).toarray()
    return float(np.mean([sims[a, b] for a, b in itertools.combinations(range(len(rows)), 2)]))


# -- language ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("article_id", [f"{s}-{i}" for s in ("hochwasser", "haushalt") for i in range(5)])
def test_german_query_gets_german_neighbours_by_default(news, article_id):
    result = news.for_article(article_id, RelatedQuery(limit=5))
    assert len(result.items) == 5
    assert {item["lang"] for item in result.items} == {"de"}


def test_english_report_of_the_same_story_can_appear_with_any_language(news):
    default = news.for_article("hochwasser-0", RelatedQuery(limit=10))
    anything = news.for_article("hochwasser-0", RelatedQuery(limit=10, lang="any"))
    assert not any(item["lang"] == "en" for item in default.items)
    english = [item["id"] for item in anything.items if item["lang"] == "en"]
    assert english and all(story(i) == "flood" for i in english)  # the English report of the same flood


def test_explicit_language_filter(news):
    result = news.for_article("hochwasser-0", RelatedQuery(limit=5, lang="en"))
    assert result.items and {item["lang"] for item in result.items} == {"en"}
    assert story(result.items[0]["id"]) == "flood"


def test_same_language_off_mixes_languages(news):
    policy = Policy(PolicyConfig(min_score=0.0, same_language=False))
    result = news.for_article("hochwasser-0", RelatedQuery(limit=10), policy=policy)
    assert ids(result) == ids(news.for_article("hochwasser-0", RelatedQuery(limit=10, lang="any")))


# -- duplicates ------------------------------------------------------------------------------------
COPIES = {"comet-0", "comet-0-copy-a", "comet-0-copy-b"}


@pytest.mark.parametrize("article_id", sorted(COPIES))
def test_syndicated_copies_never_listed_for_their_original(news, article_id):
    listed = set(ids(news.for_article(article_id, RelatedQuery(limit=10))))
    assert not COPIES & listed
    assert {f"comet-{i}" for i in range(1, 5)} <= listed  # the rest of the story is still there


@pytest.mark.parametrize("article_id", [f"comet-{i}" for i in range(1, 5)])
def test_syndicated_copies_appear_at_most_once(news, article_id):
    listed = ids(news.for_article(article_id, RelatedQuery(limit=10, lang="any")))
    assert len(COPIES & set(listed)) == 1
    assert len(listed) == len(set(listed)) == 10


def test_copies_collapse_to_the_freshest_copy():
    vectors = np.eye(2, dtype=np.float32)[[0, 0, 0]]  # three copies of one text
    rows = [  # b is the freshest
        {"id": i, "title": t, "published": f"1970-01-01T00:00:0{second}Z", "lang": "en"}
        for i, t, second in zip("abc", "xyz", (1, 3, 2))
    ]
    catalog = Catalog.from_rows(rows, sparse=sp.csr_matrix(vectors), dense=vectors, alive=np.ones(3, bool))
    query = np.array([[0.6, 0.8]], dtype=np.float32)
    ctx = QueryContext(SortedRows(sp.csr_matrix(query)), 0, query[0], signatures(sp.csr_matrix(query))[0], lang="en", published=np.nan)
    items = Policy(PolicyConfig(min_score=0.0)).collapse_duplicates(catalog, ctx, np.array([0, 1, 2]), np.array([0.9, 0.8, 0.7]), 5)
    assert [(i.row, i.score) for i in items] == [(1, pytest.approx(0.9))]  # freshest copy, at the best rank


# -- freshness -----------------------------------------------------------------------------------------
def test_equally_similar_articles_tie_without_freshness(scenarios):
    scores = {item["id"]: item["score"] for item in scenarios.for_article("fresh-query", RelatedQuery(limit=2)).items}
    assert scores.keys() == {"fresh-new", "fresh-old"}
    assert scores["fresh-new"] == pytest.approx(scores["fresh-old"], abs=1e-3)


def test_freshness_decay_ranks_the_newer_of_two_equally_similar_articles_first(scenarios):
    policy = Policy(PolicyConfig(min_score=0.0, freshness_half_life_days=7.0))
    result = scenarios.for_article("fresh-query", RelatedQuery(limit=2, explain=True), policy=policy)
    assert ids(result) == ["fresh-new", "fresh-old"]
    new, old = result.items
    assert new["score"] > old["score"]
    assert new["score_parts"]["freshness"] > old["score_parts"]["freshness"]


def test_freshness_for_a_draft_counts_from_now(scenarios, monkeypatch):
    # "now" a day after the query's date, as on a live site (real now is many half-lives later: every decay ~0).
    now = epoch(day(31))
    monkeypatch.setattr(ranking, "time", SimpleNamespace(time=lambda: now))
    policy = Policy(PolicyConfig(min_score=0.0, freshness_half_life_days=7.0))
    result = scenarios.for_draft("Kestrel bridge closure", "girders inspection xylotrope yarrowind", "en",
                                 RelatedQuery(limit=2), policy=policy)
    assert ids(result) == ["fresh-new", "fresh-old"]


# -- MMR diversity --------------------------------------------------------------------------------------
def test_mmr_reduces_intra_list_similarity_and_keeps_the_top_item(scenarios):
    query = RelatedQuery(limit=4)
    plain = ids(scenarios.for_article("mmr-query", query))
    diverse = ids(scenarios.for_article("mmr-query", query, policy=Policy(PolicyConfig(min_score=0.0, mmr_lambda=0.5))))
    assert all(i.startswith("mmr-a") for i in plain)  # without MMR: four near-identical takes on aspect A
    assert diverse[0] == plain[0]
    assert any(i.startswith("mmr-b") for i in diverse)
    assert mean_pairwise_similarity(scenarios, diverse) < mean_pairwise_similarity(scenarios, plain) - 0.2


def test_mmr_lambda_one_is_plain_relevance_order(scenarios):
    query = RelatedQuery(limit=4)
    assert ids(scenarios.for_article("mmr-query", query, policy=Policy(PolicyConfig(min_score=0.0, mmr_lambda=1.0)))) == ids(
        scenarios.for_article("mmr-query", query)
    )


# -- category cap ------------------------------------------------------------------------------------------
def test_category_cap_limits_items_per_category_and_refills(news):
    plain = news.for_article("budget-0", RelatedQuery(limit=6))
    assert sum(item["category"] == "politics" for item in plain.items) > 2
    capped = news.for_article("budget-0", RelatedQuery(limit=6), policy=Policy(PolicyConfig(min_score=0.0, category_cap=2)))
    categories = [item["category"] for item in capped.items]
    assert len(categories) == 6
    assert max(categories.count(c) for c in set(categories)) <= 2
    assert capped.items[0]["id"] == plain.items[0]["id"]


# -- explanations ---------------------------------------------------------------------------------------------
def test_why_names_the_rare_shared_name(news):
    result = news.for_article("budget-0", RelatedQuery(limit=5, explain=True))
    by_id = {item["id"]: item for item in result.items}
    assert "vandersloot" in by_id["budget-1"]["why"]  # only budget-0 and budget-1 mention Vandersloot
    for item in result.items:
        assert 1 <= len(item["why"]) <= 5
        assert "vandersloot" not in item["why"] or item["id"] == "budget-1"
        assert "text" in item["score_parts"]


def test_why_terms_are_shared_by_query_and_item(news):
    # `why` may show a readable word instead of the stem: map it back to its vocabulary term.
    shown = getattr(news, "display_terms", news.terms)
    stem_of = dict(zip(shown, news.terms))
    texts = {r["id"]: r["title"] + " " + r["body"] for r in newsroom()}
    query_stems = set(news.vectorizer.words("en", texts["cup-0"]))
    result = news.for_article("cup-0", RelatedQuery(limit=3, explain=True))
    for item in result.items:
        item_stems = set(news.vectorizer.words("en", texts[item["id"]]))
        assert item["why"] and {stem_of[w] for w in item["why"]} <= query_stems & item_stems


def test_no_why_without_explain(news):
    assert all("why" not in item for item in news.for_article("budget-0", RelatedQuery(limit=3)).items)


def test_shared_terms_hides_the_words_of_a_chosen_bigram():
    terms = ["korean", "north", "north korean", "troop"]
    query = sp.csr_matrix(np.array([[0.3, 0.3, 0.8, 0.4]], dtype=np.float32))
    item = sp.csr_matrix(np.array([[0.3, 0.3, 0.8, 0.0]], dtype=np.float32))
    assert shared_terms(query, item, terms, 5) == ["north korean"]
    assert shared_terms(query, sp.csr_matrix((1, 4), dtype=np.float32), terms, 5) == []


# -- exclude, age filters, wider search ------------------------------------------------------------------------------------
def test_exclude_removes_exactly_those_ids_and_refills_to_limit(news):
    longer = ids(news.for_article("budget-0", RelatedQuery(limit=8)))
    excluded = frozenset(longer[:2])
    result = ids(news.for_article("budget-0", RelatedQuery(limit=5, exclude=excluded | {"no-such-id"})))
    assert len(result) == 5
    assert result == [i for i in longer if i not in excluded][:5]


def test_max_age_drops_older_items_and_refills_with_a_wider_search(scenarios):
    plain = scenarios.for_article("age-query", RelatedQuery(limit=3))
    assert all(i.startswith("age-old") for i in ids(plain)) and plain.fill_reason is None
    recent = scenarios.for_article("age-query", RelatedQuery(limit=3, max_age_days=30, relative_to="article"))
    assert sorted(ids(recent)) == ["age-new-0", "age-new-1", "age-new-2"]
    assert recent.fill_reason == "wider_search"  # the stored list (k=6) held only old articles
    anchor = epoch(next(r for r in policy_scenarios() if r["id"] == "age-query")["published"])
    assert all(epoch(item["published"]) >= anchor - 30 * 86_400 for item in recent.items)


def test_since_filter(scenarios):
    since = datetime.fromisoformat(next(r for r in policy_scenarios() if r["id"] == "age-new-0")["published"])
    result = scenarios.for_article("age-query", RelatedQuery(limit=3, since=since))
    assert sorted(ids(result)) == ["age-new-0", "age-new-1", "age-new-2"]


def test_category_include_and_exclude_filters(news):
    only = news.for_article("budget-0", RelatedQuery(limit=4, categories=frozenset({"sports"})))
    assert len(only.items) == 4 and {item["category"] for item in only.items} == {"sports"}
    without = news.for_article("budget-0", RelatedQuery(limit=4, exclude_categories=frozenset({"politics"})))
    assert len(without.items) == 4 and "politics" not in {item["category"] for item in without.items}


# -- drafts ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["quake", "budget", "hochwasser"])
def test_draft_written_from_a_story_gets_that_story(news, name):
    draft = story_article(name, 99, seed=7)
    result = news.for_draft(draft["title"], draft["body"], None, RelatedQuery(limit=3))
    assert [story(i) for i in ids(result)] == [name] * 3
    assert {item["lang"] for item in result.items} == {STORIES[name][0]}  # language detected from the text


# -- invariants over any request -------------------------------------------------------------------------------------------
ALL_IDS = [r["id"] for r in newsroom()]
POLICIES = {
    "default": PolicyConfig(min_score=0.0),
    "fresh": PolicyConfig(min_score=0.0, freshness_half_life_days=3.0),
    "mmr": PolicyConfig(min_score=0.0, mmr_lambda=0.3),
    "capped": PolicyConfig(min_score=0.0, category_cap=1),
    "everything": PolicyConfig(min_score=0.0, freshness_half_life_days=3.0, mmr_lambda=0.7, category_cap=2, same_language=False),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    article_id=st.sampled_from(ALL_IDS),
    limit=st.integers(1, 15),
    lang=st.sampled_from([None, "any", "de", "en"]),
    exclude=st.frozensets(st.sampled_from(ALL_IDS), max_size=6),
    max_age=st.sampled_from([None, 2.0, 30.0]),
    policy=st.sampled_from(sorted(POLICIES)),
)
def test_served_lists_never_hold_the_query_duplicates_or_excluded_ids(news, article_id, limit, lang, exclude, max_age, policy):
    query = RelatedQuery(limit=limit, lang=lang, exclude=exclude, max_age_days=max_age, relative_to="article")
    result = news.for_article(article_id, query, policy=Policy(POLICIES[policy]))
    listed = ids(result)
    assert article_id not in listed and not exclude & set(listed)
    assert len(listed) == len(set(listed)) <= limit
    assert len(COPIES & set(listed)) <= 1 and not (article_id in COPIES and COPIES & set(listed))
    if policy == "default":
        scores = [item["score"] for item in result.items]
        assert scores == sorted(scores, reverse=True)
        if lang is None:
            assert {item["lang"] for item in result.items} <= {news.item_metadata(news.row_of[article_id])["lang"]}
    if len(listed) < limit:
        assert result.fill_reason == "exhausted"


STORED_TIMES = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(timezone.utc))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), STORED_TIMES.map(format_timestamp)), max_size=20))
def test_epochs_of_stored_timestamps_equal_epoch_of_each(published: list[str | None]) -> None:
    np.testing.assert_array_equal(epochs(published), np.array([epoch(p) for p in published], dtype=np.float64))


def test_epochs_reads_other_offsets_one_by_one() -> None:
    mixed = ["2024-05-01T10:00:00+02:00", "2024-05-01T08:00:00Z", None]
    np.testing.assert_array_equal(epochs(mixed), [epoch(p) for p in mixed])
    assert epochs(mixed)[0] == epochs(mixed)[1]
