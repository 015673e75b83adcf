"""Short-lived TURN credentials (the "TURN REST API" scheme coturn implements).

coturn started with ``use-auth-secret`` and ``static-auth-secret=SECRET`` accepts any
username of the form ``EXPIRY:USER`` (EXPIRY in Unix seconds) whose password is
``base64(HMAC-SHA1(SECRET, username))``, until EXPIRY. The node shares SECRET
(AIRCLASS_TURN_SECRET) with coturn and hands each viewer its own credentials; coturn
never needs to hear about viewers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

#: How long handed-out credentials stay valid by default (seconds). coturn checks the
#: expiry on every authenticated request, allocation refreshes included, so it must
#: cover a class; a viewer that reconnects gets fresh ones.
DEFAULT_TTL = 4 * 3600
_USER_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass(frozen=True, slots=True)
class IceServer:
    """One ICE server entry as WebRTC's RTCIceServer has it."""

    url: str
    username: str = ""
    credential: str = ""

    def as_dict(self) -> dict:
        """The RTCIceServer dictionary a browser takes (`urls`, `username`, `credential`)."""
        out: dict = {"urls": [self.url]}
        if self.username:
            out["username"] = self.username
            out["credential"] = self.credential
        return out


def turn_credentials(secret: str, user: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """(username, password) valid for `ttl` seconds from `now` for this user."""
    expiry = int(now if now is not None else time.time()) + int(ttl)
    safe_user = _USER_UNSAFE.sub("_", user)[:64] or "viewer"
    username = f"{expiry}:{safe_user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


class TurnCredentials:
    """Hands out the TURN servers of a node with fresh credentials per viewer."""

    def __init__(self, urls: list[str], secret: str, ttl: int = DEFAULT_TTL) -> None:
        self.urls = list(urls)
        self.secret = secret
        self.ttl = ttl

    @property
    def enabled(self) -> bool:
        return bool(self.urls and self.secret)

    def servers_for(self, user: str) -> list[IceServer]:
        """One entry per TURN URL, all with the same credentials (empty when disabled)."""
        if not self.enabled:
            return []
        username, credential = turn_credentials(self.secret, user, self.ttl)
        return [IceServer(url, username, credential) for url in self.urls]
