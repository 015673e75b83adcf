"""Wire the media services into a node: RTMP ingest with token checks, WebRTC viewers.

Viewers are served by the node process itself (`--workers 1`) or by media worker
processes (`workers.pool`); either way every WHEP offer first takes an admission ticket
(capacity, per-user and per-IP caps), released when the offer fails or the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from airclass_media.hub import Stream, StreamBusy
from airclass_media.ice import restrict_host_addresses, restrict_udp_ports
from airclass_media.ingest import PublishSession
from airclass_media.ladder import Ladder, parse_ladder
from airclass_media.rtmp.server import PublishRejected, PublishRequest, RtmpServer
from airclass_media.webrtc import WebRtcEgress

from ..access import AccessDenied
from ..auth import STREAM_KEY_PREFIX, STREAM_NAME, Claims, TokenError, split_stream_key
from ..limits import parse_networks
from ..node import ClusterHooks, Node
from ..session_urls import SessionUrls
from ..store import StoreError
from ..viewer_grants import ViewerGrants
from .workers.admission import (
    Admission,
    NodeFull,
    Ticket,
    TooManyPending,
    TooManySessions,
)
from .workers.pool import WorkerPool
from .workers.viewers import LocalViewers, Opened, Viewers

log = logging.getLogger(__name__)

RTMP_APP = "live"
#: How long a WHEP offer waits for one of its address's pending slots (then 429).
PENDING_WAIT_SECONDS = 30.0
DEMO_STREAM = "demo"


def _query_token(url: str) -> str:
    _, _, query = url.partition("?")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key in ("token", "jwt", "key"):
            return value
    return ""


class MediaServices:
    """RTMP ingest + WebRTC egress of one node."""

    def __init__(self, node: Node, cluster: ClusterHooks) -> None:
        self.node = node
        #: Origin claims and the pulling of other nodes' streams (cluster.Cluster.hooks).
        self.cluster = cluster
        config = node.config
        self.admission = Admission(
            config.capacity,
            config.max_viewers_per_user,
            config.max_viewers_per_ip or 0,
            config.max_pending_per_ip or 0,
        )
        #: Open sessions' tickets, and the stream each one watches.
        self._tickets: dict[str, tuple[Ticket, str]] = {}
        #: Offers admitted and not answered yet, by (user, address, stream).
        self._opening: Counter[tuple[str, str, str]] = Counter()
        #: Resource ids (Location URLs) of WHEP and WHIP sessions: the secret that ends them.
        self.urls = SessionUrls()
        #: Proxies whose X-Forwarded-For gives a viewer's address (per-IP cap).
        self.trusted_proxies = parse_networks(config.trusted_proxies)
        #: The in-process egress (`--workers 1`), None with media workers.
        self.egress: WebRtcEgress | None = None
        self.viewers: Viewers
        if config.workers > 1:
            self.viewers = WorkerPool(
                config,
                node.hub,
                on_closed=self._session_closed,
                on_connected=self._session_connected,
            )
        else:
            self.egress = WebRtcEgress(
                config.ice_servers, capacity=config.capacity, public_ips=config.ice_public_ips
            )
            self.viewers = LocalViewers(
                self.egress,
                on_closed=self._session_closed,
                resolve=self._find_stream,
                on_connected=self._session_connected,
            )
        #: Renditions encoded once per source stream, on the node its publisher is on
        #: (a stream relayed from another node has its ladder there: Ladder.wants).
        self.ladder: Ladder | None = Ladder(node.hub, parse_ladder(config.ladder))
        #: Each open viewer session's grant, asked again while it lasts.
        self.grants = ViewerGrants(node, self.viewers.close)
        self.rtmp = RtmpServer(
            config.host,
            config.rtmp_port if config.plain_rtmp else None,
            self.authorize_publish,
            max_connections=config.rtmp_max_connections,
            max_per_ip=config.rtmp_max_per_ip,
            tls=node.tls.context if node.tls else None,  # RTMPS next to RTMP
            tls_port=config.rtmps_port,
        )
        self.publishers: dict[str, PublishSession] = {}
        self.demo: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def start(self) -> None:
        config = self.node.config
        if self.egress is not None:  # workers apply their own ICE settings
            restrict_host_addresses(config.ice_hosts)
            if config.udp_ports:
                restrict_udp_ports(asyncio.get_running_loop(), *config.udp_ports)
        await self.viewers.start()  # media workers, when there are
        try:
            if self.ladder is not None:
                await self.ladder.start()
            await self.rtmp.start()  # OSError: the RTMP port is busy
        except BaseException:
            await self.stop()  # no worker outlives a failed start
            raise
        self.node.spawn(self._forget_idle_streams(), "forget-idle-streams")
        self.node.spawn(self.grants.run(), "viewer-grants")
        if config.demo:
            self.start_demo()

    def start_demo(self, stream: str = DEMO_STREAM) -> None:
        """Publish a test pattern with a tone and a clock to our own RTMP port."""
        config = self.node.config
        token, _ = self.node.tokens.issue(
            role="teacher",
            user_id="demo-publisher",
            action="publish",
            stream=stream,
            ttl=10 * 365 * 86400,
        )
        host = "127.0.0.1" if config.host in ("0.0.0.0", "", "::") else config.host
        url = f"rtmp://{host}:{self.rtmp.port}/{RTMP_APP}/{stream}?token={token}"
        self.node.hub.stream(stream)
        self.node.spawn(self._run_demo(url), "demo-publisher")
        log.info("demo stream %r: test pattern, tone and clock", stream)

    async def _run_demo(self, url: str) -> None:
        """Keep a test publisher process running (its own process: see testsource.main)."""
        while True:
            self.demo = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "airclass_media.testsource",
                url,
                stdin=asyncio.subprocess.DEVNULL,
            )
            code = await self.demo.wait()
            if self._stopping:
                return
            log.warning("demo publisher exited with %s; restarting", code)
            await asyncio.sleep(2)

    async def stop(self) -> None:
        self._stopping = True
        if self.demo is not None and self.demo.returncode is None:
            self.demo.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.demo.wait(), 5)
        await self.rtmp.stop()
        if self.ladder is not None:
            await self.ladder.stop()
        await self.viewers.stop()

    async def _find_stream(self, name: str) -> Stream | None:
        stream = self.node.hub.get(name)
        if stream is None and self.cluster.stream_resolver is not None:
            stream = await self.cluster.stream_resolver(name)
        return stream

    async def _forget_idle_streams(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.node.hub.forget_idle(idle_seconds=self.node.config.token_ttl)

    async def authorize_publish(self, request: PublishRequest) -> PublishSession:
        """Check the publish token and claim the stream, or raise PublishRejected."""
        app = request.app.split("?")[0].strip("/")
        if app != RTMP_APP:
            raise PublishRejected("NetStream.Publish.BadName", f"unknown app {app!r}; use /live")
        stream_name, token = split_stream_key(request.stream_key)
        token = token or _query_token(request.app) or _query_token(request.tc_url)
        if not STREAM_NAME.match(stream_name):
            raise PublishRejected("NetStream.Publish.BadName", "bad stream name")
        if token.startswith(STREAM_KEY_PREFIX):
            claims = await self._stream_key_claims(token, stream_name)
        else:
            try:
                claims = self.node.tokens.verify(token)
            except TokenError as exc:
                raise PublishRejected("NetStream.Publish.Rejected", f"unauthorized: {exc}") from exc
        if claims.role != "teacher" or claims.action not in ("publish", "admin"):
            raise PublishRejected("NetStream.Publish.Rejected", "token may not publish")
        if not claims.allows_stream(stream_name):
            raise PublishRejected("NetStream.Publish.Rejected", "token is for another stream")
        try:  # a revoked token, or another teacher's stream (ownership: airclass_web.access)
            if not token.startswith(STREAM_KEY_PREFIX):
                await self.node.access.check_teacher_token(claims)
            await self.node.access.claim(stream_name, claims.user_id)
        except AccessDenied as exc:
            raise PublishRejected("NetStream.Publish.Rejected", exc.message) from exc
        except StoreError as exc:
            raise PublishRejected("NetStream.Publish.Failed", f"store: {exc}") from exc
        if self.cluster.claim_origin is not None:  # a cluster: one origin per stream
            holder = await self.cluster.claim_origin(stream_name)
            if holder is not None:
                raise PublishRejected(
                    "NetStream.Publish.BadName", f"stream {stream_name} is live on {holder}"
                )
        stream = self.node.hub.stream(stream_name)
        publisher_id = f"rtmp-{request.peer}-{secrets.token_hex(3)}"
        try:
            stream.attach_publisher(publisher_id)
        except StreamBusy as exc:
            raise PublishRejected(
                "NetStream.Publish.BadName", f"stream {stream_name} already has a publisher"
            ) from exc
        session = PublishSession(stream, publisher_id, on_close=self._publisher_closed)
        self.publishers[publisher_id] = session
        log.info("rtmp %s: %s publishes %s", request.peer, claims.user_id, stream_name)
        return session

    async def _stream_key_claims(self, key: str, stream_name: str) -> Claims:
        """Publish claims of the teacher whose lasting stream key this is."""
        keys = self.node.stream_keys
        try:
            teacher = await keys.teacher_of(key) if keys is not None else None
        except StoreError as exc:
            raise PublishRejected("NetStream.Publish.Failed", f"store: {exc}") from exc
        if teacher is None:
            raise PublishRejected(
                "NetStream.Publish.Rejected", "unauthorized: unknown or rotated stream key"
            )
        return Claims("teacher", teacher, "publish", stream_name, "", 0)

    # -- viewers ---------------------------------------------------------------------
    async def open_viewer(self, stream: Stream, offer_sdp: str, user_id: str, ip: str) -> Opened:
        """Admit and open a viewer session.

        Raises AdmissionRefused (node full, too many sessions), BadOffer or Overloaded.
        The slot is reserved before the offer goes on, so concurrent offers cannot
        overshoot; an address's offers past its pending cap wait for earlier ones to
        connect. When the node or the address is full, a viewer back after a network drop
        takes the seat of its old session, or of another returned viewer's old one (same
        address and stream; the old session lives until ICE consent fails, ~30 s).
        """
        ticket = await self._admit(stream.name, user_id, ip)
        opening = (user_id, ip, stream.name)
        self._opening[opening] += 1
        try:
            if stream.info.webrtc_default:  # on a sub: pull the rendition from the main
                await self._find_stream(stream.info.webrtc_default)
            opened = await self.viewers.open(stream, offer_sdp, user_id)
        except BaseException:
            ticket.release()
            raise
        finally:
            self._opening[opening] -= 1
            if self._opening[opening] <= 0:
                del self._opening[opening]
        if self.viewers.active(opened.id):
            self._tickets[opened.id] = (ticket, stream.name)
        else:
            ticket.release()  # it ended while its answer was on the way
        return opened

    async def _admit(self, stream_name: str, user_id: str, ip: str) -> Ticket:
        """A ticket for this offer; when the node or the address is full, a returning
        viewer's leftover seat is taken back and handed to this offer in the same step."""
        for _ in range(3):
            try:
                return await self.admission.reserve_waiting(user_id, ip, PENDING_WAIT_SECONDS)
            except (NodeFull, TooManySessions) as exc:
                if isinstance(exc, TooManyPending) or (
                    not isinstance(exc, NodeFull) and self.admission.over_user_cap(user_id)
                ):
                    raise
                stale = self._oldest_session_of(stream_name, user_id, ip)
                if stale is None:
                    raise
                log.info("viewer %s back on %s: old session %s ends", user_id, stream_name, stale)
                self._session_closed(stale)  # its seat is free: no other offer may take it
                try:
                    ticket = self.admission.reserve(user_id, ip)
                except TooManyPending:
                    await self.viewers.close(stale, stream_name)
                    continue  # queue for a pending slot like any other offer
                try:
                    await self.viewers.close(stale, stream_name)
                except BaseException:
                    ticket.release()
                    raise
                return ticket
        return await self.admission.reserve_waiting(user_id, ip, PENDING_WAIT_SECONDS)

    def _oldest_session_of(self, stream_name: str, user_id: str, ip: str) -> str | None:
        """A seat to take back for a viewer of this address coming back: its own oldest
        session on the stream, else the oldest session of a viewer of this address that has
        a newer one on the stream, or one being opened (its leftover from before the drop)."""
        newest: dict[str, str] = {}
        for session_id, (ticket, name) in self._tickets.items():  # oldest first
            if name == stream_name and ticket.ip == ip:
                if ticket.user_id == user_id:
                    return session_id
                newest[ticket.user_id] = session_id
        for session_id, (ticket, name) in self._tickets.items():
            if (
                name == stream_name
                and ticket.ip == ip
                and (
                    newest[ticket.user_id] != session_id
                    or (ticket.user_id, ip, stream_name) in self._opening
                )
            ):
                return session_id
        return None

    def _session_connected(self, session_id: str) -> None:
        entry = self._tickets.get(session_id)
        if entry is not None:
            entry[0].mark_connected()

    def _session_closed(self, session_id: str) -> None:
        self.grants.discard(session_id)
        entry = self._tickets.pop(session_id, None)
        if entry is not None:
            entry[0].release()

    def metrics(self) -> list:
        """Prometheus families for the media path (read at every scrape)."""
        refused = CounterMetricFamily(
            "airclass_whep_refused", "WHEP offers refused by admission", labels=["reason"]
        )
        for reason in ("capacity", "user", "ip", "ip_pending"):
            refused.add_metric([reason], self.admission.refused[reason])
        transcode = CounterMetricFamily(
            "airclass_audio_transcode_seconds", "CPU time spent in AAC->Opus", labels=["stream"]
        )
        rtmp = GaugeMetricFamily("airclass_rtmp_connections", "Open RTMP connections")
        rtmp.add_metric([], len(self.rtmp.connections))
        for session in self.publishers.values():
            transcode.add_metric([session.stream.name], session.transcode_seconds)
        ladder = self.ladder.metrics() if self.ladder is not None else []
        return [*self.viewers.metrics(), refused, transcode, rtmp, *ladder]

    def drop_publisher(self, stream_name: str) -> None:
        """Another node became this stream's origin: end the RTMP publisher here."""
        for connection in list(self.rtmp.connections):
            handler = connection.handler
            if isinstance(handler, PublishSession) and handler.stream.name == stream_name:
                connection.writer.close()

    def _publisher_closed(self, session: PublishSession) -> None:
        self.publishers.pop(session.publisher_id, None)
        if self.cluster.release_origin is not None and not session.stream.live:
            self.node.spawn(
                self.cluster.release_origin(session.stream.name), f"release-{session.stream.name}"
            )
