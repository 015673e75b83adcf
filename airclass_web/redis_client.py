"""Redis clients for every part of a node (registry, event bus, health), from one URL.

`redis://` and `rediss://` URLs go to redis-py as they are. A Sentinel-watched Redis is
named by the Sentinels and the master's name in one URL, so every existing
``--redis-url`` place takes it unchanged::

    redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME[/DB]

The client asks the Sentinels where the master is and asks again after a failover (redis-
py's `Sentinel.master_for`); the password is the data nodes' (the Sentinels are asked
without one unless ``?sentinel_password=`` is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


class RedisUrlError(ValueError):
    """A --redis-url that cannot be used."""


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int
    password: str | None
    sentinel_password: str | None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL (RedisUrlError when malformed)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise RedisUrlError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) if userinfo else None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise RedisUrlError(f"sentinel address {item!r}: expected HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise RedisUrlError("expected /MASTER_NAME or /MASTER_NAME/DB after the sentinels")
    query = parse_qs(parts.query)
    return SentinelUrl(
        sentinels=tuple(sentinels),
        master=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        password=password or None,
        sentinel_password=(query.get("sentinel_password") or [None])[0],
    )


def redis_client(url: str, **options) -> aioredis.Redis:
    """A redis.asyncio client for the URL; `options` are redis-py connection options."""
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        return aioredis.from_url(url, **options)
    spec = parse_sentinel_url(url)
    sentinel_options = {
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    if spec.sentinel_password:
        sentinel_options["password"] = spec.sentinel_password
    sentinel = Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_options)
    return sentinel.master_for(spec.master, db=spec.db, password=spec.password, **options)


def redact_url(url: str) -> str:
    """The URL without its password (for logs)."""
    try:
        parts = urlsplit(url)
        userinfo, at, hosts = parts.netloc.rpartition("@")
    except ValueError:
        return "<url>"
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))
