"""Node registry: who is in the cluster, where, how loaded. Redis or in-process.

Each node writes a signed record under its own key with a TTL and rewrites it at every
heartbeat; a node that stops heartbeating drops out when its key expires. Records with a
bad signature, or too old to be a live heartbeat (a replay), are refused and logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..redis_client import redact_url, redis_client
from .signing import SignatureError, Signer

log = logging.getLogger(__name__)

KEY_PREFIX = "airclass:node:"
HEARTBEAT_SECONDS = 2.0
#: A record lives this long after its last heartbeat.
TTL_SECONDS = 6


class RegistryError(Exception):
    """The registry cannot be reached."""


@dataclass
class NodeRecord:
    node_id: str
    role: str
    url: str
    capacity: int
    load: int = 0
    rtmp_url: str = ""
    streams: list[str] = field(default_factory=list)
    #: User ids of the viewers on this node (keeps a returning student on their sub).
    viewers: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    heartbeat_at: float = field(default_factory=time.time)

    @property
    def full(self) -> bool:
        return self.load >= self.capacity

    @property
    def age(self) -> float:
        return time.time() - self.heartbeat_at

    def as_dict(self) -> dict:
        return asdict(self)

    def public(self) -> dict:
        """What /cluster/nodes shows (no user ids)."""
        body = self.as_dict()
        del body["viewers"]
        return {
            **body,
            "status": "full" if self.full else "ok",
            "age_s": round(max(self.age, 0.0), 1),
        }

    @classmethod
    def from_dict(cls, data: dict) -> NodeRecord:
        return cls(
            node_id=str(data["node_id"]),
            role=str(data["role"]),
            url=str(data["url"]),
            capacity=int(data["capacity"]),
            load=int(data.get("load", 0)),
            rtmp_url=str(data.get("rtmp_url", "")),
            streams=[str(s) for s in data.get("streams", [])],
            viewers=[str(v) for v in data.get("viewers", [])],
            started_at=float(data.get("started_at", 0)),
            heartbeat_at=float(data["heartbeat_at"]),
        )


class Registry(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, record: NodeRecord) -> None: ...
    async def withdraw(self, node_id: str) -> None: ...
    async def nodes(self) -> list[NodeRecord]: ...


class InProcessRegistry:
    """The single-node registry: a dict with the same expiry rules."""

    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self.ttl = ttl
        self._records: dict[str, NodeRecord] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._records.clear()

    async def publish(self, record: NodeRecord) -> None:
        self._records[record.node_id] = record

    async def withdraw(self, node_id: str) -> None:
        self._records.pop(node_id, None)

    async def nodes(self) -> list[NodeRecord]:
        return [r for r in self._records.values() if r.age <= self.ttl]


class RedisRegistry:
    """Records as signed JSON strings under `airclass:node:<id>` with a TTL."""

    def __init__(self, url: str, signer: Signer, ttl: int = TTL_SECONDS) -> None:
        self.url = url
        self.signer = signer
        self.ttl = ttl
        self._redis: aioredis.Redis | None = None
        #: Refused entries already logged (key, value) so a forgery is logged once.
        self._refused: set[tuple[str, bytes]] = set()

    async def start(self) -> None:
        self._redis = redis_client(
            self.url, socket_timeout=3, socket_connect_timeout=3, health_check_interval=10
        )
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            log.warning("registry: redis %s not reachable yet: %s", redact_url(self.url), exc)

    async def stop(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RegistryError("registry not started")
        return self._redis

    async def publish(self, record: NodeRecord) -> None:
        try:
            await self.redis.set(
                KEY_PREFIX + record.node_id, self.signer.seal(record.as_dict()), ex=self.ttl
            )
        except (RedisError, OSError) as exc:
            raise RegistryError(f"redis: {exc}") from exc

    async def withdraw(self, node_id: str) -> None:
        try:
            await self.redis.delete(KEY_PREFIX + node_id)
        except (RedisError, OSError) as exc:
            raise RegistryError(f"redis: {exc}") from exc

    async def nodes(self) -> list[NodeRecord]:
        try:
            keys = [k async for k in self.redis.scan_iter(match=KEY_PREFIX + "*", count=200)]
            values = await self.redis.mget(keys) if keys else []
        except (RedisError, OSError) as exc:
            raise RegistryError(f"redis: {exc}") from exc
        records = []
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue  # expired between SCAN and MGET
            record = self._check(key.decode(errors="replace"), value)
            if record is not None:
                records.append(record)
        return records

    def _check(self, key: str, value: bytes) -> NodeRecord | None:
        try:
            body = self.signer.unseal(value)
            record = NodeRecord.from_dict(body)
            if KEY_PREFIX + record.node_id != key:
                raise SignatureError(f"record of {record.node_id} under another key")
            if record.age > self.ttl + 5:
                raise SignatureError(f"heartbeat {record.age:.0f} s old (replayed?)")
        except (SignatureError, KeyError, ValueError, TypeError) as exc:
            if (key, value) not in self._refused:
                if len(self._refused) > 1000:
                    self._refused.clear()
                self._refused.add((key, value))
                log.warning("registry: refused node entry %s: %s", key, exc)
            return None
        return record
