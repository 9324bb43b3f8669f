"""One error shape for every route: {"error": {"code", "message"}}.

Only 503 may be a 5xx: an unexpected exception is a bug and is logged with its
stack trace, but the client still gets a 503 without internals, so no input can
produce anything else in the 5xx range. Database outages are 503 with
Retry-After by design.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http import HttpVersion10 as HTTP10
from aiohttp.http import HttpVersion11 as HTTP11
from aiohttp.typedefs import Handler, Middleware

from ..storage import DATABASE_UNAVAILABLE

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error response. `code` is a stable machine-readable string."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, code, message)


def error_response(status: int, code: str, message: str, *, retry_after: int | None = None) -> web.Response:
    """The one error shape. `application/json` without a charset, like every success
    (RFC 8259 §11 defines no charset parameter; JSON text is UTF-8)."""
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def version_error(request: web.BaseRequest) -> web.Response | None:
    """400 for a request line without an HTTP version (HTTP/0.9, which aiohttp accepts
    and would answer): RFC 9112 §2.3 requires HTTP-version in the request line."""
    if request.version < HTTP10:
        return error_response(400, "bad_request", "the request line has no HTTP version; send HTTP/1.0 or 1.1")
    return None


def make_expect_handler(max_body_bytes: int) -> Callable[[web.Request], Awaitable[web.Response | None]]:
    """The `Expect` handler of the routes that take a body (RFC 9110 §10.1.1).

    aiohttp's default answers `100 Continue` before anything looks at the request, so
    a client announcing a body over the limit is invited to send it, then gets 413.
    This answers 413 at once for a declared length over `max_body_bytes`, 417 for an
    expectation other than 100-continue, and 100 Continue otherwise (HTTP/1.1 only).
    Its response skips the middleware (aiohttp calls it first): it is complete here."""
    async def expect_handler(request: web.Request) -> web.Response | None:
        expect = request.headers.get("Expect", "")
        if expect.lower() != "100-continue":
            return error_response(417, "expectation_failed",
                                  f"unsupported Expect {expect[:40]!r}; only 100-continue is supported")
        length = request.content_length
        if length is not None and length > max_body_bytes:
            return error_response(413, "too_large",
                                  f"request body too large: {length} bytes declared, at most {max_body_bytes}")
        if request.version == HTTP11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    return expect_handler


_HTTP_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    411: "length_required", 413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type",
    417: "expectation_failed",
    429: "too_many_requests", 431: "headers_too_large",
}


def exception_response(request: web.Request, e: Exception, retry_after_s: int) -> web.Response:
    """The error response for an exception a handler raised (the API middleware's
    `except`). Re-raises an HTTPException below 400 (a redirect is not an error)."""
    if isinstance(e, ApiError):
        retry = e.retry_after if e.retry_after is not None else (retry_after_s if e.status == 503 else None)
        return error_response(e.status, e.code, e.message, retry_after=retry)
    if isinstance(e, web.HTTPException):
        if e.status < 400:
            raise e
        status = e.status if e.status < 500 else 503
        code = _HTTP_CODES.get(status, "unavailable" if status == 503 else "error")
        message = e.reason if e.status != 413 else f"request body too large: {e.text}"
        resp = error_response(status, code, message, retry_after=retry_after_s if status == 503 else None)
        if "Allow" in e.headers:  # RFC 9110 §15.5.6: a 405 MUST list the allowed methods
            resp.headers["Allow"] = e.headers["Allow"]
        return resp
    if isinstance(e, DATABASE_UNAVAILABLE):
        log.warning("database unavailable during %s %s: %r", request.method, request.path, e)
        return error_response(503, "database_unavailable", "the log database is unavailable; retry later",
                              retry_after=retry_after_s)
    log.error("internal error in %s %s", request.method, request.path, exc_info=e)
    return error_response(503, "internal_error", "internal error; retry later", retry_after=retry_after_s)


def make_error_middleware(retry_after_s: int) -> Middleware:
    """An error-only middleware (the witness server's; the log's also records metrics)."""
    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = version_error(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except Exception as e:  # not CancelledError (a BaseException): the client left
            return exception_response(request, e, retry_after_s)

    return error_middleware
