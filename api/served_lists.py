"""The hot path: unfiltered GET related requests answered from the precomputed served lists.

Almost every request a CMS sends is a sidebar for a stored article with no filters. Its answer
is an array lookup plus a body stitched from the items' stored JSON fragments (api.render):
about ten microseconds. Going through FastAPI's routing, dependency solving and response classes cost
more than that, so this pure ASGI middleware, inside the metrics and body-limit middleware,
answers those requests itself. Everything else (filters, `explain`, unknown articles, bad
parameters, no index loaded) falls through unchanged to the FastAPI route, which also holds
the OpenAPI description of this endpoint and is the one place errors are produced.
"""
from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api.cache import etag_for, etag_matches
from api.deps import ParsedQuery, parse_related_query
from api.render import ServedRenderer
from recommender.errors import ArticleNotFoundError

JSON = b"application/json"


def validators(state: Any, index: Any, article_id: str, parsed: ParsedQuery) -> dict[str, str]:
    """The caching headers of a related list (also used by the route, so both agree)."""
    etag = etag_for(index.name, article_id, parsed.cache_key, now_relative=parsed.now_relative)
    return {"ETag": etag, "Cache-Control": state.cache_control}


class ServedListsMiddleware:
    def __init__(self, app: ASGIApp, state: Any, route: BaseRoute) -> None:
        self.app = app
        self.state = state
        self.route = route  # the FastAPI route of this endpoint: metrics label requests with its template
        self.pattern = route.path_regex  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            answer = self.answer(scope)
            if answer is not None:
                scope["route"] = self.route
                status, headers, body = answer
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def answer(self, scope: Scope) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """(status, headers, body) when this request is a served list (200) or a still-valid one (304)."""
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        match = self.pattern.match(path)
        index = self.state.holder.index
        if match is None or index is None:
            return None
        article_id = match["article_id"]
        try:
            parsed = parse_related_query(scope["query_string"])
            served = index.served_list(article_id, parsed.query)
        except (RequestValidationError, ArticleNotFoundError):
            return None  # the route answers with the error
        if served is None:
            return None
        tags = validators(self.state, index, article_id, parsed)
        headers = [(k.lower().encode(), v.encode()) for k, v in tags.items()]
        for name, value in scope["headers"]:
            if name == b"if-none-match" and etag_matches(value.decode("latin-1"), tags["ETag"]):
                return 304, headers, b""
        renderer: ServedRenderer = self.state.renderer
        if renderer.index is not index:  # a swap since this request read the holder
            renderer = ServedRenderer(index)
        body = renderer.render(article_id, *served)
        return 200, [(b"content-type", JSON), (b"content-length", str(len(body)).encode()), *headers], body
