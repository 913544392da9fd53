"""Related lists: for a stored article (GET, cacheable) and for an unsaved draft (POST)."""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.cache import etag_for, etag_matches
from api.deps import IndexDep, current_index, parse_related_params
from api.errors import ApiError
from api.render import ServedRenderer, render
from api.schemas import DraftRequest, ErrorResponse, RelatedParams, RelatedResponse, query_parameters

log = logging.getLogger("related.api")
router = APIRouter(tags=["related"])
JSON = "application/json"

ARTICLE_ID = {
    "name": "article_id", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "The CMS id of the article, percent-encoded.",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`article_not_found`"},
    422: {"model": ErrorResponse, "description": "`invalid_parameter`: which parameter and why"},
    503: {"model": ErrorResponse, "description": "`no_index`: no index version loaded yet"},
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
    # The hot path: no parameters for FastAPI to resolve (its resolver costs about as much as
    # answering a precomputed list); the id, options, index, cache and Cache-Control come
    # straight from the request and the app state. OpenAPI gets the parameters declared above.
    article_id: str = request.path_params["article_id"]
    params = parse_related_params(request)
    index = current_index(request)
    state = request.app.state
    now_relative = params.max_age_days is not None and params.relative_to == "now"
    etag = etag_for(index.name, article_id, params.cache_key(), now_relative=now_relative)
    headers = {"ETag": etag, "Cache-Control": state.cache_control}
    cache = state.cache
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    body = cache.get(etag)
    if body is None:
        # Tens of microseconds of work: done inline. A thread hand-off would cost more than
        # the work itself (3x fewer req/s in benchmarks/api_throughput.py).
        query = params.to_query(params.relative_to)
        served = index.served_list(article_id, query)
        if served is not None:
            renderer = state.renderer
            if renderer.index is not index:  # a request that began on the previous version
                renderer = ServedRenderer(index)
            body = renderer.render(article_id, *served)
        else:
            body = render(index.for_article(article_id, query))
        cache.put(etag, body)
    return Response(body, media_type=JSON, headers=headers)


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
    lang = draft.lang if draft.lang != "any" else None
    languages = index.config.text.languages
    if lang is not None and lang not in languages:
        raise ApiError(
            422, "invalid_parameter", f"lang: {lang!r} is not one of this index's languages ({', '.join(languages)})",
            extra={"parameter": "body.lang"},
        )
    query = draft.to_query()
    result = await asyncio.get_running_loop().run_in_executor(
        request.app.state.ranker, partial(index.for_draft, draft.title, draft.body, lang, query)
    )
    return Response(render(result), media_type=JSON, headers={"Cache-Control": "no-store"})
