"""The sidebar for a news page: a stored article's list as an HTML fragment, and widget.js that fills it in."""
from __future__ import annotations

import hashlib
from importlib.resources import files

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.cache import etag_matches
from api.routes.related import ARTICLE_ID, ERRORS, article_list_response
from api.schemas import RelatedParams, query_parameters
from api.sidebar import render_sidebar

router = APIRouter(tags=["sidebar"])
HTML = "text/html; charset=utf-8"
JAVASCRIPT = "text/javascript; charset=utf-8"
FRAGMENT_EXAMPLE = (
    '<ul class="related-articles">\n<li class="related-article" lang="en"><a class="related-title" '
    'href="https://news.example/a-17">Harbour flood: clean-up begins</a> <time datetime="2024-05-02T08:00:00Z">'
    '2024-05-02</time> <span class="related-section">local</span></li>\n</ul>\n'
)


@router.get(
    "/v1/articles/{article_id:path}/related.html",
    summary="Related articles as an HTML fragment (the sidebar)",
    description=(
        "The same list as `GET /v1/articles/{article_id}/related`, with the same options, ETag and caching, as an "
        '`<ul class="related-articles">` of links with titles, dates (`<time>`), sections and `lang` attributes '
        "where known. Every text is HTML-escaped; only http(s) and relative URLs become links. Errors are JSON. "
        "`/widget.js` inserts this fragment into a page."
    ),
    response_class=Response,
    responses={
        200: {"content": {"text/html": {"example": FRAGMENT_EXAMPLE}}, "description": "The fragment."},
        304: {"description": "Not modified: the `If-None-Match` ETag still matches."},
        **ERRORS,
    },
    openapi_extra={"parameters": [ARTICLE_ID, *query_parameters(RelatedParams)]},
)
async def related_html(request: Request) -> Response:
    return article_list_response(request, render_sidebar, HTML, cache_prefix="html:")


class WidgetScript:
    """widget.js, read once, with a content ETag."""

    def __init__(self) -> None:
        self.body = files("api").joinpath("static/widget.js").read_bytes()
        self.etag = '"' + hashlib.blake2b(self.body, digest_size=12).hexdigest() + '"'


@router.get(
    "/widget.js",
    summary="The sidebar widget script",
    description=(
        "A dependency-free script (under 5 KB). Add `<div data-related-article=\"ID\"></div>` where the list "
        "belongs and `<script src=\"https://related.example/widget.js\" defer></script>`; each div is filled "
        "from `related.html`. The API base is the div's or the script tag's `data-related-endpoint`, else the "
        "script's own location; `data-related-limit` sets `limit`. On any error the div stays empty. Pages on "
        "another origin need that origin in `RELATED_CORS_ORIGINS`."
    ),
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}, "description": "The script."}, 304: {"description": "Not modified."}},
)
async def widget_js(request: Request) -> Response:
    script: WidgetScript = request.app.state.widget_script
    headers = {"ETag": script.etag, "Cache-Control": request.app.state.cache_control}
    if etag_matches(request.headers.get("if-none-match"), script.etag):
        return Response(status_code=304, headers=headers)
    return Response(script.body, media_type=JAVASCRIPT, headers=headers)
