"""Related lists: for a stored article (GET, cacheable) and for an unsaved draft (POST)."""
from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic_core import to_json
from starlette.responses import Response

from api.cache import etag_for, etag_matches
from api.deps import IndexDep, current_index, parse_related_params
from api.errors import ApiError
from api.schemas import DraftRequest, ErrorResponse, RelatedParams, RelatedResponse, query_parameters

log = logging.getLogger("related.api")
router = APIRouter(tags=["related"])
JSON = "application/json"

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "`article_not_found`"},
    422: {"model": ErrorResponse, "description": "`invalid_parameter`: which parameter and why"},
    503: {"model": ErrorResponse, "description": "`no_index`: no index version loaded yet"},
}


def render(result: Any) -> bytes:
    """The response body; NaN/inf (never expected) become null rather than invalid JSON."""
    return to_json(
        {
            "article_id": result.article_id,
            "index_version": result.index_version,
            "fill_reason": result.fill_reason,
            "items": result.items,
        },
        inf_nan_mode="null",
    )


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
    openapi_extra={"parameters": query_parameters(RelatedParams)},
)
async def related_to_article(
    request: Request,
    article_id: Annotated[str, Path(description="The CMS id of the article, percent-encoded.")],
) -> Response:
    # The hot path: no dependencies (each costs a pass of FastAPI's resolver, about as much
    # as answering a precomputed list); options, index, cache and Cache-Control come
    # straight from the request and the app state.
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
        # A precomputed list is ~1 ms of work: done inline. Any thread hand-off cost more than
        # the work itself (3x fewer req/s in benchmarks/api_throughput.py).
        result = index.for_article(article_id, params.to_query(params.relative_to))
        body = render(result)
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
