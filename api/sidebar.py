"""The sidebar fragment: a related list as HTML, for `related.html` and widget.js.

Every text comes from the CMS's records, so every text is escaped (Jinja2 autoescaping),
and a URL becomes a link only when it is http(s) or relative: an escaped `javascript:`
URL would still run when clicked.
"""
from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, Template, select_autoescape

SAFE_SCHEMES = frozenset({"http", "https"})


@cache
def template() -> Template:
    env = Environment(
        loader=PackageLoader("api", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        keep_trailing_newline=True,
    )
    return env.get_template("related.html")


def safe_href(url: str | None) -> str | None:
    """The URL when a browser would open it as a page: http(s), or relative without a scheme."""
    if not url or not url.strip():
        return None
    try:
        scheme = urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return None
    if scheme in SAFE_SCHEMES:
        return url.strip()
    if scheme == "" and ":" not in url.split("/", 1)[0]:
        return url.strip()
    return None


def sidebar_item(item: dict[str, Any]) -> dict[str, Any]:
    published = item.get("published")
    return {
        "title": item.get("title") or item["id"],
        "href": safe_href(item.get("url")),
        "lang": item.get("lang"),
        "published": published,
        "date": published[:10] if published else None,  # ISO date: the page's own locale is unknown
        "category": item.get("category"),
    }


def render_sidebar(result: Any) -> bytes:
    """Any RelatedList -> an `<ul class="related-articles">` fragment (UTF-8)."""
    return template().render(items=[sidebar_item(item) for item in result.items]).encode("utf-8")
