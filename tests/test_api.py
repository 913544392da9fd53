"""HTTP API tests: the real ASGI app (TestClient) over small indexes built in code.

The corpus has four English stories and one German story; publication dates count back
from the time the fixture runs, so age filters relative to "now" are deterministic.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from index.artifacts import build_lock  # noqa: E402
from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from recommender.pipeline.build import build  # noqa: E402
from recommender.config import PipelineConfig  # noqa: E402

ADMIN_TOKEN = "s3cret-token"
# Small lists (k=6) so filters often empty the precomputed list and the wider search refills it; no
# relevance floor, so lists fill up to `limit` (tests/test_floor.py tests the floor).
CONFIG = {"reduce": {"dims": 16}, "neighbours": {"k": 6, "candidates": 30}, "policy": {"min_score": 0.0}}
STORIES = {
    "flood": ("local", "en", "harbour flood storm rain pumps firefighters riverbank sandbags evacuation levee"),
    "budget": ("politics", "en", "parliament budget minister coalition taxes deficit vote opposition spending treasury"),
    "cup": ("sports", "en", "football cup final striker goalkeeper penalty stadium coach trophy supporters"),
    "chips": ("economy", "en", "semiconductor factory chips investment subsidies wafer engineers plant supply jobs"),
    "hochwasser": ("local", "de", "hochwasser hafen sturm regen feuerwehr pumpen deich sandsäcke evakuierung ufer"),
}
SIZES = {"flood": 8, "budget": 8, "cup": 11, "chips": 7, "hochwasser": 5}
FILLER = {
    "en": "the city said on monday officials reported that people were after week".split(),
    "de": "die stadt sagte am montag behörden berichteten dass menschen waren nach woche".split(),
}
# Words every story uses now and then (each in ~1/4 of the articles, so TF-IDF keeps them):
# they give cross-story pairs small non-zero scores, which the refill tests rely on.
GENERAL = {
    "en": "government report market weather police school council price region hospital airport museum".split(),
    "de": "regierung bericht markt wetter polizei schule rat preis region krankenhaus flughafen museum".split(),
}
# Per-story sub-topic words; member i uses words i..i+2, so neighbours in a story share some
# (related) without being copies (the policy collapses near-duplicates).
SUFFIXES = "ander berg corin dalen emsk forn galt hurin istor jorvik kelm lunde morra nessel oberl pratz".split()
# Ids a CMS might really use (the last cup members): slashes, query-like characters, spaces,
# non-ASCII, a "/related" inside.
ODD_IDS = ["sports/2024/cup final?x=1&y=2", "über #1 100%", "a/related", "ends-with-slash/"]
DAY = timedelta(days=1)


def make_corpus(now: datetime, *, extra: int = 0) -> list[dict]:
    """Deterministic articles; story member i is published 3*i + 1 days before `now`."""
    rng = random.Random(7)
    articles = []
    for story, (category, lang, words) in STORIES.items():
        core = words.split()
        sub = [f"{story[:3]}{suffix}" for suffix in SUFFIXES]
        for i in range(SIZES[story]):
            own = sub[i : i + 3]
            body = (
                rng.choices(core, k=30) + rng.choices(own, k=24)
                + rng.choices(rng.sample(GENERAL[lang], 3), k=10) + rng.choices(FILLER[lang], k=16)
            )
            rng.shuffle(body)
            title = f"{' '.join(rng.sample(core, 3)).capitalize()} {own[0]} ({i})"
            odd = i - (SIZES[story] - len(ODD_IDS)) if story == "cup" else -1
            articles.append({
                "id": ODD_IDS[odd] if odd >= 0 else f"{story}-{i}",
                "title": title, "body": f"<p>{' '.join(body)}</p>",
                "published": (now - (3 * i + 1) * DAY).isoformat().replace("+00:00", "Z"),
                "lang": lang, "category": category, "url": f"https://news.example/{story}/{i}",
            })
    for n in range(extra):  # to make a different (newer) version
        base = dict(articles[n])
        articles.append(base | {"id": f"extra-{n}", "url": f"https://news.example/extra/{n}"})
    return articles


def build_index(data_dir: Path, *, extra: int = 0, now: datetime | None = None) -> str:
    """Build a version into data_dir (publishing it); returns the version name."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / f"{data_dir.name}-corpus-{extra}.jsonl"
    rows = make_corpus(now or datetime.now(timezone.utc), extra=extra)
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = build(source, data_dir, PipelineConfig.from_dict(CONFIG), force=True)
    return report.version.name


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.02):
    """Up to a minute: the first load in a fresh clone compiles the numba kernels (cached after)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def serve(data_dir: Path, **overrides) -> TestClient:
    values = {"data_dir": data_dir, "admin_token": ADMIN_TOKEN, "reload_check_seconds": 3600} | overrides
    return TestClient(create_app(Settings(**values)), raise_server_exceptions=False)


def ready(client: TestClient) -> TestClient:
    wait_for(lambda: client.get("/readyz").status_code == 200)
    return client


def related(client: TestClient, article_id: str, **params):
    return client.get(f"/v1/articles/{quote(article_id, safe='')}/related", params=params)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(scope="session")
def built(tmp_path_factory, now) -> tuple[Path, str]:
    data_dir = tmp_path_factory.mktemp("shared") / "data"
    return data_dir, build_index(data_dir, now=now)


@pytest.fixture(scope="module")
def client(built) -> Iterator[TestClient]:
    with serve(built[0]) as c:
        yield ready(c)


@pytest.fixture(scope="session")
def articles(now) -> dict[str, dict]:
    return {a["id"]: a for a in make_corpus(now)}


def published(article: dict) -> datetime:
    return datetime.fromisoformat(article["published"].replace("Z", "+00:00"))


# -- GET /v1/articles/{id}/related ------------------------------------------------------------
def test_related_list_shape_and_headers(client, built):
    r = related(client, "flood-0", limit=5)
    body = r.json()
    assert r.status_code == 200
    assert body["article_id"] == "flood-0" and body["index_version"] == built[1]
    assert body["fill_reason"] is None
    assert len(body["items"]) == 5
    assert "flood-0" not in ids(r)
    assert all(i.startswith("flood-") for i in ids(r)), "a story's own members come first"
    for item in body["items"]:
        assert {"id", "title", "url", "published", "category", "lang", "score"} == set(item)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["etag"].startswith('W/"') and r.headers["etag"].endswith('"')


def test_default_limit_is_ten(client):
    assert len(ids(related(client, "budget-0"))) == 10


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_limit_bounds_accepted(client, limit):
    got = ids(related(client, "budget-1", limit=limit, lang="any"))
    others = len(make_corpus(datetime.now(timezone.utc))) - 1
    # limit=100 asks for more than the corpus holds: every article with a positive score comes back, once.
    assert len(got) == len(set(got)) and "budget-1" not in got
    assert len(got) == limit if limit < others else others - 5 <= len(got) <= others


def test_exclude_removes_exactly_those_ids_and_refills(client):
    full = ids(related(client, "flood-0", limit=7))
    dropped = full[:2]
    after = ids(related(client, "flood-0", limit=5, exclude=",".join(dropped)))
    assert not set(dropped) & set(after)
    assert len(after) == 5
    assert after[:3] == full[2:5], "the rest keeps its order"
    repeated = client.get("/v1/articles/flood-0/related", params=[("limit", 5), ("exclude", dropped[0]), ("exclude", dropped[1])])
    assert ids(repeated) == after


def test_language_defaults_to_the_articles_own(client, articles):
    assert {articles[i]["lang"] for i in ids(related(client, "flood-0", limit=10))} == {"en"}
    assert {articles[i]["lang"] for i in ids(related(client, "hochwasser-0", limit=4))} == {"de"}


def test_lang_filter_and_any(client, articles):
    german = ids(related(client, "flood-0", limit=3, lang="de"))
    assert len(german) == 3 and {articles[i]["lang"] for i in german} == {"de"}
    mixed = ids(related(client, "flood-0", limit=30, lang="ANY"))
    assert {articles[i]["lang"] for i in mixed} == {"en", "de"}


def test_category_filters(client, articles):
    sports = ids(related(client, "flood-0", limit=4, category="sports"))
    assert len(sports) == 4 and {articles[i]["category"] for i in sports if i in articles} == {"sports"}
    two = ids(related(client, "flood-0", limit=12, category="sports,economy"))
    assert {articles[i]["category"] for i in two if i in articles} == {"sports", "economy"}
    no_local = ids(related(client, "flood-0", limit=10, exclude_category="local"))
    assert len(no_local) == 10 and "local" not in {articles[i]["category"] for i in no_local if i in articles}


def test_max_age_days_drops_older_items_and_refills(client, articles, now):
    plain = ids(related(client, "flood-0", limit=5))
    r = related(client, "flood-0", limit=5, max_age_days=8)
    recent = ids(r)
    assert len(recent) == 5
    assert all(published(articles[i]) >= now - 8 * DAY for i in recent if i in articles)
    assert set(plain) - set(recent), "older story members are dropped"
    assert r.json()["fill_reason"] == "wider_search"


def test_max_age_relative_to_article(client, articles):
    anchor = published(articles["flood-4"])  # 13 days old
    r = related(client, "flood-4", limit=5, max_age_days=4, relative_to="article", lang="any")
    assert all(published(articles[i]) >= anchor - 4 * DAY for i in ids(r) if i in articles)
    relative_now = ids(related(client, "flood-4", limit=5, max_age_days=4, lang="any"))
    assert relative_now != ids(r)


def test_since_filter(client, articles, now):
    since = (now - 5 * DAY).date().isoformat()
    got = ids(related(client, "budget-0", limit=5, since=since))
    cutoff = datetime.fromisoformat(since).replace(tzinfo=timezone.utc)
    assert len(got) == 5 and all(published(articles[i]) >= cutoff for i in got if i in articles)
    with_time = ids(related(client, "budget-0", limit=5, since=f"{since}T00:00:00Z"))
    assert with_time == got


def test_explain_adds_why_and_score_parts(client):
    plain = related(client, "cup-0", limit=3).json()["items"]
    assert all("why" not in i and "score_parts" not in i for i in plain)
    explained = related(client, "cup-0", limit=3, explain="true").json()["items"]
    for item in explained:
        assert isinstance(item["why"], list) and item["why"]
        assert "text" in item["score_parts"]


@pytest.mark.parametrize("article_id", ODD_IDS)
def test_article_ids_with_any_characters(client, article_id):
    r = related(client, article_id, limit=3)
    assert r.status_code == 200, r.text
    assert r.json()["article_id"] == article_id
    assert article_id not in ids(r)


def test_etag_304_and_changes_with_options(client):
    first = related(client, "chips-0", limit=5, exclude="chips-1,chips-2")
    etag = first.headers["etag"]
    again = client.get(
        "/v1/articles/chips-0/related", params={"limit": 5, "exclude": "chips-2,chips-1"},
        headers={"If-None-Match": etag},
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["cache-control"].startswith("public")
    strong = etag.removeprefix("W/")
    listed = client.get("/v1/articles/chips-0/related?limit=5&exclude=chips-1,chips-2",
                        headers={"If-None-Match": f'"other", {strong}'})
    assert listed.status_code == 304
    stale = client.get("/v1/articles/chips-0/related?limit=5", headers={"If-None-Match": etag})
    assert stale.status_code == 200 and stale.headers["etag"] != etag
    others = {related(client, "chips-0", **p).headers["etag"] for p in
              ({"limit": 4}, {"lang": "any"}, {"explain": "true"}, {"category": "economy"})}
    assert len(others) == 4 and etag not in others
    assert related(client, "chips-1", limit=5, exclude="chips-1,chips-2").headers["etag"] != etag


def test_repeated_filtered_request_is_served_from_the_response_cache(client):
    cache = client.app.state.cache
    a = related(client, "cup-3", limit=4, exclude_category="economy")
    hits = cache.hits
    b = related(client, "cup-3", limit=4, exclude_category="economy")
    assert cache.hits == hits + 1 and a.content == b.content


def test_unfiltered_list_is_answered_in_front_of_the_router_like_the_route(client):
    """api.served_lists answers it without the response cache; the body equals the route's
    (the same request with a no-op filter goes through FastAPI) apart from the ETag."""
    cache = client.app.state.cache
    before = (cache.hits, cache.misses)
    fast = related(client, "cup-3", limit=4)
    assert (cache.hits, cache.misses) == before
    routed = related(client, "cup-3", limit=4, exclude="no-such-id")
    assert (cache.hits, cache.misses) != before
    assert fast.json()["items"] == routed.json()["items"] and len(fast.json()["items"]) == 4
    assert fast.headers["content-type"] == "application/json"
    assert fast.headers["cache-control"] == routed.headers["cache-control"]
    assert int(fast.headers["content-length"]) == len(fast.content)
    assert related(client, "cup-3", limit=4).headers["etag"] == fast.headers["etag"]
    assert client.get("/v1/articles/cup-3/related?limit=4", headers={"If-None-Match": fast.headers["etag"]}).status_code == 304
    metrics = client.get("/metrics").text
    assert 'route="/v1/articles/{article_id}/related"' in metrics


def test_unknown_article_is_404_json(client):
    err = error(related(client, "no-such-article"), 404, "article_not_found")
    assert "no-such-article" in err["message"]
    error(client.get("/v1/articles//related"), 404, "article_not_found")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": 101}, "limit"),
        ({"max_age_days": -1}, "max_age_days"),
        ({"max_age_days": "nan"}, "max_age_days"),
        ({"since": "yesterday"}, "since"),
        ({"relative_to": "then"}, "relative_to"),
        ({"lang": "english!"}, "lang"),
        ({"explain": "maybe"}, "explain"),
    ],
)
def test_invalid_parameters_are_422_naming_the_parameter(client, params, parameter):
    err = error(related(client, "flood-0", **params), 422, "invalid_parameter")
    assert err["parameter"] == parameter
    assert err["message"].startswith(f"{parameter}: ")


def test_unknown_route_and_method(client):
    error(client.get("/v1/nothing-here"), 404, "not_found")
    error(client.delete("/v1/related"), 405, "method_not_allowed")


# -- POST /v1/related (drafts) -----------------------------------------------------------------
def test_draft_related(client, articles):
    r = client.post("/v1/related", json={"title": "Harbour flood", "body": "Firefighters pump water; sandbags at the levee.",
                                         "limit": 4, "explain": True})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store" and "etag" not in r.headers
    body = r.json()
    assert body["article_id"] is None and len(body["items"]) == 4
    assert all(i["id"].startswith("flood-") and i["why"] for i in body["items"])


def test_draft_options(client, articles):
    german = client.post("/v1/related", json={"title": "Hochwasser im Hafen", "body": "Die Feuerwehr pumpt am Deich."})
    assert {articles[i]["lang"] for i in ids(german)} == {"de"}
    filtered = client.post("/v1/related", json={
        "title": "Harbour flood", "exclude": ["flood-1", "flood-2"], "category": "local,sports",
        "lang": "en", "limit": 6, "max_age_days": 30,
    })
    got = ids(filtered)
    assert len(got) == 6 and not {"flood-1", "flood-2"} & set(got)
    assert {articles[i]["category"] for i in got if i in articles} <= {"local", "sports"}


@pytest.mark.parametrize(
    ("payload", "parameter"),
    [
        ({}, "body"),
        ({"title": "  ", "body": ""}, "body"),
        ({"title": "x", "limit": 0}, "body.limit"),
        ({"title": "x", "lang": "xx"}, "body.lang"),
        ({"title": 5}, "body.title"),
        ([1, 2], "body"),
    ],
)
def test_invalid_drafts_are_422(client, payload, parameter):
    err = error(client.post("/v1/related", json=payload), 422, "invalid_parameter")
    assert err["parameter"] == parameter


def test_draft_invalid_json_is_422(client):
    error(client.post("/v1/related", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "invalid_json")


def test_draft_body_over_limit_is_413(client):
    huge = b"x" * (2 << 20)
    error(client.post("/v1/related", content=huge, headers={"Content-Type": "application/json"}), 413, "payload_too_large")

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(32):
            yield b"y" * (64 << 10)

    error(client.post("/v1/related", content=chunks(), headers={"Content-Type": "application/json"}), 413, "payload_too_large")
    ok = client.post("/v1/related", json={"title": "cup final", "body": "goal " * 1000})
    assert ok.status_code == 200


# -- operations ------------------------------------------------------------------------------
def test_health_ready_index(client, built):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "version": built[1]}
    info = client.get("/v1/index").json()
    assert info["ready"] is True and info["version"] == built[1]
    assert info["articles"] == len(make_corpus(datetime.now(timezone.utc))) and info["dims"] == 16
    assert info["built_at"] and info["config"]["neighbours"]["k"] == 6
    assert info["last_reload_at"] and info["last_reload_error"] is None


def test_metrics(client, built):
    related(client, "flood-0", limit=2)
    related(client, "missing-id")
    text = client.get("/metrics").text
    assert "# TYPE related_http_requests_total counter" in text
    route = 'route="/v1/articles/{article_id}/related"'
    assert f'related_http_requests_total{{method="GET",{route},status="200"}}' in text
    assert f'related_http_requests_total{{method="GET",{route},status="404"}}' in text
    assert "related_http_request_duration_seconds_bucket{" in text
    assert f'related_index_info{{version="{built[1]}"}} 1.0' in text
    assert f"related_index_articles {float(len(make_corpus(datetime.now(timezone.utc))))}" in text


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/articles/{article_id}/related"]["get"]
    assert operation["summary"] and {p["name"] for p in operation["parameters"]} >= {
        "article_id", "limit", "exclude", "category", "exclude_category", "lang", "max_age_days", "since",
        "relative_to", "explain",
    }
    assert spec["components"]["schemas"]["DraftRequest"]["examples"]


def test_internal_errors_are_500_json(built):
    class Broken:
        name = "broken"

        def for_article(self, *args):
            raise RuntimeError("bug")

    with serve(built[0]) as c:
        ready(c)  # else the first load, in the background, may land after the swap below
        c.app.state.holder.index = Broken()
        error(related(c, "flood-0"), 500, "internal_error")


def test_cors_only_when_configured(built):
    with serve(built[0], cors_origins=["https://cms.example"]) as c:
        r = c.get("/healthz", headers={"Origin": "https://cms.example"})
        assert r.headers["access-control-allow-origin"] == "https://cms.example"
        pre = c.options("/v1/related", headers={"Origin": "https://cms.example", "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
    with serve(built[0]) as c:
        assert "access-control-allow-origin" not in c.get("/healthz", headers={"Origin": "https://cms.example"}).headers


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RELATED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RELATED_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("RELATED_ADMIN_TOKEN", "tok")
    monkeypatch.setenv("RELATED_MAX_BODY_BYTES", "1000")
    monkeypatch.setenv("RELATED_CACHE_MAX_AGE", "60")
    s = Settings()
    assert s.data_dir == tmp_path and s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.admin_token.get_secret_value() == "tok" and s.max_body_bytes == 1000 and s.cache_max_age == 60
    monkeypatch.setenv("RELATED_CORS_ORIGINS", '["https://c.example"]')
    monkeypatch.setenv("RELATED_ADMIN_TOKEN", "")
    s = Settings()
    assert s.cors_origins == ["https://c.example"] and s.admin_token is None
    assert (s.host, s.port, s.workers, s.reload_check_seconds) == ("127.0.0.1", 8000, 1, 2.0)


def test_settings_reach_responses(built):
    with serve(built[0], cache_max_age=42, max_body_bytes=100) as c:
        ready(c)
        assert related(c, "flood-0").headers["cache-control"] == "public, max-age=42"
        error(c.post("/v1/related", json={"title": "x" * 200}), 413, "payload_too_large")


# -- admin reload -------------------------------------------------------------------------------
def test_admin_reload_auth(built):
    with serve(built[0], admin_token=None) as c:
        error(c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}), 404, "not_found")
    with serve(built[0]) as c:
        ready(c)
        error(c.post("/v1/admin/reload"), 401, "unauthorized")
        error(c.post("/v1/admin/reload", headers={"Authorization": ADMIN_TOKEN}), 401, "unauthorized")
        error(c.post("/v1/admin/reload", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}), 401, "unauthorized")
        error(c.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
        ok = c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert ok.status_code == 200 and ok.json() == {"reloaded": False, "version": built[1]}


# -- updates posted by a CMS ---------------------------------------------------------------------
def test_posted_article_is_served_in_its_story_lists_when_the_call_returns(tmp_path, now):
    data_dir = tmp_path / "data"
    first = build_index(data_dir, now=now)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    flood = make_corpus(now)[1]
    new = flood | {"id": "flood-new", "url": "https://news.example/flood/new", "title": "Harbour flood pumps (new)",
                   "published": now.isoformat().replace("+00:00", "Z")}
    body = json.dumps(new) + "\n" + json.dumps({"id": "budget-1", "deleted": True}) + "\n"
    with serve(data_dir) as c:  # the periodic check is an hour: only the update's own swap can show it
        ready(c)
        assert "flood-new" not in ids(related(c, "flood-0"))
        error(c.post("/v1/admin/articles", content=body), 401, "unauthorized")
        done = c.post("/v1/admin/articles", content=body, headers=auth | {"Content-Type": "application/x-ndjson"})
        assert done.status_code == 200, done.text
        result = done.json()
        assert result["status"] == "updated" and result["parent"] == first and result["serving"] == result["version"]
        assert (result["added"], result["deleted"], result["replaced"]) == (1, 1, 0)
        assert result["rejected"] == []
        assert "flood-new" in ids(related(c, "flood-0"))
        assert related(c, "flood-0").json()["index_version"] == result["version"]
        error(related(c, "budget-1"), 404, "article_not_found")
        assert "budget-1" not in ids(related(c, "budget-0", limit=10))
        again = c.post("/v1/admin/articles", content=json.dumps(new) + "\n", headers=auth).json()
        assert again["status"] == "unchanged" and again["unchanged"] == 1 and again["version"] == result["version"]
        bad = error(c.post("/v1/admin/articles?atomic=true", content="{not json\n" + body, headers=auth),
                    422, "invalid_update")
        assert "line 1: Invalid JSON" in bad["message"] and [r["line"] for r in bad["rejected"]] == [1]
        resent = "".join(json.dumps(a) + "\n" for a in make_corpus(now)[16:26])  # cup stories, untouched
        mostly_fine = c.post("/v1/admin/articles", content=resent + '{"id": "x", "title": 5}\n', headers=auth).json()
        assert mostly_fine["unchanged"] == 10 and [(r["line"], r["id"]) for r in mostly_fine["rejected"]] == [(11, "x")]


def test_publish_hook_applies_good_lines_and_names_each_bad_one(tmp_path, now):
    data_dir = tmp_path / "data"
    build_index(data_dir, now=now)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    flood = make_corpus(now)[1]
    good = flood | {"id": "flood-new", "title": "Harbour flood pumps (new)"}
    bad_lines = ['{"title": "no id here"}', '{"id": "t", "title": 5}', "not json", '{"id": "e", "title": "<p> </p>"}',
                 '{"id": "d", "title": "x", "published": "yesterday"}']
    with serve(data_dir) as c:
        ready(c)
        atomic = c.post("/v1/admin/articles?atomic=true", content="\n".join([json.dumps(good), *bad_lines]),
                        headers=auth | {"Content-Type": "application/x-ndjson"})
        refused = error(atomic, 422, "invalid_update")
        assert [r["line"] for r in refused["rejected"]] == [2, 3, 4, 5, 6]
        assert "related-update-" not in atomic.text and "/tmp" not in atomic.text  # no temporary file path
        error(related(c, "flood-new"), 404, "article_not_found")  # all or nothing: nothing applied

        partial = c.post("/v1/admin/articles", content="\n".join([json.dumps(good), *bad_lines]) + "\n",
                         headers=auth | {"Content-Type": "application/x-ndjson"})
        assert partial.status_code == 200, partial.text
        result = partial.json()
        assert result["added"] == 1 and ids(related(c, "flood-new"))
        reasons = {r["line"]: (r["id"], r["reason"]) for r in result["rejected"]}
        assert set(reasons) == {2, 3, 4, 5, 6}
        assert reasons[2][0] is None and "id" in reasons[2][1]
        assert reasons[3] == ("t", "title: Input should be a valid string")
        assert "JSON" in reasons[4][1] and "visible text" in reasons[5][1] and "RFC 3339" in reasons[6][1]

        one = c.post("/v1/admin/articles", json=flood | {"id": "flood-json", "title": "Harbour flood (json)"}, headers=auth)
        assert one.status_code == 200 and one.json()["added"] == 1, one.text
        only_bad = error(c.post("/v1/admin/articles", json={"id": "x"}, headers=auth), 422, "invalid_update")
        assert only_bad["rejected"] == [{"line": 1, "id": "x", "reason": only_bad["rejected"][0]["reason"]}]
        error(c.post("/v1/admin/articles", content=b"", headers=auth), 422, "invalid_update")
        error(c.post("/v1/admin/articles", content=b"{", headers=auth | {"Content-Type": "application/json"}),
              422, "invalid_json")


def test_posted_update_while_a_build_holds_the_lock_is_409(tmp_path, now):
    data_dir = tmp_path / "data"
    build_index(data_dir, now=now)
    with serve(data_dir) as c, build_lock(data_dir):
        ready(c)
        response = c.post("/v1/admin/articles", content=json.dumps(make_corpus(now)[0]) + "\n",
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        error(response, 409, "update_in_progress")
        assert response.headers["retry-after"] == "5"


# -- starting empty, hot reload -----------------------------------------------------------------
def test_starts_without_index_then_picks_up_first_build(tmp_path):
    data_dir = tmp_path / "data"
    with serve(data_dir, reload_check_seconds=0.05) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        error(related(c, "flood-0"), 503, "no_index")
        error(c.post("/v1/related", json={"title": "flood"}), 503, "no_index")
        assert c.get("/v1/index").json()["ready"] is False
        version = build_index(data_dir)
        wait_for(lambda: c.get("/readyz").status_code == 200)
        assert related(c, "flood-0").json()["index_version"] == version


def test_reload_switches_versions_while_in_flight_requests_finish_on_old(tmp_path):
    data_dir = tmp_path / "data"
    old_version = build_index(data_dir)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with serve(data_dir) as c:
        ready(c)
        old = c.app.state.holder.index
        entered, release = threading.Event(), threading.Event()
        real = old.for_draft

        def slow_for_draft(*args, **kwargs):
            entered.set()
            assert release.wait(10)
            return real(*args, **kwargs)

        old.for_draft = slow_for_draft  # only the old object is slow; drafts run off the event loop
        result: dict = {}
        draft = {"title": "Flood", "body": "River flood in the valley", "limit": 3}
        worker = threading.Thread(target=lambda: result.update(r=c.post("/v1/related", json=draft)))
        worker.start()
        assert entered.wait(10)
        new_version = build_index(data_dir, extra=2)
        swapped = c.post("/v1/admin/reload", headers=auth)
        assert swapped.json() == {"reloaded": True, "version": new_version}
        assert related(c, "extra-0", limit=3).json()["index_version"] == new_version
        release.set()
        worker.join(10)
        assert result["r"].status_code == 200
        assert result["r"].json()["index_version"] == old_version
        assert related(c, "flood-0", limit=3).json()["index_version"] == new_version


def test_tampered_version_is_refused_and_old_keeps_serving(tmp_path):
    data_dir = tmp_path / "data"
    good = build_index(data_dir)
    with serve(data_dir, reload_check_seconds=0.05) as c:
        ready(c)
        other = tmp_path / "other"
        bad = build_index(other, extra=1)
        shutil.copytree(other / "versions" / bad, data_dir / "versions" / bad)
        npy = data_dir / "versions" / bad / "neighbours.npy"
        raw = bytearray(npy.read_bytes())
        raw[-1] ^= 0xFF
        npy.write_bytes(bytes(raw))
        link = data_dir / "current.tmp"
        os.symlink(f"versions/{bad}", link)
        os.replace(link, data_dir / "current")

        info = wait_for(lambda: (i := c.get("/v1/index").json())["last_reload_error"] and i)
        assert info["version"] == good and info["failed_version"] == bad
        assert bad in info["last_reload_error"] and "neighbours.npy" in info["last_reload_error"]
        assert related(c, "flood-0").json()["index_version"] == good
        time.sleep(0.3)  # several check intervals: the same broken dir is not retried
        assert "related_index_reload_failures_total 1.0" in c.get("/metrics").text
        retry = c.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        error(retry, 409, "reload_failed")
        assert "related_index_reload_failures_total 2.0" in c.get("/metrics").text

        fixed = build_index(data_dir, extra=3)  # a good newer version is picked up and clears the error
        wait_for(lambda: c.get("/readyz").json()["version"] == fixed)
        assert c.get("/v1/index").json()["last_reload_error"] is None
