"""Unguessable WHEP/WHIP session URLs: the Location is the capability to end or change a
session.

A session has a public id (in the viewer listing, logs, ETag) and a resource id,
`PUBLIC.SECRET`, where SECRET is 128 bits of HMAC-SHA256 over the kind, stream and public
id under a key drawn at node start. Only the POST that opened the session answers with the
resource id (its Location), so PATCH and DELETE work for the client that holds the
Location (any standard WHEP/WHIP client, the student page, the studio) and for nobody who
merely saw the public id. The check needs no state, so a late DELETE of a session that
already ended still proves itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: Bytes of the MAC in a resource id (128 bits).
SECRET_BYTES = 16


class SessionUrls:
    """Makes and checks resource ids of one node process's sessions."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _secret(self, kind: str, stream: str, public_id: str) -> str:
        message = f"{kind}\0{stream}\0{public_id}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:SECRET_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def resource_id(self, kind: str, stream: str, public_id: str) -> str:
        """`PUBLIC.SECRET`: the last path segment of the session's Location."""
        return f"{public_id}.{self._secret(kind, stream, public_id)}"

    def check(self, kind: str, stream: str, resource_id: str) -> tuple[str, bool]:
        """(public id, whether the secret is right) of a resource id from a URL."""
        public_id, dot, given = resource_id.rpartition(".")
        if not dot:
            return resource_id, False
        expected = self._secret(kind, stream, public_id)
        return public_id, hmac.compare_digest(given.encode(), expected.encode())
