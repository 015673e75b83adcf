"""HMAC-SHA256 signatures with the cluster secret: node-to-node requests and registry entries.

A signed request carries its node id, a timestamp and a nonce; the main accepts it only
within MAX_SKEW seconds and only once (nonces are remembered for that window).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping

NODE_HEADER = "X-Airclass-Node"
TIME_HEADER = "X-Airclass-Time"
NONCE_HEADER = "X-Airclass-Nonce"
SIGNATURE_HEADER = "X-Airclass-Signature"
#: Largest accepted clock difference between nodes (seconds).
MAX_SKEW = 30.0


class SignatureError(Exception):
    """Missing, stale, replayed or forged signature."""


class Signer:
    """Signs and checks messages with one shared secret."""

    def __init__(self, secret: str, node_id: str = "") -> None:
        if not secret:
            raise ValueError("a cluster secret is required")
        self._key = hashlib.sha256(b"airclass-cluster:" + secret.encode()).digest()
        self.node_id = node_id
        self._nonces: dict[str, float] = {}

    def _mac(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    # -- requests --------------------------------------------------------------------
    def request_headers(self, method: str, path: str) -> dict[str, str]:
        """Headers that authenticate `method path` (path with its query) from this node."""
        stamp = f"{time.time():.3f}"
        nonce = secrets.token_hex(12)
        mac = self._mac("\n".join((method.upper(), path, stamp, nonce, self.node_id)))
        return {
            NODE_HEADER: self.node_id,
            TIME_HEADER: stamp,
            NONCE_HEADER: nonce,
            SIGNATURE_HEADER: mac,
        }

    def verify_request(self, method: str, path: str, headers: Mapping[str, str]) -> str:
        """The calling node's id, or SignatureError."""
        try:
            node_id = headers[NODE_HEADER]
            stamp = headers[TIME_HEADER]
            nonce = headers[NONCE_HEADER]
            given = headers[SIGNATURE_HEADER]
            sent_at = float(stamp)
        except (KeyError, ValueError) as exc:
            raise SignatureError("unsigned request") from exc
        now = time.time()
        if abs(now - sent_at) > MAX_SKEW:
            raise SignatureError(f"timestamp {now - sent_at:+.0f} s off")
        expected = self._mac("\n".join((method.upper(), path, stamp, nonce, node_id)))
        if not hmac.compare_digest(expected, given):
            raise SignatureError("bad signature")
        self._forget_nonces(now)
        if nonce in self._nonces:
            raise SignatureError("replayed request")
        self._nonces[nonce] = now + 2 * MAX_SKEW
        return node_id

    def _forget_nonces(self, now: float) -> None:
        if len(self._nonces) > 256:
            self._nonces = {n: t for n, t in self._nonces.items() if t > now}

    # -- documents (registry entries) ------------------------------------------------
    def seal(self, body: dict) -> str:
        """JSON text of `body` with its signature."""
        payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return json.dumps({"body": payload, "sig": self._mac(payload)})

    def unseal(self, text: str | bytes) -> dict:
        """The body of a sealed document, or SignatureError."""
        try:
            doc = json.loads(text)
            payload, given = doc["body"], doc["sig"]
            if not isinstance(payload, str) or not isinstance(given, str):
                raise TypeError("body and sig must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            raise SignatureError(f"malformed signed document: {exc}") from exc
        if not hmac.compare_digest(self._mac(payload), given):
            raise SignatureError("bad signature")
        body = json.loads(payload)
        if not isinstance(body, dict):
            raise SignatureError("signed body is not an object")
        return body
