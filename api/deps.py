"""Dependencies routes declare in their signatures (`index: IndexDep`); tests may override them.

All are `async def`: FastAPI runs plain `def` dependencies in the thread pool, a thread hop
per dependency per request, which costs more than everything else these do.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.cache import ResponseCache
from api.errors import ApiError, no_index_error
from api.holder import IndexHolder
from api.metrics import Metrics
from api.schemas import LIST_OPTIONS, RelatedParams
from api.settings import Settings
from recommender.policy.ranking import RelatedQuery

if TYPE_CHECKING:
    from recommender.related import RelatedIndex
else:
    RelatedIndex = Any


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> IndexHolder:
    return request.app.state.holder


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_cache(request: Request) -> ResponseCache:
    return request.app.state.cache


def current_index(request: Request) -> RelatedIndex:
    """The index version for this request, grabbed once: a reload mid-request does not affect it."""
    holder: IndexHolder = request.app.state.holder
    index = holder.index
    if index is None:
        code, reason = holder.unavailable()
        raise no_index_error(reason, code)
    return index


async def get_index(request: Request) -> RelatedIndex:
    return current_index(request)


@dataclass(frozen=True)
class ParsedQuery:
    """A GET related query string, validated: the options, the ranking query and the ETag key."""

    params: RelatedParams
    query: RelatedQuery
    cache_key: list[Any]
    now_relative: bool  # the answer depends on the clock (max_age_days counted from now)


@lru_cache(maxsize=1024)
def parse_related_query(query_string: bytes) -> ParsedQuery:
    """Query string -> validated options, in one pydantic call; memoized (CMSs send few distinct ones).

    FastAPI's own query-model parsing inspects every field's annotation on every request and
    cost more than the rest of a cached GET; this does the same validation (unknown
    parameters ignored, list options repeatable) with the same 422 error locations. The
    OpenAPI parameters are declared on the route from the model (schemas.query_parameters).
    Callers share the result: never mutate it.
    """
    raw: dict[str, Any] = {}
    repeated: list[str] = []
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in RelatedParams.model_fields:
            if key in LIST_OPTIONS:
                raw.setdefault(key, []).append(value)
            elif key in raw:
                repeated.append(key)  # the OpenAPI says one value; which one did the caller mean?
            else:
                raw[key] = value
    if repeated:
        raise RequestValidationError([{"loc": ("query", key), "msg": "given more than once", "type": "repeated"}
                                      for key in dict.fromkeys(repeated)])
    try:
        params = RelatedParams.model_validate(raw)
    except ValidationError as err:
        raise RequestValidationError(
            [{"loc": ("query", *e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        ) from None
    now_relative = params.max_age_days is not None and params.relative_to == "now"
    return ParsedQuery(params, params.to_query(params.relative_to), params.cache_key(), now_relative)


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header(description="`Bearer <RELATED_ADMIN_TOKEN>`")] = None,
) -> None:
    """404 when no token is configured (the endpoint does not exist), 401 without a bearer token, 403 wrong token."""
    if settings.admin_token is None:
        raise ApiError(404, "not_found", "admin endpoints are disabled: set RELATED_ADMIN_TOKEN to enable them")
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, "unauthorized", "send `Authorization: Bearer <RELATED_ADMIN_TOKEN>`",
            headers={"WWW-Authenticate": 'Bearer realm="related-admin"'},
        )
    expected = settings.admin_token.get_secret_value().encode()
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected):
        raise ApiError(403, "forbidden", "wrong admin token")


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[IndexHolder, Depends(get_holder)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]
IndexDep = Annotated[RelatedIndex, Depends(get_index)]
AdminDep = Annotated[None, Depends(require_admin)]
