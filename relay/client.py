"""Sub side of the relay: pull one stream from the main and publish it into the local hub.

On the sub the relay is the stream's publisher: it attaches when the main says the
stream is live, detaches when the main's publisher leaves or the connection drops, and
reconnects by itself with backoff. The hub timeline continues across all of these, so
viewers on the sub keep their peer connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

import aiohttp

from airclass_media.hub import RENDITION_SEPARATOR, Stream, StreamBusy
from airclass_media.packets import MediaPacket
from airclass_media.webrtc import LatencyStats

from . import framing
from .server import DEFAULT_KINDS

log = logging.getLogger(__name__)

#: Backoff between reconnects (seconds): doubles from MIN to MAX, with jitter.
BACKOFF_MIN = 0.25
BACKOFF_MAX = 2.0
HEARTBEAT_SECONDS = 5.0
#: Spacing of the GOP frames handed over at connect (microseconds), as for new viewers.
CATCH_UP_STEP_US = 1000

#: (method, path with query) -> headers that authenticate this node to the main.
Signer = Callable[[str, str], dict[str, str]]
#: () -> base URL of the node to pull a stream from now, None when none has it.
Upstream = Callable[[], Awaitable[str | None]]
#: Source stream name -> (upstream publisher session, main dts -> local dts offset):
#: shared by the relays of one node so a source and its ladder rungs (class1,
#: class1~540p, ...) keep one timeline here, as on their origin; a viewer switches
#: between them at keyframes of the same pts.
Timelines = dict[str, tuple[str, int]]


class StreamNotFound(Exception):
    """The main has no such stream (HTTP 404)."""


class RelayRefused(Exception):
    """The main refused the relay (401, 403, ...): retrying will not help soon."""


class RelayClient:
    """Pulls `stream` from its upstream node until `close()`.

    `upstream` is the base URL of the node to pull from, or an async function that names
    it at each (re)connection (the stream's origin, which may move to another node) or
    None when no node has the stream."""

    _ids = itertools.count(1)

    def __init__(
        self,
        stream: Stream,
        upstream: str | Upstream,
        sign: Signer,
        http: aiohttp.ClientSession,
        kinds: Iterable[str] = DEFAULT_KINDS,
        timelines: Timelines | None = None,
    ) -> None:
        self.stream = stream
        self.family = stream.name.split(RENDITION_SEPARATOR, 1)[0]
        self.timelines: Timelines = {} if timelines is None else timelines
        self.kinds = tuple(kinds)
        self.path = f"/cluster/relay/{stream.name}"
        self._upstream = upstream
        self.url = ""
        self.sign = sign
        self.http = http
        #: Relay hop: main received -> sub received (wall clock), live packets only.
        self.hop = LatencyStats()
        self.connects = 0
        self.packets = 0
        self.bytes = 0
        self.last_error = ""
        self.connected = False
        #: Set once the first connection answered (found or not found).
        self.answered = asyncio.Event()
        #: Set when the main said it has no such stream on the first try.
        self.not_found = False
        #: Set at each first keyframe after (re)connecting.
        self.keyframe = asyncio.Event()
        self._publisher_id: str | None = None
        self._main_publisher = ""
        self._next_cached: int | None = None
        self._live_offset: int | None = None
        self._follows_family = False
        self._closed = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self) -> None:
        """Connect, relay, reconnect with backoff, until `close()`."""
        delay = BACKOFF_MIN
        while not self._closed:
            started = time.monotonic()
            try:
                await self._relay_once()
            except StreamNotFound:
                self.last_error = "stream not found on main"
                if not self.answered.is_set():
                    self.not_found = True
            except (aiohttp.ClientError, RelayRefused, framing.FramingError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.info("relay %s: %s", self.stream.name, self.last_error)
            except Exception as exc:  # noqa: BLE001 - keep relaying whatever happened
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("relay %s failed", self.stream.name)
            finally:
                self.connected = False
                self.answered.set()
                self._detach()
            if self._closed:
                break
            if time.monotonic() - started > 10:
                delay = BACKOFF_MIN  # it ran a while: reconnect at once
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, BACKOFF_MAX)

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
        self._detach()

    async def _relay_once(self) -> None:
        base = self._upstream if isinstance(self._upstream, str) else await self._upstream()
        if not base:
            raise StreamNotFound(self.stream.name)
        self.url = f"{base.rstrip('/')}{self.path}?kinds={','.join(self.kinds)}"
        headers = self.sign("GET", self.path)
        try:
            ws = await self.http.ws_connect(
                self.url, headers=headers, heartbeat=HEARTBEAT_SECONDS, max_msg_size=0
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                raise StreamNotFound(self.stream.name) from exc
            raise RelayRefused(f"main answered {exc.status}") from exc
        self._ws = ws
        self.connects += 1
        self.connected = True
        self.keyframe.clear()
        log.info("relay %s: connected to %s (#%d)", self.stream.name, self.url, self.connects)
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        raise aiohttp.ClientError(f"websocket error: {ws.exception()}")
                    continue
                self._on_frame(framing.decode(msg.data))
        finally:
            self._ws = None
            await ws.close()
        if not self._closed:
            raise aiohttp.ClientError(f"main closed the relay (code {ws.close_code})")

    def _on_frame(self, frame: framing.PacketFrame | framing.InfoFrame) -> None:
        self.answered.set()
        if isinstance(frame, framing.InfoFrame):
            self._on_info(frame)
            return
        if self._publisher_id is None:
            return  # main not live: nothing to publish
        packet = frame.packet
        if not frame.cached:
            self.hop.record(time.time() - frame.sent_at)
        self.packets += 1
        self.bytes += len(packet.data)
        packet = self._to_timeline(packet, frame.cached)
        if packet.kind == "video" and packet.keyframe:
            self.keyframe.set()
        self.stream.publish(packet)

    def _to_timeline(self, packet: MediaPacket, cached: bool) -> MediaPacket:
        """Main timeline -> this stream's timeline, continuing where the last session ended.

        The GOP handed over at connect is squeezed CATCH_UP_STEP_US apart just before the
        first live packet: viewers already watching resync at once and stay at live
        latency, instead of receiving seconds of old video stamped as if it were new.
        A rung (or source) whose family is already relayed here from the same upstream
        publisher takes that family's offset instead, cached GOP included.
        """
        session = self._main_publisher.removeprefix("ladder-")
        if self._next_cached is None:
            self._next_cached = self.stream.timeline(0)  # the session's resume point
            shared = self.timelines.get(self.family)
            self._follows_family = shared is not None and shared[0] == session
            self._live_offset = shared[1] if self._follows_family and shared else None
        if cached and not self._follows_family:
            dts = self._next_cached
            self._next_cached += CATCH_UP_STEP_US
        else:
            if self._live_offset is None:
                self._live_offset = self._next_cached - packet.dts
                self.timelines[self.family] = (session, self._live_offset)
            dts = packet.dts + self._live_offset
        if dts == packet.dts:
            return packet
        return dataclasses.replace(packet, pts=packet.pts - packet.dts + dts, dts=dts)

    def _on_info(self, frame: framing.InfoFrame) -> None:
        if self._publisher_id is not None and (
            not frame.live or frame.publisher != self._main_publisher
        ):
            self._detach()  # the main's publisher left or was replaced
        self._main_publisher = frame.publisher
        if frame.live and self._publisher_id is None:
            publisher_id = f"relay-{next(self._ids)}"
            try:
                self.stream.attach_publisher(publisher_id)
            except StreamBusy:
                log.warning("relay %s: stream has a local publisher", self.stream.name)
                return
            self._publisher_id = publisher_id
            self._next_cached = None  # a new session on the stream timeline
        if self._publisher_id is not None:
            self.stream.info = frame.info
            # Viewers here that lose the picture ask the real publisher (WHIP) through
            # the relay; otherwise the fan-out replays the cached GOP to them.
            self.stream.keyframe_requester = (
                self._request_keyframe if frame.keyframes_on_demand else None
            )

    def _request_keyframe(self) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            task = asyncio.ensure_future(ws.send_str(framing.KEYFRAME_REQUEST))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _detach(self) -> None:
        if self._publisher_id is not None:
            self.stream.detach_publisher(self._publisher_id)
            self._publisher_id = None

    def status(self) -> dict:
        return {
            "stream": self.stream.name,
            "connected": self.connected,
            "live": self._publisher_id is not None,
            "connects": self.connects,
            "packets": self.packets,
            "bytes": self.bytes,
            "viewers": self.stream.subscriber_count,
            "hop_p50_ms": round(self.hop.percentile(0.5) * 1000, 2),
            "hop_p95_ms": round(self.hop.percentile(0.95) * 1000, 2),
            "last_error": self.last_error,
        }


async def stop_client(client: RelayClient, task: asyncio.Task) -> None:
    await client.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
