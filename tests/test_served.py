"""Served lists (precomputed by the build and `related update`) say what the request-time policy says."""
from __future__ import annotations

import pytest

from recommender.policy.ranking import RelatedQuery
from recommender.related import RelatedIndex
from tests.corpora import POLICY_BUILD, newsroom, open_index, policy_scenarios


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> RelatedIndex:
    return open_index(tmp_path_factory.mktemp("served"), newsroom() + policy_scenarios(), POLICY_BUILD)


def listed(result) -> list[tuple[str, float]]:
    return [(item["id"], item["score"]) for item in result.items]


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_every_served_list_equals_the_request_time_policy(index: RelatedIndex, limit: int) -> None:
    assert index.served is not None
    fast_paths = 0
    for article_id in index.catalog.ids:
        query = RelatedQuery(limit=limit)
        served = index.for_article(article_id, query)
        ranked = index.for_article(article_id, query, policy=index.policy)  # an explicit policy skips the lookup
        assert listed(served) == listed(ranked), article_id
        row = index.row_of[article_id]
        fast_paths += int(index.served[0][row, limit - 1] >= 0)
    if limit <= 3:  # a 62-article corpus has few 10-item lists
        assert fast_paths > len(index.catalog.ids) // 2  # the lookup answered most of them


def test_filters_and_policy_changes_bypass_served_lists(index: RelatedIndex) -> None:
    article_id = "comet-1"
    row = index.row_of[article_id]
    first = index.catalog.ids[int(index.served[0][row, 0])]
    excluded = index.for_article(article_id, RelatedQuery(limit=3, exclude=frozenset({first})))
    assert first not in [item["id"] for item in excluded.items]
    assert len(excluded.items) == 3


def test_api_bodies_from_fragments_equal_the_rendered_list(index: RelatedIndex) -> None:
    import json

    from api.render import ServedRenderer, render

    renderer = ServedRenderer(index)
    checked = 0
    for article_id in index.catalog.ids:
        served = index.served_list(article_id, RelatedQuery(limit=3))
        if served is None:
            continue
        fast = json.loads(renderer.render(article_id, *served))
        assert fast == json.loads(render(index.for_article(article_id, RelatedQuery(limit=3), policy=index.policy)))
        checked += 1
    assert checked > len(index.catalog.ids) // 2
