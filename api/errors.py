"""Every error leaves the API as JSON: {"error": {"code": "...", "message": "..."}}.

Routes raise `ApiError` (or let the library's named exceptions through); FastAPI's own
404/405/422 and anything unexpected are converted here, so a client never sees HTML or a
bare 500 page.
"""
from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from index.errors import NoIndexError, StorageError
from recommender.errors import ArticleNotFoundError

log = logging.getLogger("related.api")

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_parameter",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
    507: "insufficient_storage",
}
RETRY_AFTER_SECONDS = "5"
BODY_PARSE_ERROR = "There was an error parsing the body"  # FastAPI's 400 detail
FULL_ERRNOS = (None, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # None: a short write (numpy's, on a full disk)


class ApiError(Exception):
    """An error with a stable machine-readable code, raised by routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra or {}


class PayloadTooLarge(StarletteHTTPException):
    """Raised while a body is being received once it passes the limit (see api.limits)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def no_index_error(detail: str | None = None, code: str = "no_index") -> ApiError:
    """503 while nothing is served: `no_index` (nothing built, or refused) or `loading`."""
    return ApiError(
        503, code, detail or "no index version is loaded yet: run `related build`",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
    )


def storage_refused(err: StorageError) -> ApiError:
    """507 Insufficient Storage (RFC 4918) when the file system refuses to store what a request writes:
    `insufficient_storage` for a full disk or quota, `storage_not_writable` for a read-only file system
    or a permission refused. Nothing was changed (the partial version was removed); retrying helps only
    once an operator made room, so no Retry-After."""
    code = "insufficient_storage" if err.errno in FULL_ERRNOS else "storage_not_writable"
    log.error("write refused by the file system: %s", err)
    return ApiError(507, code, str(err))


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    """('query', 'limit') -> 'limit'; ('body', 'title') -> 'body.title'; ('body', 12) -> 'body'."""
    parts = list(loc)
    if parts and parts[0] == "body":
        return ".".join(["body", *(str(p) for p in parts[1:] if isinstance(p, str))])
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "request"


def validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = err.get("loc", ())
        details.append({"parameter": _location(loc), "message": str(err.get("msg", "invalid")), "type": err.get("type")})
    return details


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    details = validation_details(exc)
    if any(d["type"] == "json_invalid" for d in details):
        return error_response(422, "invalid_json", "request body is not valid JSON", parameter="body")
    first = details[0] if details else {"parameter": "request", "message": "invalid request"}
    message = "; ".join(f"{d['parameter']}: {d['message']}" for d in details) or "invalid request"
    return error_response(422, "invalid_parameter", message, parameter=first["parameter"], details=details)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, headers=exc.headers, **exc.extra)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:  # e.g. a body that is not UTF-8
        return error_response(422, "invalid_json", "request body is not valid JSON (UTF-8)", parameter="body")
    code = STATUS_CODES.get(exc.status_code, "error")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _article_not_found(request: Request, exc: ArticleNotFoundError) -> Response:
    return error_response(404, "article_not_found", str(exc))


async def _no_index(request: Request, exc: NoIndexError) -> Response:
    error = no_index_error(str(exc))
    return error_response(error.status, error.code, error.message, headers=error.headers)


async def _storage_error(request: Request, exc: StorageError) -> Response:
    return await _api_error(request, storage_refused(exc))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error; the failure has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ArticleNotFoundError, _article_not_found)
    app.add_exception_handler(NoIndexError, _no_index)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(Exception, _internal_error)
