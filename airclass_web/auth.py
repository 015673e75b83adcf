"""JWT tokens: who (role, user), may do what (action) on which stream / class session."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from .errors import ApiError

ROLES = ("teacher", "student", "monitor", "node", "admin")
ACTIONS = ("read", "publish", "admin")
STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # \Z: "$" accepts a trailing newline
ALGORITHM = "HS256"


class TokenError(Exception):
    """Missing, malformed, forged or expired token (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Claims:
    role: str
    user_id: str
    action: str
    stream: str  # a stream name, or "*" for any stream
    session_id: str
    expires_at: int
    #: When the token was issued (Unix seconds, millisecond precision): a password
    #: change revokes older teacher tokens.
    issued_at: float = 0.0

    def allows_stream(self, name: str) -> bool:
        return self.stream in ("*", name)


class TokenService:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        if not secret:
            raise ValueError("a JWT secret is required")
        self._secret = secret
        self.ttl = ttl_seconds
        #: Tokens issued per role since start (airclass_tokens_issued_total).
        self.issued: dict[str, int] = dict.fromkeys(ROLES, 0)

    def issue(
        self,
        *,
        role: str,
        user_id: str,
        action: str = "read",
        stream: str = "*",
        session_id: str = "",
        ttl: int | None = None,
    ) -> tuple[str, int]:
        """A signed token and its expiry (Unix seconds)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        self.issued[role] += 1
        issued = time.time()
        now = int(issued)
        expires_at = now + (ttl or self.ttl)
        payload = {
            "sub": user_id,
            "role": role,
            "action": action,
            "stream": stream,
            "sid": session_id,
            "iat": now,
            "iatm": int(issued * 1000),
            "exp": expires_at,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), expires_at

    def verify(self, token: str) -> Claims:
        if not token:
            raise TokenError("missing token")
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        role = payload.get("role")
        if role not in ROLES:
            raise TokenError("invalid token: unknown role")
        return Claims(
            role=role,
            user_id=str(payload["sub"]),
            action=str(payload.get("action", "read")),
            stream=str(payload.get("stream", "*")),
            session_id=str(payload.get("sid", "")),
            expires_at=int(payload["exp"]),
            issued_at=float(payload.get("iatm", payload.get("iat", 0) * 1000)) / 1000,
        )


#: A teacher's lasting RTMP stream key starts so (airclass_web/classroom/stream_keys.py).
STREAM_KEY_PREFIX = "sk_"


def split_stream_key(key: str) -> tuple[str, str]:
    """Split an RTMP stream key into (stream, token).

    The token is a JWT or a teacher's stream key (``sk_...``). Accepts
    ``stream?token=JWT`` (or ``?jwt=``, ``?key=``) and, for apps that cannot send a query,
    ``stream.JWT`` (stream names never contain a dot).
    """
    name, _, query = key.partition("?")
    token = ""
    if query:
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k in ("token", "jwt", "key"):
                token = v
    elif "." in name:
        name, _, token = name.partition(".")
    return name, token


def token_from_request(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query.get("jwt") or request.query.get("token") or ""


def require(
    request: web.Request,
    tokens: TokenService,
    *,
    roles: tuple[str, ...] = ROLES,
    action: str | None = None,
    stream: str | None = None,
) -> Claims:
    """Claims of the request's token, or a JSON 401 (bad token) / 403 (not allowed)."""
    try:
        claims = tokens.verify(token_from_request(request))
    except TokenError as exc:
        raise ApiError(401, str(exc)) from exc
    if claims.role not in roles:
        raise ApiError(403, f"role {claims.role} may not do this")
    if action is not None and claims.action != action and claims.action != "admin":
        raise ApiError(403, f"token is for action {claims.action}, not {action}")
    if stream is not None and not claims.allows_stream(stream):
        raise ApiError(403, f"token is not valid for stream {stream}")
    return claims
