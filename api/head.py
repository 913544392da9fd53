"""HEAD on every GET route: answered as the GET, without the body.

FastAPI routes declared with GET refuse HEAD (405), yet load balancers, uptime checks and
link checkers send HEAD. This runs the request as a GET (the method is switched back for
the middleware outside, so metrics label it HEAD) and drops the body, keeping every header,
Content-Length included, as RFC 9110 asks.
"""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        scope["method"] = "GET"  # in place: routing info the router adds stays visible outside
        try:
            await self.app(scope, receive, send_headers_only)
        finally:
            scope["method"] = "HEAD"
