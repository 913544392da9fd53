"""Property tests: whatever a client sends, the API answers without a 500, and every 4xx is
the JSON error shape {"error": {"code", "message"}}."""
from __future__ import annotations

import string
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.test_api import ODD_IDS, TestClient, build_index, ready, serve

PARAMS = ["limit", "exclude", "category", "exclude_category", "lang", "max_age_days", "since", "relative_to", "explain"]
KNOWN_IDS = ["flood-0", "budget-3", "hochwasser-1", "cup-2", *ODD_IDS]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # lone surrogates cannot be sent
plausible = st.one_of(
    text,
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "0", "1", "100", "101", "true", "false", "any", "de", "EN", "now", "article",
                     "2024-05-01", "2024-05-01T10:00:00Z", "0001-01-01", "9999-12-31T23:59:59+14:00",
                     "flood-1,cup-2", ",,,", "1e309", "-0"]),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=12,
)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("props") / "data"
    build_index(data_dir)
    with serve(data_dir) as c:
        yield ready(c)


def check(response, *, related: bool = True) -> None:
    event(f"status {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert set(body) == {"error"}
        assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    elif response.status_code == 200 and related:
        body = response.json()
        assert isinstance(body["items"], list) and isinstance(body["index_version"], str)


@FAST
@given(article_id=st.one_of(st.sampled_from(KNOWN_IDS), text),
       params=st.dictionaries(st.one_of(st.sampled_from(PARAMS), text), plausible, max_size=5))
def test_get_related_never_fails(client, article_id, params):
    response = client.get(f"/v1/articles/{quote(article_id, safe='')}/related", params=params)
    check(response)
    assert response.status_code in (200, 404, 422)
    if response.status_code == 200:
        assert response.json()["article_id"] == article_id


@FAST
@given(path=st.text(string.printable, max_size=30))
def test_any_path_is_json(client, path):
    check(client.get("/" + quote(path, safe="/?&=")), related=False)  # may hit /metrics, /docs, ...


@FAST
@given(
    payload=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "title": st.one_of(text, json_values), "body": st.one_of(text, json_values),
                **{name: st.one_of(plausible, json_values) for name in PARAMS},
            },
        ),
    )
)
def test_post_draft_never_fails(client, payload):
    response = client.post("/v1/related", json=payload)
    check(response)
    assert response.status_code in (200, 422)


@FAST
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", "", "application/x-www-form-urlencoded"]))
def test_post_raw_bytes_never_fails(client, raw, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/related", content=raw, headers=headers)
    check(response)
    assert response.status_code in (200, 413, 415, 422)
