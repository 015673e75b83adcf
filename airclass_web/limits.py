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

from .errors import ApiError

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


def too_many(message: str, retry_after: float) -> ApiError:
    """A JSON 429 with Retry-After (whole seconds, at least 1)."""
    seconds = max(1, math.ceil(retry_after))
    return ApiError(429, message, retry_after=seconds, headers={"Retry-After": str(seconds)})


def network_of(address: str) -> str:
    """The client's network: its /24 (IPv4) or /64 (IPv6); the address itself if unparsable."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


#: Password attempts: per client address, and per (account, client network): a burst of
#: 10, then one every 6 s. An attacker's guesses never spend the budget of the owner's
#: network, so they slow the attacker without locking the owner out.
PASSWORD_BURST, PASSWORD_REFILL = 10, 6.0
#: Per account over every network: 30 attempts, then one every 2 s. Past that ceiling (a
#: guessing botnet) each (account, network) also needs a "strict" token: 3, then one a
#: minute. The owner's network, with no failures lately, still has them.
ACCOUNT_BURST, ACCOUNT_REFILL = 30, 2.0
STRICT_BURST, STRICT_REFILL = 3, 60.0

PasswordKeys = tuple[str, tuple[str, str], str, bool]


class PasswordLimiter:
    """Every password attempt, on every route, counts here before the password is checked:
    per client address and per (account, client network); past a per-account ceiling,
    per (account, network) much more strictly. A success gives its attempts back, so only
    failures (and floods of concurrent guesses) use the budget up."""

    def __init__(
        self,
        burst: int = PASSWORD_BURST,
        refill: float = PASSWORD_REFILL,
        account_burst: int = ACCOUNT_BURST,
        account_refill: float = ACCOUNT_REFILL,
    ) -> None:
        self.by_ip = TokenBuckets(burst, refill)
        self.by_account_network = TokenBuckets(burst, refill)
        self.by_account = TokenBuckets(account_burst, account_refill)
        self.strict = TokenBuckets(STRICT_BURST, STRICT_REFILL)

    def attempt(self, ip: str, username: str) -> PasswordKeys:
        """Count one attempt or raise 429; returns the keys for `succeeded`."""
        user = username.lower()[:64]
        key = (user, network_of(ip))
        wait = self.by_ip.take(ip)
        if wait:
            raise too_many("too many password attempts from this address; wait", wait)
        wait = self.by_account_network.take(key)
        if wait:
            self.by_ip.give_back(ip)
            raise too_many("too many password attempts for this account; wait", wait)
        strict = bool(self.by_account.take(user))  # the account's ceiling is reached
        if strict:
            wait = self.strict.take(key)
            if wait:
                self.by_ip.give_back(ip)
                self.by_account_network.give_back(key)
                raise too_many("too many password attempts for this account; wait", wait)
        return ip, key, user, strict

    def succeeded(self, keys: PasswordKeys) -> None:
        ip, key, user, strict = keys
        self.by_ip.give_back(ip)
        self.by_account_network.give_back(key)
        if strict:
            self.strict.give_back(key)
        else:
            self.by_account.give_back(user)


#: All /api/token or /api/sessions/join requests of one address: a burst of 100 R, then
#: 10 R a second (R = --ip-rate-limit): a class of 450 behind one NAT joins at once. What
#: a flood gets out of it is cheap; refused requests (probing, guessing) have their own
#: budget of 10 R, then R a second.
REQUEST_BURST_FACTOR, REQUEST_RATE_FACTOR = 100, 10


class IpRateLimit:
    """Requests per client address on one route (e.g. /api/token, /api/sessions/join):
    all of them, and more strictly those the route refused (`refused`)."""

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        self.per_second = per_second
        self.buckets: TokenBuckets | None = None
        self.refusals: TokenBuckets | None = None
        if per_second > 0:
            burst = burst if burst is not None else max(per_second * 10, 1.0)
            self.refusals = TokenBuckets(burst, 1.0 / per_second)
            self.buckets = TokenBuckets(
                per_second * REQUEST_BURST_FACTOR, 1.0 / (per_second * REQUEST_RATE_FACTOR)
            )

    def check(self, ip: str, what: str) -> None:
        """Count one request of `ip`, or raise 429."""
        if self.buckets is None or self.refusals is None:
            return
        wait = self.refusals.wait(ip)
        if wait:
            raise too_many(f"too many refused {what} requests from this address; wait", wait)
        wait = self.buckets.take(ip)
        if wait:
            raise too_many(f"too many {what} requests from this address; slow down", wait)

    def refused(self, ip: str) -> None:
        """The route refused this address's request (4xx): it counts on the strict budget."""
        if self.refusals is not None:
            self.refusals.take(ip)
