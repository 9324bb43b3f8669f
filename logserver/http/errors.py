"""One error shape for every route: {"error": {"code", "message"}}.

Only 503 may be a 5xx: an unexpected exception is a bug and is logged with its
stack trace, but the client still gets a 503 without internals, so no input can
produce anything else in the 5xx range. Database outages are 503 with
Retry-After by design.
"""
from __future__ import annotations

import json
import logging

from aiohttp import web

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
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = json.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


_HTTP_CODES = {
    400: "bad_request", 404: "not_found", 405: "method_not_allowed", 408: "request_timeout",
    411: "length_required", 413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type",
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


def make_error_middleware(retry_after_s: int):
    """An error-only middleware (the witness server's; the log's also records metrics)."""
    @web.middleware
    async def error_middleware(request: web.Request, handler):
        try:
            return await handler(request)
        except Exception as e:  # not CancelledError (a BaseException): the client left
            return exception_response(request, e, retry_after_s)

    return error_middleware
