"""JSON errors for every failed request."""

from __future__ import annotations

import json
import logging

from aiohttp import web

log = logging.getLogger(__name__)


def json_error(status: int, message: str, **extra) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is ``{"error": message, ...}``."""
    body = json.dumps({"error": message, "status": status, **extra})
    exc = web.HTTPException(text=body, content_type="application/json")
    exc.set_status(status)
    return exc


@web.middleware
async def json_errors_middleware(request: web.Request, handler):
    """Turn aiohttp's plain-text errors (404, 405, 413, ...) into JSON ones."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json" or exc.status < 400:
            raise
        message = exc.reason
        if exc.status == 413:
            message = "request body too large"
        log.info("%s %s -> %s %s", request.method, request.path, exc.status, message)
        raise json_error(exc.status, message) from None
