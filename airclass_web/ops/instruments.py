"""The operator's metrics (design names): HTTP requests, connections by role, tokens, errors,
cluster totals, host CPU and memory, and the standard process collector.

Counters only go up: HTTP and error counters are prometheus_client objects; the others are
read at scrape time from counters the node keeps.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..delivery.shared import MEDIA
from ..node import Node

log = logging.getLogger(__name__)

#: Roles counted in airclass_active_connections.
CONNECTION_ROLES = ("teacher", "student", "monitor")
#: Nodes that left the registry are reported "down" this long (seconds).
DOWN_MEMORY_SECONDS = 3600.0
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ErrorCounter(logging.Handler):
    """Counts ERROR log records by component (airclass_errors_total{type})."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(level=logging.ERROR)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        parts = record.name.split(".")
        kind = parts[1] if parts[0] == "airclass_web" and len(parts) > 1 else parts[0]
        self.counter.labels(kind[:32]).inc()


def _host_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / ticks, idle / ticks


def _host_memory() -> tuple[int, int]:
    """(total, available) bytes of the machine, from /proc/meminfo."""
    values: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


class ClusterView:
    """The registry as this node last read it (refreshed by a task; read at scrape)."""

    def __init__(self) -> None:
        self.records: list = []
        #: node id -> (role, last time seen) for nodes that left the registry.
        self.seen: dict[str, tuple[str, float]] = {}
        self.ok = False

    def update(self, records: list) -> None:
        now = time.time()
        self.records = records
        self.ok = True
        for r in records:
            self.seen[r.node_id] = (r.role, now)
        self.seen = {k: v for k, v in self.seen.items() if now - v[1] < DOWN_MEMORY_SECONDS}

    def down(self) -> list[tuple[str, str]]:
        """(node id, role) of nodes seen lately that are no longer in the registry."""
        present = {r.node_id for r in self.records}
        return [(k, role) for k, (role, _) in self.seen.items() if k not in present]

    def totals(self) -> dict:
        load = sum(r.load for r in self.records)
        capacity = sum(r.capacity for r in self.records)
        return {
            "load": load,
            "capacity": capacity,
            "percentage": 100.0 * load / capacity if capacity else 0.0,
        }


class OpsCollector:
    """Scrape-time families: connections, tokens, cluster, capacity, host, disk threshold."""

    def __init__(self, node: Node, app: web.Application, view: ClusterView) -> None:
        self.node = node
        self.app = app
        self.view = view
        #: WHEP session id -> role of the token that opened it (set by the middleware).
        self.viewer_roles: dict[str, str] = {}

    def connections(self) -> dict[str, int]:
        counts = dict.fromkeys(CONNECTION_ROLES, 0)
        media = self.app.get(MEDIA)
        if media is not None:
            for sid, role in list(self.viewer_roles.items()):
                if media.viewers.active(sid):
                    counts[role] = counts.get(role, 0) + 1
                else:
                    del self.viewer_roles[sid]
        from ..classroom import CLASSROOM

        classroom = self.app.get(CLASSROOM)
        if classroom is not None:
            for room in list(classroom.hub.rooms.values()):
                for client in list(room.clients):
                    if client.role in counts:
                        counts[client.role] += 1
        return counts

    def collect(self) -> Iterator:
        node, config = self.node, self.node.config
        streams = GaugeMetricFamily("airclass_active_streams", "Streams with a publisher")
        streams.add_metric([], len(node.hub.live_streams()))
        yield streams
        conns = GaugeMetricFamily(
            "airclass_active_connections",
            "WebRTC viewers and class WebSocket clients on this node, by role",
            labels=["type"],
        )
        for role, count in self.connections().items():
            conns.add_metric([role], count)
        yield conns
        tokens = CounterMetricFamily(
            "airclass_tokens_issued", "Tokens issued by this node, by role", labels=["role"]
        )
        for role, count in node.tokens.issued.items():
            tokens.add_metric([role], count)
        yield tokens
        capacity = GaugeMetricFamily("airclass_node_capacity", "Viewers this node serves at most")
        capacity.add_metric([], config.capacity)
        yield capacity
        info = GaugeMetricFamily(
            "airclass_node_info", "This node (always 1)", labels=["node_id", "role"]
        )
        info.add_metric([config.node_id, config.role], 1)
        yield info
        yield from self._cluster()
        yield from self._host()

    def _cluster(self) -> Iterator:
        view = self.view
        nodes = GaugeMetricFamily(
            "airclass_cluster_nodes_total", "Cluster nodes by status", labels=["status"]
        )
        statuses = {"ok": 0, "full": 0, "down": len(view.down())}
        for r in view.records:
            statuses["full" if r.full else "ok"] += 1
        for status, count in statuses.items():
            nodes.add_metric([status], count)
        totals = view.totals()
        load = GaugeMetricFamily(
            "airclass_cluster_load_percentage", "Viewers against capacity, whole cluster (%)"
        )
        load.add_metric([], totals["percentage"])
        conns = GaugeMetricFamily("airclass_cluster_connections", "Viewers, whole cluster")
        conns.add_metric([], totals["load"])
        cap = GaugeMetricFamily("airclass_cluster_capacity", "Viewer capacity, whole cluster")
        cap.add_metric([], totals["capacity"])
        labels = ["node", "role"]
        per_load = GaugeMetricFamily(
            "airclass_cluster_node_load", "Viewers per node", labels=labels
        )
        per_cap = GaugeMetricFamily(
            "airclass_cluster_node_capacity", "Capacity per node", labels=labels
        )
        for r in view.records:
            per_load.add_metric([r.node_id, r.role], r.load)
            per_cap.add_metric([r.node_id, r.role], r.capacity)
        yield from (nodes, load, conns, cap, per_load, per_cap)

    def _host(self) -> Iterator:
        config = self.node.config
        try:
            busy, idle = _host_cpu()
            total, available = _host_memory()
        except (OSError, ValueError, IndexError):
            return
        cpu = CounterMetricFamily(
            "airclass_host_cpu_seconds", "CPU seconds of the machine", labels=["mode"]
        )
        cpu.add_metric(["busy"], busy)
        cpu.add_metric(["idle"], idle)
        memory = GaugeMetricFamily(
            "airclass_host_memory_bytes", "Memory of the machine", labels=["kind"]
        )
        memory.add_metric(["total"], total)
        memory.add_metric(["available"], available)
        yield from (cpu, memory)
        recordings = config.data_dir / "recordings"
        try:
            disk = shutil.disk_usage(recordings if recordings.exists() else config.data_dir)
        except OSError:
            return
        disk_total = GaugeMetricFamily(
            "airclass_recording_disk_total_bytes", "Size of the recordings' file system"
        )
        disk_total.add_metric([], disk.total)
        threshold = GaugeMetricFamily(
            "airclass_recording_disk_min_free_bytes",
            "Free disk below which recordings stop (--min-free-disk-mb)",
        )
        threshold.add_metric([], config.min_free_disk_mb * 1024 * 1024)
        yield from (disk_total, threshold)


class OpsMetrics:
    """Every operator metric of one node, registered in the node's /metrics registry."""

    def __init__(self, node: Node, app: web.Application, registry: CollectorRegistry) -> None:
        self.node = node
        self.view = ClusterView()
        self.requests = Counter(
            "airclass_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "airclass_http_request_duration_seconds",
            "HTTP request handling time by route (WebSocket sessions excluded)",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "airclass_errors", "Errors: HTTP 5xx answers and ERROR log lines", ["type"],
            registry=registry,
        )  # fmt: skip
        for kind in ("http_5xx", "exception"):
            self.errors.labels(kind)  # present at 0 from the start
        self.collector = OpsCollector(node, app, self.view)
        registry.register(self.collector)
        ProcessCollector(registry=registry)
        self.log_handler = ErrorCounter(self.errors)

    def observe(self, request: web.Request, status: int, seconds: float | None) -> None:
        """One finished request (seconds None: a WebSocket, not timed)."""
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        self.requests.labels(request.method, name, str(status)).inc()
        if seconds is not None:
            self.duration.labels(name).observe(seconds)
        if status >= 500:
            self.errors.labels("http_5xx").inc()
