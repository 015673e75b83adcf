"""The cluster service of one node: heartbeats into the registry, routes viewers (main),
relays streams from the main (sub)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from relay.manager import RelayManager
from relay.server import SUB_KINDS, RelayServer

from ..errors import ApiError
from ..node import ClusterHooks, Node
from .assign import Assigner, NoCapacity
from .origins import OriginDirectory, OriginError
from .recordings import RecordingHandoff
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


class NodeMedia(Protocol):
    """What the cluster asks of the node's media services (delivery.media.MediaServices)."""

    viewers: object  # viewer_count, user_ids(): this node's load in the registry

    def drop_publisher(self, stream_name: str) -> None: ...


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
        # With Redis any node may be a stream's origin (its publisher is here): every
        # node then serves relays and pulls other nodes' streams from their origin.
        shared = bool(config.redis_url)
        self.relay_server = RelayServer() if self.role == "main" or shared else None
        #: Stream -> origin leases (origins.py); set at start when the registry is Redis.
        self.origins: OriginDirectory | None = None
        #: Each stream's running recording, for the next origin (recordings.py).
        self.recordings: RecordingHandoff | None = None
        self.relays: RelayManager | None = None
        if self.role == "sub" or shared:
            self.relays = RelayManager(
                node.hub, self.upstream, self.signer.request_headers, kinds=SUB_KINDS
            )
        #: node id -> wall time its relay connection broke: not routed to until it
        #: heartbeats again (a killed sub is skipped at once, not after its TTL).
        self._suspects: dict[str, float] = {}
        self._routing: list[NodeRecord] = []
        self._routing_at = 0.0
        self._registry_ok = True
        #: The node's media services (`serve`): built after the cluster, from its hooks.
        self._media: NodeMedia | None = None

    def hooks(self) -> ClusterHooks:
        """What the media services, delivery and token routes and the recorder take from
        the cluster (node.ClusterHooks)."""
        return ClusterHooks(
            viewer_router=self.route_viewer if self.role == "main" else None,
            stream_resolver=self.relays.resolve if self.relays is not None else None,
            claim_origin=self.claim_origin,
            release_origin=self.release_origin,
            recording_handoff=self.recording_handoff,
        )

    def serve(self, media: NodeMedia) -> None:
        """The node's media services, built from `hooks()`: the cluster reports their
        viewers and drops their publisher of a stream another node took over. The one
        cycle of the composition root (airclass_web.app.create_node), closed here."""
        self._media = media

    def recording_handoff(self) -> RecordingHandoff | None:
        """Where recordings are announced for the next origin: from start, with Redis."""
        return self.recordings

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.registry.start()
        if isinstance(self.registry, RedisRegistry):
            config = self.node.config
            self.origins = OriginDirectory(
                self.registry.redis, self.signer, config.node_id, config.http_url
            )
            self.recordings = RecordingHandoff(
                self.registry.redis, self.signer, config.node_id, config.record_offline_grace
            )
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
        viewers = self._media.viewers if self._media is not None else None
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
            await self._renew_origins()
            if self.recordings is not None:
                await self.recordings.renew()
            if self.role == "main":
                await self._routing_nodes()  # keep the routing copy warm

    async def nodes(self) -> list[NodeRecord]:
        return await self.registry.nodes()

    # -- origins: where each stream's publisher is ---------------------------------------
    async def upstream(self, stream: str) -> str | None:
        """Base URL of the node to relay `stream` from: its origin, else the main."""
        if self.origins is not None:
            try:
                origin = await self.origins.lookup(stream)
            except OriginError as exc:
                log.warning("cluster: origin of %s unknown: %s", stream, exc)
                origin = None
            if origin is not None:
                return None if origin.node_id == self.node.config.node_id else origin.url
        return self.node.config.main_url or None

    async def claim_origin(self, stream: str) -> str | None:
        """Make this node the stream's origin before its publisher is attached here.

        None when it is (or no registry is shared); else the URL of the live node that
        holds the stream. A holder gone from the registry (killed) is taken over."""
        if self.origins is None:
            return None
        try:
            if await self.origins.claim(stream) is None:
                holder = await self.origins.lookup(stream)
                alive = {n.node_id for n in await self.registry.nodes()}
                if holder is not None and holder.node_id in alive:
                    return holder.url
                await self.origins.claim(stream, force=True)
        except (OriginError, RegistryError) as exc:
            log.warning("cluster: origin of %s not claimed (%s): publishing anyway", stream, exc)
        if self.relays is not None and stream in self.relays.relays:
            await self.relays.drop(stream)  # it was relayed here from the old origin
        log.info("cluster: this node is the origin of %s", stream)
        return None

    async def release_origin(self, stream: str) -> None:
        if self.origins is not None:
            await self.origins.release(stream)

    async def _renew_origins(self) -> None:
        if self.origins is None or not self.origins.held:
            return
        try:
            lost = await self.origins.renew()
        except OriginError as exc:
            log.warning("cluster: origin leases not renewed: %s", exc)
            return
        for stream in lost:  # another node took it over: never serve a stale origin
            log.warning("cluster: %s moved to another origin; dropping its publisher here", stream)
            if self._media is not None:
                self._media.drop_publisher(stream)

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
            raise ApiError(
                503, str(exc), retry_after=int(retry_after), headers={"Retry-After": retry_after}
            ) from exc
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


CLUSTER = web.AppKey("cluster", Cluster)
