"""Liveness and readiness: GET /health (the process answers) and GET /ready (Redis, the
store and, on a sub, the main node reachable; 503 naming what is down)."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from ..node import Node
from ..redis_client import redis_client

#: Each dependency gets this long to answer a readiness check (seconds).
CHECK_TIMEOUT = 2.0


@dataclass
class Check:
    ok: bool
    detail: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail}


class Readiness:
    """Checks the node's dependencies; one Redis client and HTTP session, reused."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._redis: aioredis.Redis | None = None
        self._http: aiohttp.ClientSession | None = None

    async def stop(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def redis(self) -> Check:
        url = self.node.config.redis_url
        if not url:
            return Check(True, "not used (in-process registry and events)")
        if self._redis is None:
            self._redis = redis_client(
                url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT
            )
        try:
            await asyncio.wait_for(self._redis.ping(), CHECK_TIMEOUT)
        except (RedisError, OSError, TimeoutError) as exc:
            return Check(False, f"unreachable ({type(exc).__name__})")
        return Check(True, "reachable")

    async def store(self) -> Check:
        store = self.node.store
        if store is None:
            return Check(False, "no store")
        try:
            await asyncio.wait_for(store.count("teachers"), CHECK_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return Check(False, f"{store.kind}: {type(exc).__name__}")
        return Check(True, store.kind)

    async def main(self) -> Check:
        config = self.node.config
        if config.role != "sub":
            return Check(True, "not a sub")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT))
        try:
            async with self._http.get(config.main_url.rstrip("/") + "/health") as resp:
                if resp.status != 200:
                    return Check(False, f"main answered {resp.status}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Check(False, f"main unreachable ({type(exc).__name__})")
        return Check(True, "reachable")

    def services(self) -> Check:
        started = {name for name, _s, _t in self.node._started}
        missing = [name for name, _s, _t in self.node._services if name not in started]
        return Check(not missing, ", ".join(f"{m} not running" for m in missing) or "running")

    def disk(self) -> Check:
        """Free disk for recordings: a warning, never a readiness failure."""
        config = self.node.config
        path = config.data_dir / "recordings"
        try:
            free = shutil.disk_usage(path if path.exists() else config.data_dir).free
        except OSError as exc:
            return Check(False, f"cannot measure ({type(exc).__name__})")
        free_mb = free / 1024 / 1024
        ok = free_mb >= config.min_free_disk_mb
        return Check(ok, f"{free_mb:.0f} MB free, minimum {config.min_free_disk_mb} MB")

    async def run(self) -> dict:
        """{"ready", "down", "checks", "warnings"}: ready when every required check is ok."""
        redis_c, store_c, main_c = await asyncio.gather(self.redis(), self.store(), self.main())
        checks = {
            "services": self.services(),
            "redis": redis_c,
            "store": store_c,
            "main": main_c,
        }
        down = [name for name, check in checks.items() if not check.ok]
        disk = self.disk()
        return {
            "ready": not down,
            "down": down,
            "checks": {name: check.as_dict() for name, check in checks.items()},
            "warnings": [] if disk.ok else [f"recording disk low: {disk.detail}"],
            "disk": disk.as_dict(),
        }


READINESS = web.AppKey("readiness", Readiness)


async def health(request: web.Request) -> web.Response:
    """Liveness: the process and its event loop answer."""
    from ..node import node_of

    config = node_of(request).config
    return web.json_response(
        {"status": "alive", "node_id": config.node_id, "role": config.role, "time": time.time()}
    )


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 when the node can serve, else 503 with what is down."""
    from ..node import node_of

    result = await request.app[READINESS].run()
    config = node_of(request).config
    body = {
        "status": "ready" if result["ready"] else "not_ready",
        "node_id": config.node_id,
        "role": config.role,
        **result,
    }
    return web.json_response(body, status=200 if result["ready"] else 503)


def setup_routes(app: web.Application, node: Node) -> None:
    readiness = Readiness(node)
    app[READINESS] = readiness
    node.add_service("readiness", _noop, readiness.stop)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)


async def _noop() -> None:
    return None
