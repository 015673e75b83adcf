"""GET /metrics: Prometheus metrics read from the node's live state at scrape time."""

from __future__ import annotations

import asyncio
import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .errors import ApiError
from .node import NODE, Node


class NodeCollector:
    """Reads counters that the media code keeps as plain attributes."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self):
        hub = self.node.hub
        streams = hub.streams()
        live = GaugeMetricFamily("airclass_streams_live", "Streams with a publisher")
        live.add_metric([], sum(1 for s in streams if s.live))
        yield live
        subs = GaugeMetricFamily(
            "airclass_stream_subscribers", "Subscribers per stream", labels=["stream"]
        )
        packets = CounterMetricFamily(
            "airclass_stream_packets_in", "Packets received per stream", labels=["stream"]
        )
        data = CounterMetricFamily(
            "airclass_stream_bytes_in", "Bytes received per stream", labels=["stream"]
        )
        dropped = CounterMetricFamily(
            "airclass_stream_packets_dropped",
            "Packets dropped for slow subscribers (resync to next keyframe)",
            labels=["stream"],
        )
        for s in streams:
            subs.add_metric([s.name], s.subscriber_count)
            packets.add_metric([s.name], s.packets_in)
            data.add_metric([s.name], s.bytes_in)
            dropped.add_metric([s.name], sum(sub.dropped for sub in s.subscribers()))
        yield from (subs, packets, data, dropped)
        yield from self.node.extra_metrics()


def check_metrics_access(request: web.Request) -> None:
    """/metrics names every stream: it needs `Authorization: Bearer AIRCLASS_METRICS_TOKEN`
    (open without one only under --dev)."""
    config = request.app[NODE].config
    if config.metrics_token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), config.metrics_token.encode()):
            raise ApiError(401, "metrics need Authorization: Bearer AIRCLASS_METRICS_TOKEN")
    elif not config.dev:
        raise ApiError(403, "metrics are off: set AIRCLASS_METRICS_TOKEN to scrape them")


async def metrics(request: web.Request) -> web.Response:
    check_metrics_access(request)
    registry: CollectorRegistry = request.app[REGISTRY]
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


#: Event-loop lag above which a node reports itself degraded (503).
MAX_LOOP_LAG = 1.0


async def health(request: web.Request) -> web.Response:
    """Real state: which services started, and how late the event loop runs a callback.
    200 with status "ok" only when every service started and the loop keeps up."""
    node = request.app[NODE]
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await asyncio.sleep(0)  # back in the loop's queue: waits behind whatever is ready
    lag = loop.time() - asked
    wanted = [name for name, _start, _stop in node._services]
    started = [name for name, _start, _stop in node._started]
    problems = [f"service {name} not running" for name in wanted if name not in started]
    if lag > MAX_LOOP_LAG:
        problems.append(f"event loop lag {lag * 1000:.0f} ms")
    return web.json_response(
        {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "services": started,
            "loop_lag_ms": round(lag * 1000, 3),
            "role": node.config.role,
            "node_id": node.config.node_id,
            "streams_live": len(node.hub.live_streams()),
        },
        status=503 if problems else 200,
    )


def setup(app: web.Application) -> CollectorRegistry:
    """/metrics and /api/health; the registry other features add their collectors to."""
    registry = CollectorRegistry()
    registry.register(NodeCollector(app[NODE]))
    app[REGISTRY] = registry
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/health", health)
    return registry
