"""Where AI provider calls may go (no SSRF through a teacher's base URL).

- An operator allowlist of the base URLs a teacher's OpenAI-compatible provider may use
  (`--ai-allowed-base-url`, repeatable); by default the public HTTPS API of OpenAI. A
  teacher's base URL must be one of them, when it is saved and again at every call.
  (Gemini's base URL is the operator's `--gemini-base-url`; teachers cannot set it.)
- Host names are resolved by `PublicResolver`, which refuses loopback, link-local, private,
  shared, multicast and reserved addresses (so a public name cannot be pointed at the
  node's own network by DNS). Only an entry whose host is an IP address, written by the
  operator, reaches such an address (aiohttp connects to IP literals without resolving).
- The HTTP session follows no redirects and ignores proxy variables (see `http_session`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

log = logging.getLogger(__name__)

#: Allowed when the operator names none.
DEFAULT_ALLOWED = ("https://api.openai.com",)
MAX_URL = 300


class BaseUrlRefused(ValueError):
    """A base URL this node does not call (the message names no upstream answer)."""


def normalise(url: str) -> str:
    """`scheme://host[:port][/path]` in one spelling: lower-case scheme and host, default
    port left out, no trailing `/` nor `/v1`. ValueError for anything but a plain
    http(s) URL (user info, query or fragment are refused)."""
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL:
        raise ValueError(f"an http(s) URL of at most {MAX_URL} characters")
    try:
        u = URL(url.strip())
    except ValueError as exc:
        raise ValueError("not a URL") from exc
    if u.scheme not in ("http", "https") or not u.host:
        raise ValueError("an http:// or https:// URL with a host")
    if u.user or u.password or u.query_string or u.fragment:
        raise ValueError("no user, password, query or fragment")
    host = u.host.lower().rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    port = "" if u.is_default_port() else f":{u.port}"
    path = u.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{u.scheme}://{host}{port}{path}"


def is_public(address: str) -> bool:
    """Whether an IP address is globally routable (not loopback, private, link-local,
    shared, multicast, unspecified or reserved)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class Allowlist:
    """The base URLs provider calls may use (normalised; exact match)."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls: list[str] = []
        for url in urls:
            try:
                entry = normalise(url)
            except ValueError as exc:
                raise ValueError(f"allowed AI base URL {url!r}: {exc}") from exc
            if entry not in self.urls:
                self.urls.append(entry)

    def check(self, url: str) -> str:
        """The normalised URL, or BaseUrlRefused."""
        try:
            entry = normalise(url)
        except ValueError as exc:
            raise BaseUrlRefused(f"not a usable base URL ({exc})") from exc
        if entry not in self.urls:
            raise BaseUrlRefused("not on this node's allowlist")
        return entry


class PublicResolver(DefaultResolver):
    """Resolves like aiohttp's default resolver, but refuses non-public addresses."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        for r in results:
            if not is_public(r["host"]):
                log.warning(
                    "ai: %s resolves to the non-public address %s: call refused", host, r["host"]
                )
                raise OSError(f"{host} resolves to a non-public address")
        return results


def http_session() -> aiohttp.ClientSession:
    """The session of provider calls: public-only DNS, no proxy from the environment.
    (Redirects: callers pass allow_redirects=False.)"""
    connector = aiohttp.TCPConnector(resolver=PublicResolver(), limit=20)
    return aiohttp.ClientSession(connector=connector, trust_env=False)
