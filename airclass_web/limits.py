"""Admission limits shared by the HTTP routes: the client address (X-Forwarded-For only
from a trusted proxy), per-IP request rates, and the one password-attempt limiter.

All in memory, per node: a cluster's teachers sign in on the main, students join there.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Hashable, Iterable

from aiohttp import web

from .errors import json_error

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> list[Network]:
    """IPs or CIDRs ("10.0.0.1", "10.0.0.0/8"); ValueError for a bad one."""
    return [ipaddress.ip_network(item.strip(), strict=False) for item in items if item.strip()]


def _in(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(request: web.Request, trusted: list[Network]) -> str:
    """The caller's address. X-Forwarded-For is believed only when the peer is a trusted
    proxy; then the right-most address that is not itself a trusted proxy is the client."""
    peer = request.remote or ""
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from the proxy's client: do not believe it
    return peer


class TokenBuckets:
    """Token buckets by key: `burst` at once, then one every `refill` seconds."""

    def __init__(self, burst: float, refill: float, max_keys: int = 100_000) -> None:
        self.burst, self.refill, self.max_keys = float(burst), float(refill), max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def _level(self, key: Hashable, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) / self.refill)

    def wait(self, key: Hashable, now: float | None = None) -> float:
        """Seconds until `take` would pass (0.0: now); consumes nothing."""
        now = time.monotonic() if now is None else now
        return max(0.0, (1.0 - self._level(key, now)) * self.refill)

    def take(self, key: Hashable, now: float | None = None) -> float:
        """Consume one token: 0.0 when allowed, else seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens = self._level(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) * self.refill
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_keys:  # forget full (idle) buckets
            cutoff = now - self.burst * self.refill
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > cutoff}
        return 0.0

    def give_back(self, key: Hashable, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._buckets[key] = (min(self.burst, self._level(key, now) + 1.0), now)


def too_many(message: str, retry_after: float) -> web.HTTPException:
    """A JSON 429 with Retry-After (whole seconds, at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    error = json_error(429, message, retry_after=seconds)
    error.headers["Retry-After"] = str(seconds)
    return error


class PasswordLimiter:
    """Every password attempt, on every route, counts here before the password is checked:
    per client address and per username. A success gives its attempt back, so only
    failures (and floods of concurrent guesses) use the budget up."""

    def __init__(self, burst: int = 10, refill: float = 6.0) -> None:
        self.by_ip = TokenBuckets(burst, refill)
        self.by_user = TokenBuckets(burst, refill)

    def attempt(self, ip: str, username: str) -> tuple[str, str]:
        """Count one attempt or raise 429; returns the keys for `succeeded`."""
        user = username.lower()[:64]
        wait_ip = self.by_ip.take(ip)
        if wait_ip:
            raise too_many("too many password attempts from this address; wait", wait_ip)
        wait_user = self.by_user.take(user)
        if wait_user:
            self.by_ip.give_back(ip)
            raise too_many("too many password attempts for this account; wait", wait_user)
        return ip, user

    def succeeded(self, keys: tuple[str, str]) -> None:
        ip, user = keys
        self.by_ip.give_back(ip)
        self.by_user.give_back(user)


class IpRateLimit:
    """Requests per client address on one route (e.g. /api/token, /api/sessions/join)."""

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        self.per_second = per_second
        burst = burst if burst is not None else max(per_second * 10, 1.0)
        self.buckets = TokenBuckets(burst, 1.0 / per_second) if per_second > 0 else None

    def check(self, ip: str, what: str) -> None:
        if self.buckets is None:
            return
        wait = self.buckets.take(ip)
        if wait:
            raise too_many(f"too many {what} requests from this address; slow down", wait)
