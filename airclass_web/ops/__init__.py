"""Operating a node (issue 12): operator metrics, /health and /ready, the /admin page,
Prometheus service discovery; the `monitor`, `backup`, `restore` commands live here too.

`setup(app, registry)` registers its collectors into the node's /metrics registry
(`metrics.setup` returns it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..auth import TokenError, token_from_request
from ..cluster import CLUSTER
from ..cluster.registry import HEARTBEAT_SECONDS, RegistryError
from ..metrics import check_metrics_access
from ..node import NODE, Node
from . import admin, health
from .instruments import OpsMetrics

log = logging.getLogger(__name__)

OPS_METRICS = web.AppKey("ops_metrics", OpsMetrics)
WHEP_ROUTE = "/live/{stream}/whep"
#: Loggers whose ERROR records count in airclass_errors_total.
COUNTED_LOGGERS = ("airclass_web", "airclass_media", "recorder", "relay", "airclass", "aiohttp")


def _middleware(ops: OpsMetrics, node: Node):
    @web.middleware
    async def ops_middleware(request: web.Request, handler):
        started = time.perf_counter()
        timed = request.headers.get("Upgrade", "").lower() != "websocket"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if status == 201 and request.method == "POST":
                _note_viewer(ops, node, request, response)
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        except Exception:
            ops.errors.labels("exception").inc()
            raise
        finally:
            ops.observe(request, status, time.perf_counter() - started if timed else None)

    return ops_middleware


def _note_viewer(ops: OpsMetrics, node: Node, request: web.Request, response) -> None:
    """A WHEP session opened: remember its role for airclass_active_connections."""
    resource = request.match_info.route.resource
    if resource is None or resource.canonical != WHEP_ROUTE:
        return
    # The Location ends in PUBLIC.SECRET (session_urls.py): the public part is the id.
    session_id = response.headers.get("Location", "").rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        role = node.tokens.verify(token_from_request(request)).role
    except TokenError:
        return
    if session_id:
        ops.collector.viewer_roles[session_id] = role


async def _refresh_cluster(app: web.Application, ops: OpsMetrics) -> None:
    """Keep the registry copy the cluster metrics read up to date."""
    while True:
        try:
            ops.view.update(await app[CLUSTER].nodes())
        except RegistryError:
            ops.view.ok = False
        await asyncio.sleep(HEARTBEAT_SECONDS)


async def prometheus_targets(request: web.Request) -> web.Response:
    """Prometheus HTTP service discovery: every node of the registry (main and subs)."""
    check_metrics_access(request)
    try:
        records = await request.app[CLUSTER].nodes()
    except RegistryError as exc:
        return web.json_response({"error": f"registry unreachable: {exc}"}, status=503)
    groups = []
    for record in sorted(records, key=lambda r: (r.role != "main", r.url)):
        parts = urlsplit(record.url)
        if not parts.hostname:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        groups.append(
            {
                "targets": [f"{parts.hostname}:{port}"],
                "labels": {
                    "node_id": record.node_id,
                    "role": record.role,
                    "__scheme__": parts.scheme or "http",
                },
            }
        )
    return web.json_response(groups)


def setup(app: web.Application, registry: CollectorRegistry) -> None:
    """registry: the node's /metrics registry (metrics.setup)."""
    node = app[NODE]
    ops = OpsMetrics(node, app, registry)
    app[OPS_METRICS] = ops
    app.middlewares.insert(0, _middleware(ops, node))  # outermost: sees every answer
    for name in COUNTED_LOGGERS:
        logging.getLogger(name).addHandler(ops.log_handler)

    async def start() -> None:
        node.spawn(_refresh_cluster(app, ops), "ops-cluster-view")

    async def stop() -> None:
        for name in COUNTED_LOGGERS:
            with contextlib.suppress(ValueError):
                logging.getLogger(name).removeHandler(ops.log_handler)

    node.add_service("ops", start, stop)
    health.setup_routes(app, node)
    admin.setup_routes(app)
    app.router.add_get("/metrics/targets", prometheus_targets)
