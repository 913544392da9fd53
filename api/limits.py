"""Request body size limit and request timeout, as small pure ASGI middleware (BaseHTTPMiddleware is slow).

The request head (line and headers) is bounded one layer down, in the HTTP protocol (api.http_protocol).

A declared Content-Length above the limit is answered 413 before a byte of the body is
read; a chunked body is counted as it streams in and refused once it passes the limit.

Many clients (urllib, requests) send the whole body before reading the response, and
closing a socket with unread data makes the kernel reset the connection, so such a client
would see "connection reset" instead of our 413. So when a response is complete while the
request body is not, the last response chunk is held back while the rest of the body is
read and discarded (bounded in bytes and time: a lingering close). Requests without a
body (GET) take a fast path through this middleware.
"""
from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge, error_body

DRAIN_MAX_BYTES = 64 << 20
DRAIN_MAX_SECONDS = 10.0


class _Body:
    __slots__ = ("received", "complete")

    def __init__(self) -> None:
        self.received = 0
        self.complete = False


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and not declared:  # no body: nothing to count or drain
            await self.app(scope, receive, send)
            return

        body = _Body()
        started = False

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    body.complete = True
                if body.received > self.limit:
                    raise PayloadTooLarge(self.limit)
            elif message["type"] == "http.disconnect":
                body.complete = True
            return message

        async def lingering_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and not body.complete:
                await send({**message, "more_body": True})
                await self._drain(receive, body)
                await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        if declared is not None and declared > self.limit:
            await self._refuse(lingering_send)
            return
        try:
            await self.app(scope, counting_receive, lingering_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(lingering_send)

    @staticmethod
    async def _drain(receive: Receive, body: _Body) -> None:
        """Read and discard the rest of the request body (bounded), so the client reads our response."""
        drained = 0
        with anyio.move_on_after(DRAIN_MAX_SECONDS):
            while not body.complete and drained <= DRAIN_MAX_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body.complete = True
                drained += len(message.get("body", b""))

    async def _refuse(self, send: Send) -> None:
        await _send_error(send, 413, "payload_too_large", f"request body is larger than {self.limit} bytes", [])


class RequestTimeoutMiddleware:
    """Answers a request that is not done within `seconds`: 408 while its body is still arriving
    (a client trickling bytes holds a connection and a task), 503 when the work took too long.

    Placed behind the served-lists layer, so precomputed GETs (an array lookup) skip the timer.
    Paths under `exempt` are not timed: an admin update that finishes after its client was told
    it failed would be worse than a slow answer.
    """

    def __init__(self, app: ASGIApp, seconds: float, exempt: str = "/v1/admin/") -> None:
        self.app = app
        self.seconds = seconds
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        body = _Body()
        started = False

        async def tracking_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body.complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        with anyio.move_on_after(self.seconds) as timer:
            await self.app(scope, tracking_receive, tracking_send)
        if not timer.cancelled_caught or started:
            return  # a response cut short after its start just ends; the client sees a short body
        if body.complete or not _has_body(scope):
            await _send_error(send, 503, "timeout", f"no answer within {self.seconds:g} s; try again later",
                              [(b"retry-after", b"5")])
        else:
            await _send_error(send, 408, "request_timeout", f"the request body did not arrive within {self.seconds:g} s",
                              [(b"connection", b"close")])


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


async def _send_error(send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(error_body(code, message), separators=(",", ":")).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": payload})
