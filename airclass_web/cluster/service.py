"""The cluster service of one node: heartbeats into the registry, routes viewers (main),
relays streams from the main (sub)."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from relay.manager import RelayManager
from relay.server import SUB_KINDS, RelayServer

from ..errors import json_error
from ..node import Node
from .assign import Assigner, NoCapacity
from .registry import (
    HEARTBEAT_SECONDS,
    InProcessRegistry,
    NodeRecord,
    RedisRegistry,
    Registry,
    RegistryError,
)
from .signing import Signer

log = logging.getLogger(__name__)

#: The main re-reads the registry for routing when its copy is older than this.
ROUTING_CACHE_SECONDS = 1.0
RETRY_AFTER_FULL = "10"
RETRY_AFTER_NONE = "5"


class Cluster:
    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config
        self.role = config.role
        # Standalone nodes sign their in-process records with the JWT secret.
        self.signer = Signer(config.cluster_secret or config.jwt_secret, config.node_id)
        self.registry: Registry = InProcessRegistry()
        if config.redis_url:
            self.registry = RedisRegistry(config.redis_url, self.signer)
        self.assigner = Assigner()
        self.relay_server = RelayServer() if self.role == "main" else None
        self.relays: RelayManager | None = None
        if self.role == "sub":
            self.relays = RelayManager(
                node.hub, config.main_url, self.signer.request_headers, kinds=SUB_KINDS
            )
        #: node id -> wall time its relay connection broke: not routed to until it
        #: heartbeats again (a killed sub is skipped at once, not after its TTL).
        self._suspects: dict[str, float] = {}
        self._routing: list[NodeRecord] = []
        self._routing_at = 0.0
        self._registry_ok = True

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.registry.start()
        await self._beat()
        if self.relays is not None:
            await self.relays.start()
        self.node.spawn(self._heartbeats(), "cluster-heartbeat")
        if self.role != "standalone" and not self.node.config.redis_url:
            log.warning(
                "cluster: %s node without --redis-url: its registry is in-process, so it "
                "cannot see the other nodes (set AIRCLASS_REDIS_URL on every node)",
                self.role,
            )
        log.info(
            "cluster: %s node %s at %s, registry %s",
            self.role,
            self.node.config.node_id,
            self.node.config.http_url,
            "redis" if self.node.config.redis_url else "in-process",
        )

    async def stop(self) -> None:
        if self.relay_server is not None:
            self.relay_server.close_all()
        if self.relays is not None:
            await self.relays.stop()
        try:
            await self.registry.withdraw(self.node.config.node_id)
        except RegistryError as exc:
            log.warning("cluster: could not withdraw from registry: %s", exc)
        await self.registry.stop()

    # -- registry --------------------------------------------------------------------
    def record(self) -> NodeRecord:
        config = self.node.config
        viewers = self.node.media.viewers if self.node.media is not None else None
        return NodeRecord(
            node_id=config.node_id,
            role=config.role,
            url=config.http_url,
            capacity=config.capacity,
            load=viewers.viewer_count if viewers is not None else 0,
            rtmp_url=config.rtmp_url if config.role != "sub" else "",
            streams=sorted(s.name for s in self.node.hub.live_streams()),
            viewers=sorted(viewers.user_ids()) if viewers is not None else [],
        )

    async def _beat(self) -> None:
        try:
            await self.registry.publish(self.record())
            if not self._registry_ok:
                log.info("cluster: registry reachable again")
            self._registry_ok = True
        except RegistryError as exc:
            if self._registry_ok:
                log.warning("cluster: heartbeat failed: %s", exc)
            self._registry_ok = False

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await self._beat()
            if self.role == "main":
                await self._routing_nodes()  # keep the routing copy warm

    async def nodes(self) -> list[NodeRecord]:
        return await self.registry.nodes()

    # -- main: viewer routing ----------------------------------------------------------
    async def _routing_nodes(self) -> list[NodeRecord]:
        now = time.monotonic()
        if now - self._routing_at > ROUTING_CACHE_SECONDS:
            try:
                self._routing = await self.registry.nodes()
                self._routing_at = now
            except RegistryError as exc:
                log.warning("cluster: registry unreachable, routing on last known nodes: %s", exc)
                self._routing = [n for n in self._routing if n.age < 30]
        return self._routing

    def suspect(self, node_id: str) -> None:
        """A sub's relay connection broke abnormally: skip it until its next heartbeat."""
        now = time.time()
        self._suspects = {n: t for n, t in self._suspects.items() if now - t < 60}
        self._suspects[node_id] = now
        log.info("cluster: %s lost its relay; not routed to until it heartbeats", node_id)

    async def route_viewer(self, user_id: str, stream: str) -> str | None:
        """Base URL of the sub this viewer should use; JSON 503 when none can."""
        nodes = await self._routing_nodes()
        if self._suspects:
            nodes = [n for n in nodes if n.heartbeat_at > self._suspects.get(n.node_id, 0)]
        try:
            node = self.assigner.choose(user_id, nodes)
        except NoCapacity as exc:
            retry_after = RETRY_AFTER_FULL if exc.full else RETRY_AFTER_NONE
            log.warning("cluster: no sub for %s on %s: %s", user_id, stream, exc)
            error = json_error(503, str(exc), retry_after=int(retry_after))
            error.headers["Retry-After"] = retry_after
            raise error from exc
        return node.url

    # -- metrics ---------------------------------------------------------------------
    def metrics(self) -> list:
        families: list = []
        if self.relay_server is not None:
            serving = GaugeMetricFamily(
                "airclass_relay_subs", "Relay connections served to sub nodes", labels=["stream"]
            )
            counts: dict[str, int] = {}
            for status in self.relay_server.status():
                counts[status["stream"]] = counts.get(status["stream"], 0) + 1
            for name, count in counts.items():
                serving.add_metric([name], count)
            families.append(serving)
        if self.relays is not None:
            hop = GaugeMetricFamily(
                "airclass_relay_hop_seconds",
                "Main received -> sub received, recent packets",
                labels=["stream", "quantile"],
            )
            connects = CounterMetricFamily(
                "airclass_relay_connects", "Relay connections made", labels=["stream"]
            )
            for client, _task in self.relays.relays.values():
                name = client.stream.name
                for q in (0.5, 0.95, 0.99):
                    hop.add_metric([name, str(q)], client.hop.percentile(q))
                connects.add_metric([name], client.connects)
            families += [hop, connects]
        return families
