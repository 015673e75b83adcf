"""The operator's view of a cluster: nodes, load against capacity, streams, relays,
recordings disk, Redis and store state, capacity advice. Admin accounts are teacher
accounts marked `admin` (`airclass admin add NAME`); they sign in for a token of role
"admin", which only the /api/admin routes accept."""

from __future__ import annotations

import logging
import math
import time

import aiohttp_jinja2
from aiohttp import web

from ..auth import Claims, require
from ..cluster import CLUSTER
from ..cluster.registry import RegistryError
from ..delivery.shared import MEDIA
from ..errors import ApiError
from ..http import guards_of, request_params
from ..node import node_of
from ..recording import RECORDER
from .health import READINESS

log = logging.getLogger(__name__)

#: Past this share of the cluster's capacity the page advises adding a sub node.
ADVISE_ADD_SUB_PERCENT = 80.0
ADMIN_TOKEN_TTL = 8 * 3600


class AdminService:
    """Builds the overview; checks admin accounts."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    @property
    def node(self):
        from ..node import NODE

        return self.app[NODE]

    async def authenticate(self, username: str, password: str) -> dict | None:
        """The admin's account when the password matches and it is an admin, else None."""
        from ..classroom import CLASSROOM

        teacher = await self.app[CLASSROOM].teachers.authenticate(username, password)
        return teacher if teacher is not None and teacher.get("admin") else None

    async def still_admin(self, claims: Claims) -> bool:
        """The account exists, is an admin, and its password did not change since."""
        teacher = await self.node.store.get_teacher(claims.user_id)
        if teacher is None or not teacher.get("admin"):
            return False
        valid_after = float(teacher.get("tokens_valid_after") or 0)
        return claims.issued_at >= math.floor(valid_after * 1000) / 1000

    async def overview(self) -> dict:
        node = self.node
        config = node.config
        from . import OPS_METRICS

        ops = self.app[OPS_METRICS]
        cluster = self.app[CLUSTER]
        media = self.app.get(MEDIA)
        registry_ok = True
        try:
            records = await cluster.nodes()
        except RegistryError:
            records, registry_ok = ops.view.records, False
        nodes = []
        for r in sorted(records, key=lambda r: (r.role != "main", r.role, r.url)):
            body = r.public()
            body["load_percentage"] = round(100.0 * r.load / r.capacity, 1) if r.capacity else 0
            body["self"] = r.node_id == config.node_id
            nodes.append(body)
        for node_id, role in ops.view.down():
            nodes.append({"node_id": node_id, "role": role, "status": "down", "streams": []})
        load = sum(r.load for r in records)
        capacity = sum(r.capacity for r in records)
        percentage = round(100.0 * load / capacity, 1) if capacity else 0.0
        readiness = await self.app[READINESS].run()
        recorder = self.app.get(RECORDER)
        recordings = await recorder.storage() if recorder is not None else None
        relays: dict = {}
        if cluster.relay_server is not None:
            relays["serving"] = cluster.relay_server.status()
        if cluster.relays is not None:
            relays["pulling"] = cluster.relays.status()
        streams = [
            {
                "name": s.name,
                "live": s.live,
                "viewers": media.viewers.viewers_of(s.name) if media else 0,
                "subscribers": s.subscriber_count,
            }
            for s in sorted(node.hub.streams(), key=lambda s: s.name)
        ]
        return {
            "time": time.time(),
            "self": {"node_id": config.node_id, "role": config.role, "url": config.http_url},
            "cluster": {
                "nodes": len(records),
                "load": load,
                "capacity": capacity,
                "load_percentage": percentage,
                "registry": "redis" if config.redis_url else "in-process",
                "registry_ok": registry_ok,
            },
            "nodes": nodes,
            "streams": streams,
            "relays": relays,
            "recordings": recordings,
            "dependencies": readiness["checks"],
            "ready": readiness["ready"],
            "advice": self.advice(percentage, nodes, recordings, readiness),
        }

    @staticmethod
    def advice(percentage: float, nodes: list[dict], recordings, readiness: dict) -> list[dict]:
        """Codes (the page translates them) with their parameters, most urgent first."""
        out: list[dict] = []
        for n in nodes:
            if n["status"] == "down":
                out.append({"code": "node_down", "level": "critical", "node": n["node_id"]})
        for name in readiness["down"]:
            out.append({"code": "dependency_down", "level": "critical", "name": name})
        if percentage >= ADVISE_ADD_SUB_PERCENT:
            out.append({"code": "add_sub", "level": "warning", "percentage": percentage})
        for n in nodes:
            if n["status"] == "full":
                out.append({"code": "node_full", "level": "warning", "node": n["node_id"]})
        if recordings and recordings.get("low_disk"):
            out.append(
                {
                    "code": "disk_low",
                    "level": "warning",
                    "free_mb": round(recordings["disk_free_bytes"] / 1024 / 1024),
                }
            )
        return out


ADMIN = web.AppKey("admin_service", AdminService)


async def admin_claims(request: web.Request) -> Claims:
    """The claims of a valid admin token (401/403 otherwise)."""
    claims = require(request, node_of(request).tokens, roles=("admin",))
    if not await request.app[ADMIN].still_admin(claims):
        raise ApiError(401, "admin token revoked; sign in again")
    return claims


async def login(request: web.Request) -> web.Response:
    params = await request_params(request)
    username = str(params.get("username", ""))[:64]
    guards = guards_of(request)
    keys = guards.passwords.attempt(guards.ip(request), username)  # counts before checking
    account = await request.app[ADMIN].authenticate(username, str(params.get("password", "")))
    if account is None:
        raise ApiError(401, "wrong username or password, or not an admin account")
    guards.passwords.succeeded(keys)
    token, expires_at = node_of(request).tokens.issue(
        role="admin", user_id=account["username"], action="read", ttl=ADMIN_TOKEN_TTL
    )
    log.info("admin %s signed in", account["username"])
    return web.json_response(
        {"token": token, "expires_at": expires_at, "username": account["username"]}
    )


async def overview(request: web.Request) -> web.Response:
    await admin_claims(request)
    return web.json_response(await request.app[ADMIN].overview())


@aiohttp_jinja2.template("admin.html")
async def admin_page(request: web.Request) -> dict:
    return {}


def setup_routes(app: web.Application) -> None:
    app[ADMIN] = AdminService(app)
    app.router.add_post("/api/admin/login", login)
    app.router.add_get("/api/admin/overview", overview)
    app.router.add_get("/admin", admin_page)
