"""The one error type of a refused request, and the middleware that answers it as JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from aiohttp import web

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A refused request: HTTP `status` and `message`, extra JSON fields, extra headers.

    Raised by route handlers and by what they call (services, guards, access checks);
    `json_errors_middleware` answers it with ``{"error": message, "status": status, ...}``.
    Feature errors (ClassroomError, AccessDenied) are kinds of it.
    """

    def __init__(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers = dict(headers or {})

    def http(self) -> web.HTTPException:
        """The JSON HTTP answer."""
        error = json_error(self.status, self.message, **self.extra)
        error.headers.update(self.headers)
        return error


def json_error(status: int, message: str, **extra) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is ``{"error": message, "status": status, ...}``.
    For answers made outside a handler (a middleware's own); handlers raise ApiError."""
    body = json.dumps({"error": message, "status": status, **extra})
    exc = web.HTTPException(text=body, content_type="application/json")
    exc.set_status(status)
    return exc


@web.middleware
async def json_errors_middleware(request: web.Request, handler):
    """ApiError -> its JSON answer; aiohttp's plain-text errors (404, 405, 413, ...) -> JSON."""
    try:
        return await handler(request)
    except ApiError as exc:
        raise exc.http() from exc
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 413:
            message = "request body too large"
        log.info("%s %s -> %s %s", request.method, request.path, exc.status, message)
        raise json_error(exc.status, message) from None
