"""The one error type of the classroom services: an HTTP status and a message."""

from __future__ import annotations


class ClassroomError(Exception):
    """Refused request; routes answer JSON with `status`, the WebSocket an `error` message."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or {
            400: "bad_request",
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            409: "conflict",
            413: "too_large",
            429: "rate_limited",
        }.get(status, "error")
