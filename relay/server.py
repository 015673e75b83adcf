"""Main side of the relay: stream one hub stream's packets to one sub node.

Transport-agnostic: the caller gives an async `send(frame_bytes)` (a WebSocket here).
The sub gets the stream info first, then the cached GOP (so it starts on a keyframe),
then live packets. Publisher changes on the main are sent as INFO frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from airclass_media.hub import Stream, SubscriptionClosed
from airclass_media.packets import MediaPacket

from . import framing

log = logging.getLogger(__name__)

#: A relay is one subscriber of the main's stream, with a deeper queue than a viewer's.
RELAY_QUEUE_PACKETS = 1200
#: How often an idle relay checks whether the publisher left.
IDLE_CHECK_SECONDS = 0.5
DEFAULT_KINDS = ("video", "audio")
#: What a sub node pulls from the main: also the teacher's AAC as received, for its HLS.
SUB_KINDS = ("video", "audio", "aac")

Send = Callable[[bytes], Awaitable[None]]


class RelaySender:
    """Feeds one sub from one stream until `close()` or the transport fails."""

    def __init__(self, stream: Stream, send: Send, kinds: Iterable[str] = DEFAULT_KINDS) -> None:
        self.stream = stream
        self.send = send
        self.kinds = frozenset(kinds) & set(framing.KIND_CODES)
        self.packets_sent = 0
        self.bytes_sent = 0
        self.started_at = time.time()
        self.closed = False
        self._subscription = None
        self._state: tuple | None = None

    def close(self) -> None:
        """Stop sending (the subscription is closed, which wakes `run`)."""
        self.closed = True
        if self._subscription is not None:
            self._subscription.close()

    def status(self) -> dict:
        sub = self._subscription
        return {
            "stream": self.stream.name,
            "since": self.started_at,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "dropped": sub.dropped if sub is not None else 0,
            "resyncs": sub.resyncs if sub is not None else 0,
        }

    async def run(self) -> None:
        """Send until closed; transport errors propagate to the caller."""
        stream = self.stream
        sub = stream.subscribe(
            self.kinds, max_packets=RELAY_QUEUE_PACKETS, label=f"relay-{stream.name}"
        )
        self._subscription = sub
        try:
            await self._send_state()
            backlog, sub.backlog = sub.backlog, []
            for packet in backlog:
                await self._send_packet(packet, cached=True)
            while not self.closed:
                packet = sub.get_nowait()
                if packet is None:
                    await self._send_state()
                    try:
                        async with asyncio.timeout(IDLE_CHECK_SECONDS):
                            packet = await sub.get()
                    except TimeoutError:
                        continue
                await self._send_packet(packet, cached=False)
        except SubscriptionClosed:
            pass
        finally:
            sub.close()

    async def _send_state(self) -> None:
        """Send an INFO frame when the publisher or its codec parameters changed."""
        stream, info = self.stream, self.stream.info
        on_demand = stream.keyframe_requester is not None
        state = (
            stream.publisher_id,
            info.sps,
            info.pps,
            info.aac_config,
            info.width,
            on_demand,
            info.reorders,
            info.webrtc_default,
            tuple(r.get("name") for r in info.renditions),
        )
        if state == self._state:
            return
        self._state = state
        frame = framing.encode_info(stream.live, stream.publisher_id or "", info, on_demand)
        await self.send(frame)

    async def _send_packet(self, packet: MediaPacket, cached: bool) -> None:
        await self._send_state()
        frame = framing.encode_packet(packet, cached)
        await self.send(frame)
        self.packets_sent += 1
        self.bytes_sent += len(frame)


class RelayServer:
    """Every relay sender of the main node, by stream, for status and admin resets."""

    def __init__(self) -> None:
        self.senders: set[RelaySender] = set()

    async def serve(self, stream: Stream, send: Send, kinds: Iterable[str]) -> bool:
        """Relay until the transport fails (raises) or `reset` closes it (returns True)."""
        sender = RelaySender(stream, send, kinds)
        self.senders.add(sender)
        log.info("relay %s: sub connected (%d relays)", stream.name, len(self.senders))
        try:
            await sender.run()
            return sender.closed
        finally:
            self.senders.discard(sender)
            log.info(
                "relay %s: sub gone after %d packets (%d relays)",
                stream.name,
                sender.packets_sent,
                len(self.senders),
            )

    def reset(self, stream_name: str | None = None) -> int:
        """Close the relays of a stream (all when None): subs reconnect by themselves."""
        closing = [s for s in self.senders if stream_name in (None, s.stream.name)]
        for sender in closing:
            sender.close()
        return len(closing)

    def close_all(self) -> None:
        self.reset(None)

    def status(self) -> list[dict]:
        return [s.status() for s in self.senders]


def on_downstream_message(stream: Stream, text: str) -> None:
    """A text message from a sub or media worker: a keyframe request is passed on to a
    publisher that can answer it (WHIP); anything else is ignored."""
    if text == framing.KEYFRAME_REQUEST and stream.keyframe_requester is not None:
        stream.keyframe_requester()
