"""Stream hub: per stream, fan encoded packets out to subscribers through bounded queues.

Rules every subscriber gets for free:
- it starts on a video keyframe (or with the cached GOP, so the first frame comes at once);
- its queue is bounded: when it is full the subscriber is slow, its queue is dropped and
  it resumes at the next keyframe, so it never delays the others nor grows memory;
- publisher changes are invisible: the stream timeline continues across reconnects.

Everything here runs on the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from .packets import MediaPacket, PacketKind, StreamInfo

log = logging.getLogger(__name__)

#: Bound of a subscriber's queue: ~4 s of 30 fps video plus 20 ms audio.
DEFAULT_MAX_PACKETS = 400
#: GOP cache bounds: past them the cache is dropped until the next keyframe.
GOP_CACHE_MAX_PACKETS = 900
GOP_CACHE_MAX_BYTES = 24 * 1024 * 1024

StreamListener = Callable[[str, "Stream"], None]
#: In a stream name, separates a source from one of its ladder renditions
#: ("class1~540p", airclass_media.ladder). Such streams are the ladder's own: they are not
#: listed by `streams()` / `live_streams()` nor announced to listeners (no recording,
#: no registry entry); `get(name)` finds them like any other.
RENDITION_SEPARATOR = "~"
#: A ladder rung makes a keyframe where its source has one and, between those, at the
#: first frame of each RUNG_KEY_INTERVAL_US after the source's last keyframe (a
#: publisher's GOP may be 8 s or more): a viewer moving to a rung waits at most that
#: long, and a fan-out knows where the rung's next keyframe falls without asking.
RUNG_KEY_INTERVAL_US = 2_000_000


def rung_keyframe_due(key_pts: int | None, previous_pts: int | None, pts: int) -> bool:
    """Is the frame at `pts`, after the frame at `previous_pts`, a keyframe in every rung
    though not in the source, whose last keyframe was at `key_pts`?"""
    if key_pts is None or previous_pts is None:
        return False
    interval = RUNG_KEY_INTERVAL_US
    return (previous_pts - key_pts) // interval != (pts - key_pts) // interval


class StreamBusy(Exception):
    """A publisher is already live on this stream."""


class SubscriptionClosed(Exception):
    """The subscription was closed (viewer gone or stream removed)."""


class Subscription:
    """A bounded, keyframe-aware queue of one subscriber."""

    def __init__(
        self,
        stream: Stream,
        kinds: frozenset[str],
        max_packets: int,
        backlog: list[MediaPacket],
        label: str,
    ) -> None:
        self.stream = stream
        self.kinds = kinds
        self.max_packets = max_packets
        self.label = label
        #: Packets from the GOP cache handed over at subscribe time (oldest first).
        self.backlog = backlog
        self.dropped = 0
        self.resyncs = 0
        self.closed = False
        self._queue: deque[MediaPacket] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # With no cached GOP a video subscriber waits for the next keyframe.
        self._needs_keyframe = "video" in kinds and not backlog

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, packet: MediaPacket) -> None:
        """Called by the stream for each new packet; never blocks."""
        if packet.kind not in self.kinds or self.closed:
            return
        if self._needs_keyframe:
            if not (packet.kind == "video" and packet.keyframe):
                self.dropped += 1
                return
            self._needs_keyframe = False
        if len(self._queue) >= self.max_packets:
            # Too slow: forget what is queued and resume at the next keyframe.
            self.dropped += len(self._queue)
            self.resyncs += 1
            self._queue.clear()
            if "video" in self.kinds and not (packet.kind == "video" and packet.keyframe):
                self._needs_keyframe = True
                self.dropped += 1
                return
        self._queue.append(packet)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> MediaPacket:
        """Next packet; waits while the queue is empty. Raises SubscriptionClosed."""
        while not self._queue:
            if self.closed:
                raise SubscriptionClosed(self.label)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def clear(self) -> None:
        """Drop what is queued: the caller replays the cached GOP instead, which brings
        the subscriber up to the newest packet, so it need not wait for a keyframe."""
        self.dropped += len(self._queue)
        self._queue.clear()
        self._needs_keyframe = False

    def get_nowait(self) -> MediaPacket | None:
        return self._queue.popleft() if self._queue else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self.stream._remove(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Stream:
    """One named stream: its publisher, codec info, GOP cache and subscribers."""

    def __init__(self, hub: StreamHub, name: str) -> None:
        self.hub = hub
        self.name = name
        self.info = StreamInfo()
        self.publisher_id: str | None = None
        self.publisher_since: float | None = None
        self.last_activity = time.monotonic()
        self.packets_in = 0
        self.bytes_in = 0
        self._subscribers: list[Subscription] = []
        #: Set by a publisher that can make keyframes on demand (WHIP: an RTCP PLI to the
        #: browser); None for RTMP, whose viewers get the cached GOP replayed instead.
        self.keyframe_requester: Callable[[], None] | None = None
        self._gop: list[MediaPacket] = []
        self._gop_bytes = 0
        # Timeline: raw publisher microseconds -> continuous stream microseconds.
        self._offset: int | None = None
        self._last_dts = 0
        self._last_wall = time.monotonic()

    # -- publisher side -------------------------------------------------------------
    @property
    def live(self) -> bool:
        return self.publisher_id is not None

    def attach_publisher(self, publisher_id: str) -> None:
        if self.publisher_id is not None:
            raise StreamBusy(self.name)
        self.publisher_id = publisher_id
        self.publisher_since = time.time()
        self.info = StreamInfo()
        self._offset = None
        self._drop_gop()
        log.info("stream %s: publisher %s live", self.name, publisher_id)
        self.hub._notify("live", self)

    def detach_publisher(self, publisher_id: str) -> None:
        if self.publisher_id != publisher_id:
            return
        self.publisher_id = None
        self.keyframe_requester = None
        self.publisher_since = None
        self.last_activity = time.monotonic()
        self._drop_gop()
        log.info("stream %s: publisher %s gone", self.name, publisher_id)
        self.hub._notify("offline", self)

    def timeline(self, raw_us: int) -> int:
        """Map a publisher timestamp to the stream timeline.

        The first packet of each publisher session continues the timeline where the last
        one stopped, plus the wall-clock gap, so viewers see one continuous stream.
        """
        if self._offset is None:
            gap_us = int((time.monotonic() - self._last_wall) * 1_000_000)
            resume_at = self._last_dts + max(gap_us, 33_000) if self.packets_in else 0
            self._offset = resume_at - raw_us
        return raw_us + self._offset

    def publish(self, packet: MediaPacket) -> None:
        """Fan one packet out to every subscriber (and into the GOP cache)."""
        self.packets_in += 1
        self.bytes_in += len(packet.data)
        if packet.dts > self._last_dts:
            self._last_dts = packet.dts
        self._last_wall = packet.received_at
        if packet.kind == "video":
            self._cache(packet)
        for subscriber in self._subscribers:
            subscriber.offer(packet)

    def _cache(self, packet: MediaPacket) -> None:
        if packet.keyframe:
            self._drop_gop()
        elif not self._gop:
            return  # no keyframe seen yet: nothing decodable to cache
        if (
            len(self._gop) >= GOP_CACHE_MAX_PACKETS
            or self._gop_bytes + len(packet.data) > GOP_CACHE_MAX_BYTES
        ):
            self._drop_gop()
            return
        self._gop.append(packet)
        self._gop_bytes += len(packet.data)

    def gop_snapshot(self) -> list[MediaPacket]:
        """The cached GOP: a keyframe and every video packet since, oldest first."""
        return list(self._gop)

    def _drop_gop(self) -> None:
        self._gop = []
        self._gop_bytes = 0

    # -- subscriber side ------------------------------------------------------------
    def subscribe(
        self,
        kinds: Iterable[PacketKind],
        *,
        max_packets: int = DEFAULT_MAX_PACKETS,
        with_gop: bool = True,
        label: str = "",
    ) -> Subscription:
        kinds = frozenset(kinds)
        backlog = self.gop_snapshot() if with_gop and "video" in kinds else []
        sub = Subscription(self, kinds, max_packets, backlog, label or f"{self.name}-sub")
        self._subscribers.append(sub)
        self.last_activity = time.monotonic()
        return sub

    def _remove(self, sub: Subscription) -> None:
        try:
            self._subscribers.remove(sub)
        except ValueError:
            pass
        self.last_activity = time.monotonic()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribers(self) -> list[Subscription]:
        return list(self._subscribers)

    def status(self) -> dict:
        return {
            "name": self.name,
            "live": self.live,
            "since": self.publisher_since,
            "subscribers": len(self._subscribers),
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            **self.info.as_dict(),
        }


class StreamHub:
    """All streams of this node, by name."""

    def __init__(self) -> None:
        self._streams: dict[str, Stream] = {}
        self._listeners: list[StreamListener] = []

    def stream(self, name: str) -> Stream:
        """The stream of that name, created (announced) if it did not exist."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = Stream(self, name)
        return stream

    def get(self, name: str) -> Stream | None:
        return self._streams.get(name)

    def streams(self, renditions: bool = False) -> list[Stream]:
        """Every stream; the ladder's renditions too only when asked."""
        return [s for s in self._streams.values() if renditions or not _rendition(s.name)]

    def live_streams(self, renditions: bool = False) -> list[Stream]:
        return [s for s in self.streams(renditions) if s.live]

    def add_listener(self, listener: StreamListener) -> None:
        """listener(event, stream) with event "live" or "offline"."""
        self._listeners.append(listener)

    def _notify(self, event: str, stream: Stream) -> None:
        if _rendition(stream.name):
            return
        for listener in list(self._listeners):
            try:
                listener(event, stream)
            except Exception:
                log.exception("stream listener failed on %s %s", event, stream.name)

    def remove(self, name: str) -> None:
        """Forget a stream with no publisher and no subscribers (no-op otherwise)."""
        stream = self._streams.get(name)
        if stream is not None and not stream.live and not stream.subscriber_count:
            del self._streams[name]

    def forget_idle(self, idle_seconds: float) -> int:
        """Drop streams with no publisher and no subscribers for a while."""
        now = time.monotonic()
        idle = [
            name
            for name, s in self._streams.items()
            if not s.live and not s.subscriber_count and now - s.last_activity > idle_seconds
        ]
        for name in idle:
            del self._streams[name]
        return len(idle)


def _rendition(name: str) -> bool:
    return RENDITION_SEPARATOR in name
