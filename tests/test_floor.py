"""The relevance floor (`min_score`) and `fill=latest`: no padding with strangers unless asked, and then marked."""
from __future__ import annotations


import pytest

from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.corpora import build_records, day, newsroom, record
from tests.test_api import ready, serve

# English local news with nothing in common with the flood story (or each other): the section's newest.
LOCAL = [
    record(f"local-{i}", title, body, published=day(100 + i), category="local", url=f"https://news.example/local/{i}")
    for i, (title, body) in enumerate([
        ("Bakery wins regional bread award", "A family bakery took first prize for its sourdough loaves."),
        ("Library extends weekend opening hours", "Readers can borrow books until late on Saturdays now."),
        ("Choir celebrates fiftieth anniversary", "Singers gathered for a concert of anthems and carols."),
    ])
]
FLOOR = 0.5  # the flood story's articles score above 0.9 with each other, strangers below 0.1


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> RelatedIndex:
    data_dir, _ = build_records(tmp_path_factory.mktemp("floor"), newsroom() + LOCAL)
    return RelatedIndex.open(data_dir)


def ids(result) -> list[str]:
    return [item["id"] for item in result.items]


def test_without_a_floor_the_list_is_padded_with_strangers(index):
    result = index.for_article("flood-1", RelatedQuery(limit=8))
    assert len(result.items) == 8 and min(i["score"] for i in result.items) < 0.1


def test_a_floor_shortens_a_padded_list_and_says_why(index):
    result = index.for_article("flood-1", RelatedQuery(limit=8, min_score=FLOOR))
    assert sorted(ids(result)) == ["flood-0", "flood-2", "flood-3", "flood-4"]
    assert result.fill_reason == "below_min_score"
    assert all(i["score"] >= FLOOR and "filler" not in i for i in result.items)


def test_a_full_list_above_the_floor_is_unchanged(index):
    plain = index.for_article("flood-1", RelatedQuery(limit=4))
    floored = index.for_article("flood-1", RelatedQuery(limit=4, min_score=FLOOR))
    assert ids(plain) == ids(floored) and floored.fill_reason is None


def test_the_floor_applies_to_drafts_and_filtered_lists(index):
    draft = index.for_draft("Zwieselbrunn flood levee", "River flood sandbags rescue", "en", RelatedQuery(limit=8, min_score=FLOOR))
    assert {i["id"].split("-")[0] for i in draft.items} == {"flood"} and draft.fill_reason == "below_min_score"
    filtered = index.for_article("flood-1", RelatedQuery(limit=8, min_score=FLOOR, exclude=frozenset({"flood-2"})))
    assert sorted(ids(filtered)) == ["flood-0", "flood-3", "flood-4"] and filtered.fill_reason == "below_min_score"


def test_configured_floor_is_the_default_and_a_request_overrides_it(tmp_path):
    data_dir, _ = build_records(tmp_path, newsroom() + LOCAL, {"policy": {"min_score": FLOOR}})
    floored = RelatedIndex.open(data_dir)
    assert len(floored.for_article("flood-1", RelatedQuery(limit=8)).items) == 4
    assert len(floored.for_article("flood-1", RelatedQuery(limit=8, min_score=0.0)).items) == 8


def test_fill_latest_marks_its_fillers(index):
    result = index.for_article("flood-1", RelatedQuery(limit=8, min_score=FLOOR, fill="latest"))
    fillers = [i for i in result.items if i.get("filler")]
    assert len(result.items) == 7 and len(fillers) == 3  # only three other English local articles exist
    assert [i["id"] for i in fillers] == ["local-2", "local-1", "local-0"]  # newest first
    assert result.items[:4] == index.for_article("flood-1", RelatedQuery(limit=8, min_score=FLOOR)).items
    assert all(i["score"] == 0.0 and i["category"] == "local" and i["lang"] == "en" for i in fillers)
    assert result.fill_reason == "below_min_score"


def test_fill_is_opt_in_and_off_for_full_lists(index):
    assert not any(i.get("filler") for i in index.for_article("flood-1", RelatedQuery(limit=4, fill="latest")).items)
    assert not any(i.get("filler") for i in index.for_article("flood-1", RelatedQuery(limit=8, min_score=FLOOR)).items)


# -- API ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(index):
    with serve(index.version.path.parents[1]) as c:
        yield ready(c)


def test_api_min_score_and_fill(client):
    plain = client.get("/v1/articles/flood-1/related", params={"limit": 8})
    floored = client.get("/v1/articles/flood-1/related", params={"limit": 8, "min_score": FLOOR})
    filled = client.get("/v1/articles/flood-1/related", params={"limit": 8, "min_score": FLOOR, "fill": "latest"})
    assert len(plain.json()["items"]) == 8 and plain.json()["fill_reason"] != "below_min_score"
    assert len(floored.json()["items"]) == 4 and floored.json()["fill_reason"] == "below_min_score"
    assert [i.get("filler", False) for i in filled.json()["items"]] == [False] * 4 + [True] * 3
    assert len({plain.headers["etag"], floored.headers["etag"], filled.headers["etag"]}) == 3
    draft = client.post("/v1/related", json={"title": "Zwieselbrunn flood levee", "body": "River flood sandbags",
                                             "limit": 8, "min_score": FLOOR, "fill": "latest"})
    assert draft.status_code == 200 and any(i.get("filler") for i in draft.json()["items"])


@pytest.mark.parametrize("params", [{"min_score": "1.5"}, {"min_score": "-0.1"}, {"min_score": "nan"}, {"fill": "oldest"}])
def test_api_rejects_bad_floor_and_fill(client, params):
    response = client.get("/v1/articles/flood-1/related", params=params)
    assert response.status_code == 422 and response.json()["error"]["parameter"] == next(iter(params))
