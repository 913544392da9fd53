"""Related lists: for a stored article (GET, cacheable) and for an unsaved draft (POST)."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.cache import etag_matches
from api.deps import IndexDep, current_index, parse_related_query
from api.errors import ApiError
from api.render import render
from api.served_lists import validators
from api.schemas import DraftRequest, ErrorResponse, RelatedParams, RelatedResponse, query_parameters
from recommender.policy.ranking import ANY_LANGUAGE

if TYPE_CHECKING:
    from recommender.related import RelatedList

log = logging.getLogger("related.api")
router = APIRouter(tags=["related"])
JSON = "application/json"

ARTICLE_ID = {
    "name": "article_id", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "The CMS id of the article, percent-encoded.",
    "examples": {
        "demo": {"summary": "A story of the demo corpus (`make run`)", "value": "nk-ukraine-en-1"},
        "slashes": {"summary": "An id with slashes (sent as %2F)", "value": "sport/2024/cup-final"},
    },
}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`article_not_found`"},
    422: {
        "model": ErrorResponse,
        "description": "`invalid_parameter`: which parameter and why (also a `lang` the index holds no article in)",
    },
    503: {"model": ErrorResponse, "description": "`loading`: the first version is still loading; `no_index`: none built yet"},
}


@router.get(
    "/v1/articles/{article_id:path}/related",
    response_model=RelatedResponse,
    summary="Related articles for a stored article",
    description=(
        "The related list of an article in the index, after the ranking policy and the filters given. "
        "Responses carry an `ETag` (index version + article id + options) and `Cache-Control: public, "
        "max-age=…`; send the ETag back in `If-None-Match` to get `304 Not Modified` without a body. "
        "Article ids may contain any character: percent-encode them (`/` as `%2F`)."
    ),
    responses={**ERRORS, 304: {"description": "Not modified: the `If-None-Match` ETag still matches."}},
    openapi_extra={"parameters": [ARTICLE_ID, *query_parameters(RelatedParams)]},
)
async def related_to_article(request: Request) -> Response:
    # Unfiltered lists never get here: api.served_lists answers them in front of the router.
    # No parameters for FastAPI to resolve (its resolver cost about as much as the answer); the
    # OpenAPI parameters are declared above.
    return article_list_response(request, render, JSON)


def article_list_response(
    request: Request, renderer: Callable[[RelatedList], bytes], media_type: str, cache_prefix: str = ""
) -> Response:
    """A stored article's list rendered by `renderer`, with the ETag, 304 and response cache of the JSON route."""
    article_id: str = request.path_params["article_id"]
    parsed = parse_related_query(request.scope["query_string"])
    index = current_index(request)
    check_language(index, parsed.params.lang, "lang")
    headers = validators(request.app.state, index, article_id, parsed)
    if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    cache = request.app.state.cache
    key = cache_prefix + headers["ETag"]
    body = cache.get(key)
    if body is None:
        # A filtered list takes well under a millisecond in most cases: done inline, since a
        # thread hand-off cost more than the work (3x fewer req/s in benchmarks/api_throughput.py).
        body = renderer(index.for_article(article_id, parsed.query))
        cache.put(key, body)
    return Response(body, media_type=media_type, headers=headers)


ARTICLE_ROUTE = next(r for r in router.routes if getattr(r, "endpoint", None) is related_to_article)


@router.post(
    "/v1/related",
    response_model=RelatedResponse,
    summary="Related articles for an unsaved draft",
    description=(
        "Vectorizes the draft with the index's vocabulary and searches the whole index, then applies the same "
        "ranking policy and filters as the GET endpoint. At least one of `title` and `body` must be non-empty; "
        "the language is detected when `lang` is not given. Not cacheable (`Cache-Control: no-store`)."
    ),
    responses={422: ERRORS[422], 503: ERRORS[503], 413: {"model": ErrorResponse, "description": "`payload_too_large`"}},
)
async def related_to_draft(request: Request, draft: DraftRequest, index: IndexDep) -> Response:
    check_language(index, draft.lang, "body.lang")
    lang = draft.lang if draft.lang != ANY_LANGUAGE else None
    query = draft.to_query()
    result = await asyncio.get_running_loop().run_in_executor(
        request.app.state.ranker, partial(index.for_draft, draft.title, draft.body, lang, query)
    )
    return Response(render(result), media_type=JSON, headers={"Cache-Control": "no-store"})


def check_language(index: Any, lang: str | None, parameter: str) -> None:
    """A `lang` naming no language of the index is a client error, in GET and drafts alike: it could
    only give an empty list (GET) or analysis with no stop words or stemming (drafts)."""
    if lang is None or lang == ANY_LANGUAGE or lang in index.languages:
        return
    known = ", ".join(index.languages) or "none"
    raise ApiError(
        422, "invalid_parameter", f"{parameter}: {lang!r} is not one of this index's languages ({known}); "
        "name one of them or `any`", extra={"parameter": parameter},
    )
