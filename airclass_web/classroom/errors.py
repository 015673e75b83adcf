"""The one error type of the classroom services: an HTTP status, a message and a code."""

from __future__ import annotations

from ..errors import ApiError

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}


class ClassroomError(ApiError):
    """Refused request; routes answer JSON with `status` and `code`, the WebSocket an
    `error` message."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        self.code = code or CODES.get(status, "error")
        super().__init__(status, message, code=self.code)
