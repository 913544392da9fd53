"""The sidebar: `related.html` (escaped HTML, the JSON route's caching) and widget.js in a real Chromium.

The browser tests run Debian's chromium through Playwright against the API served by uvicorn
on one loopback port and a page served from another (so another origin); they skip, saying
why, where Chromium is missing or cannot start.
"""
from __future__ import annotations

import html
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from selectolax.lexbor import LexborHTMLParser

warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from api.app import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from api.sidebar import safe_href  # noqa: E402
from tests.corpora import build_records, stories  # noqa: E402
from tools.browser import serving_api, serving_directory  # noqa: E402

# Titles are HTML-cleaned at ingest, so markup reaches a list as text written with entities; it must
# be shown as that text. A literal <script> in a title loses its tags but keeps its text.
EVIL_TITLE = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\"> Flood & 'levee' \"news\""
EVIL_SECTION = "<b>local</b>"
SCRIPT_TITLE = "<script>window.pwned = 4</script> Levee holds"
WIDGET_LIMIT = 4


def corpus() -> list[dict]:
    """The small story corpus, with markup in a title and a section, a script URL, a relative URL, no date."""
    records = stories()
    by_id = {r["id"]: r for r in records}
    by_id["flood-3"].update(title=html.escape(EVIL_TITLE), category=html.escape(EVIL_SECTION))
    by_id["flood-1"]["title"] = SCRIPT_TITLE
    by_id["flood-4"]["url"] = "javascript:window.pwned = 3"
    by_id["flood-2"].update(url="/en/flood/2", published=None)
    return records


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data_dir, _ = build_records(tmp_path_factory.mktemp("widget"), corpus())
    return data_dir


@pytest.fixture(scope="module")
def client(data_dir) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(data_dir=data_dir)), raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 120  # the first load in a fresh clone compiles the numba kernels
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the index did not load"
            time.sleep(0.05)
        yield c


def html_path(article_id: str) -> str:
    return f"/v1/articles/{quote(article_id, safe='')}/related.html"


def json_items(client: TestClient, article_id: str, **params) -> list[dict]:
    response = client.get(f"/v1/articles/{quote(article_id, safe='')}/related", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def fragment_items(html: str) -> list[dict]:
    """What a reader sees in each list item, from the parsed HTML."""
    tree = LexborHTMLParser(html)
    items = []
    for li in tree.css("ul.related-articles > li"):
        link, time, section = li.css_first("a"), li.css_first("time"), li.css_first(".related-section")
        items.append({
            "title": li.css_first(".related-title").text(),
            "href": link.attributes.get("href") if link else None,
            "lang": li.attributes.get("lang"),
            "datetime": time.attributes.get("datetime") if time else None,
            "date": time.text() if time else None,
            "section": section.text() if section else None,
        })
    return items


# -- related.html ---------------------------------------------------------------------------
def test_fragment_lists_the_json_items_in_order_with_dates_sections_and_lang(client):
    response = client.get(html_path("budget-0"), params={"limit": 4})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    expected = json_items(client, "budget-0", limit=4)
    assert fragment_items(response.text) == [
        {"title": i["title"], "href": i["url"], "lang": i["lang"], "datetime": i["published"],
         "date": i["published"][:10], "section": i["category"]}
        for i in expected
    ]


def test_every_text_is_escaped_and_only_web_urls_become_links(client):
    items = json_items(client, "flood-0", limit=WIDGET_LIMIT)
    assert {"flood-1", "flood-2", "flood-3", "flood-4"} <= {i["id"] for i in items}, "the test needs them listed"
    html = client.get(html_path("flood-0"), params={"limit": WIDGET_LIMIT}).text
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    shown = {i["title"]: i for i in fragment_items(html)}
    evil = shown[EVIL_TITLE]  # the markup arrives as text, exactly
    assert evil["section"] == EVIL_SECTION
    assert "window.pwned = 4 Levee holds" in shown
    script_url = next(i for i in items if i["id"] == "flood-4")
    assert shown[script_url["title"]]["href"] is None, "a javascript: URL must not become a link"
    relative = next(i for i in items if i["id"] == "flood-2")
    assert shown[relative["title"]]["href"] == "/en/flood/2"
    assert shown[relative["title"]]["datetime"] is None and shown[relative["title"]]["date"] is None


@pytest.mark.parametrize("url, href", [
    ("https://news.example/a?b=1&c=2", "https://news.example/a?b=1&c=2"),
    ("HTTP://news.example/a", "HTTP://news.example/a"),
    ("/en/a-17", "/en/a-17"),
    ("a-17.html", "a-17.html"),
    ("//news.example/a", "//news.example/a"),
    (" https://news.example/a ", "https://news.example/a"),
    ("javascript:alert(1)", None),
    ("JaVaScRiPt:alert(1)", None),
    (" javascript:alert(1)", None),
    ("java\tscript:alert(1)", None),
    ("\x01javascript:alert(1)", None),
    ("data:text/html,<script>alert(1)</script>", None),
    ("vbscript:msgbox", None),
    ("mailto:desk@news.example", None),
    ("", None),
    (None, None),
])
def test_only_http_and_relative_urls_are_links(url, href):
    assert safe_href(url) == href


def test_same_etag_and_caching_as_the_json_route_and_304(client):
    params = {"limit": 3, "exclude": "budget-1"}
    html = client.get(html_path("budget-0"), params=params)
    json_response = client.get("/v1/articles/budget-0/related", params=params)
    for name in ("etag", "cache-control"):
        assert html.headers[name] == json_response.headers[name]
    again = client.get(html_path("budget-0"), params=params, headers={"If-None-Match": html.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == html.headers["etag"]
    other = client.get(html_path("budget-0"), params={"limit": 3})
    assert other.headers["etag"] != html.headers["etag"]
    cached = client.get(html_path("budget-0"), params=params)  # from the response cache: the same bytes
    assert cached.content == html.content


def test_errors_are_json(client):
    missing = client.get(html_path("no-such-article"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "article_not_found"
    invalid = client.get(html_path("budget-0"), params={"limit": 0})
    assert invalid.status_code == 422 and invalid.json()["error"]["parameter"] == "limit"


def test_widget_script_is_small_and_cacheable(client):
    response = client.get("/widget.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert 0 < len(response.content) < 5 * 1024
    assert response.headers["cache-control"] == "public, max-age=300"
    again = client.get("/widget.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


# -- widget.js in Chromium --------------------------------------------------------------------
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A news site on its own loopback origin; tests write their pages into it."""
    root = tmp_path_factory.mktemp("site")
    with serving_directory(root) as origin:
        yield root, origin


@pytest.fixture(scope="module")
def api(data_dir, site) -> Iterator[str]:
    """The API, allowing the site's origin (RELATED_CORS_ORIGINS)."""
    with serving_api(create_app(Settings(data_dir=data_dir, cors_origins=[site[1]]))) as base:
        yield base


WAIT_FOR_WIDGETS = """() => [...document.querySelectorAll('[data-related-article]')]
    .every(div => div.dataset.relatedState === 'done' || div.dataset.relatedState === 'error')"""


def open_page(browser, site: tuple[Path, str], name: str, body: str):
    root, origin = site
    (root / name).write_text(f"<!doctype html><html><head><meta charset=utf-8></head><body>{body}</body></html>")
    page = browser.new_page()
    page.goto(f"{origin}/{name}")
    page.wait_for_function(WAIT_FOR_WIDGETS, timeout=30_000)
    return page


def shown_titles(page, div_id: str) -> list[str]:
    return page.eval_on_selector_all(f"#{div_id} li .related-title", "nodes => nodes.map(n => n.textContent)")


def test_widget_fills_each_div_in_order_and_leaves_a_failing_one_empty(browser, site, api, client):
    page = open_page(browser, site, "article.html", f"""
        <h1>An article</h1>
        <div id="one" data-related-article="flood-0" data-related-endpoint="{api}" data-related-limit="{WIDGET_LIMIT}"></div>
        <div id="two" data-related-article="budget-0" data-related-endpoint="{api}/" data-related-limit="3"></div>
        <div id="bad" data-related-article="no-such-article" data-related-endpoint="{api}">placeholder</div>
        <script src="{api}/widget.js"></script>""")
    try:
        assert shown_titles(page, "one") == [i["title"] for i in json_items(client, "flood-0", limit=WIDGET_LIMIT)]
        assert shown_titles(page, "two") == [i["title"] for i in json_items(client, "budget-0", limit=3)]
        assert page.inner_html("#bad") == ""
        assert page.evaluate("window.pwned") is None, "markup in a title must not run"
        assert page.get_attribute("#one li", "lang") == "en"
    finally:
        page.close()


def test_widget_takes_the_api_base_from_its_own_url(browser, site, api, client):
    page = open_page(browser, site, "no-endpoint.html", f"""
        <div id="one" data-related-article="budget-0"></div>
        <script src="{api}/widget.js" defer></script>""")
    try:
        assert shown_titles(page, "one") == [i["title"] for i in json_items(client, "budget-0")]
    finally:
        page.close()


def test_widget_hosted_by_the_site_takes_the_api_base_from_its_script_tag(browser, site, api, client):
    (site[0] / "widget.js").write_bytes(client.get("/widget.js").content)
    page = open_page(browser, site, "own-copy.html", f"""
        <div id="one" data-related-article="budget-0" data-related-limit="2"></div>
        <script src="widget.js" data-related-endpoint="{api}"></script>""")
    try:
        assert shown_titles(page, "one") == [i["title"] for i in json_items(client, "budget-0", limit=2)]
    finally:
        page.close()


def test_widget_shows_nothing_when_the_origin_is_not_allowed(browser, data_dir, site):
    with serving_api(create_app(Settings(data_dir=data_dir))) as closed_api:  # no RELATED_CORS_ORIGINS
        page = open_page(browser, site, "not-allowed.html", f"""
            <div id="one" data-related-article="budget-0">loading…</div>
            <script src="{closed_api}/widget.js"></script>""")
        try:
            assert page.inner_html("#one") == ""
            assert page.get_attribute("#one", "data-related-state") == "error"
        finally:
            page.close()


def test_example_page_screenshot(browser, site, api, tmp_path):
    """tools/sidebar_screenshot.py (the README's picture) on this index."""
    from tools.sidebar_screenshot import example_page, screenshot

    article = next(r for r in corpus() if r["id"] == "budget-0")
    (site[0] / "example.html").write_text(example_page(article, api), encoding="utf-8")
    out = tmp_path / "sidebar.png"
    assert screenshot(browser, f"{site[1]}/example.html", out) == 5
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size < 200_000
