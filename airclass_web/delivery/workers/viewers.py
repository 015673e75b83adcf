"""The viewer backend of a node, and its in-process implementation.

A backend opens, trickles and closes WHEP sessions and counts viewers. `LocalViewers`
wraps one `WebRtcEgress` in this process (`--workers 1`, and inside each worker);
`pool.WorkerPool` spreads sessions over worker processes. Both call `on_closed(id)` once
for every session that ended, however it ended, so the node can release its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from airclass_media.hub import Stream
from airclass_media.webrtc import BadCandidate, StaleIceState, WebRtcEgress

__all__ = ["BadCandidate", "LocalViewers", "SessionNotFound", "StaleIceState"]

log = logging.getLogger(__name__)

#: How often sessions that ended inside the egress (peer gone, never connected) are noticed.
WATCH_SECONDS = 0.5
#: A session that ended stays known this long: a late DELETE still gets 200.
ENDED_KEEP_SECONDS = 600.0
ENDED_KEEP_MAX = 20_000

OnClosed = Callable[[str], None]
#: name -> the hub stream of that name (pulled from upstream if need be), or None.
Resolve = Callable[[str], Awaitable["Stream | None"]]


class SessionNotFound(LookupError):
    """No such session on this stream (HTTP 404)."""


@dataclass(slots=True, frozen=True)
class Opened:
    id: str
    answer_sdp: str


class Viewers(Protocol):
    """What the WHEP routes and the node need from a viewer backend."""

    on_closed: OnClosed | None
    #: Sessions that ended lately (a late DELETE still gets 200).
    ended: RecentlyEnded

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def open(self, stream: Stream, offer_sdp: str, user_id: str) -> Opened: ...
    def active(self, session_id: str, stream_name: str | None = None) -> bool: ...
    async def add_candidates(
        self, session_id: str, stream_name: str, fragment: str, if_match: str | None = None
    ) -> str | None: ...
    async def close(self, session_id: str, stream_name: str) -> bool: ...
    @property
    def viewer_count(self) -> int: ...
    def viewers_of(self, stream_name: str) -> int: ...
    def user_ids(self) -> set[str]: ...
    async def statuses(self, stream_name: str | None = None) -> list[dict]: ...
    def metrics(self) -> list: ...


class RecentlyEnded:
    """Ids of sessions that ended lately, with their stream (bounded in size and age)."""

    def __init__(self) -> None:
        self._ended: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def add(self, session_id: str, stream_name: str) -> None:
        now = time.monotonic()
        self._ended[session_id] = (stream_name, now)
        self._ended.move_to_end(session_id)
        while self._ended:
            oldest, (_, at) = next(iter(self._ended.items()))
            if len(self._ended) <= ENDED_KEEP_MAX and now - at < ENDED_KEEP_SECONDS:
                break
            del self._ended[oldest]

    def has(self, session_id: str, stream_name: str) -> bool:
        entry = self._ended.get(session_id)
        return entry is not None and entry[0] == stream_name


class LocalViewers:
    """Viewer sessions of a `WebRtcEgress` running in this process."""

    def __init__(
        self,
        egress: WebRtcEgress,
        on_closed: OnClosed | None = None,
        resolve: Resolve | None = None,
        on_connected: OnClosed | None = None,
    ) -> None:
        self.egress = egress
        self.on_closed = on_closed
        #: Called once a session's ICE + DTLS connect (the node's per-IP pending count).
        self.on_connected = on_connected
        #: Finds a stream's `webrtc_default` rendition (the ladder's B-frame-free copy),
        #: and the rung a viewer switches to (in a media worker: pulled over the relay).
        self.resolve = resolve
        if resolve is not None and egress.resolve is None:
            egress.resolve = resolve
        self.ended = RecentlyEnded()
        #: Sessions we opened and have not reported ended: id -> stream name.
        self._open: dict[str, str] = {}
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        self._watch = asyncio.ensure_future(self._watch_ended())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.egress.close_all()
        self._reap()

    async def open(self, stream: Stream, offer_sdp: str, user_id: str) -> Opened:
        """Raises BadOffer or Overloaded (from the egress).

        A stream whose info names a `webrtc_default` rendition (its publisher sends
        B-frames, which browsers cannot reorder) is served from that rendition; the
        session still belongs to `stream` (WHEP URLs, counts)."""
        serve = stream
        if stream.info.webrtc_default and self.resolve is not None:
            serve = await self.resolve(stream.info.webrtc_default) or stream
        session = await self.egress.open(serve, offer_sdp, user_id)
        self._open[session.id] = stream.name
        if self.on_connected is not None:
            tell = self.on_connected

            @session.pc.on("connectionstatechange")
            def connected() -> None:
                if session.pc.connectionState == "connected":
                    tell(session.id)

        return Opened(session.id, session.answer_sdp)

    def active(self, session_id: str, stream_name: str | None = None) -> bool:
        name = self._open.get(session_id)
        return (
            name is not None and session_id in self.egress.sessions and stream_name in (None, name)
        )

    async def add_candidates(
        self, session_id: str, stream_name: str, fragment: str, if_match: str | None = None
    ) -> str | None:
        """Trickle or ICE restart; the restart's answer fragment, else None."""
        if not self.active(session_id, stream_name):
            raise SessionNotFound(session_id)
        try:
            return await self.egress.add_candidates(session_id, fragment, if_match)
        except KeyError as exc:
            raise SessionNotFound(session_id) from exc

    async def close(self, session_id: str, stream_name: str) -> bool:
        """True when the session was open or ended lately (DELETE is idempotent)."""
        if self.active(session_id, stream_name):
            await self.egress.close(session_id)
            self._reap()
            return True
        self._reap()
        return self.ended.has(session_id, stream_name)

    @property
    def viewer_count(self) -> int:
        return self.egress.viewer_count

    def viewers_of(self, stream_name: str) -> int:
        return sum(1 for sid in self.egress.sessions if self._open.get(sid) == stream_name)

    def user_ids(self) -> set[str]:
        return {s.user_id for s in self.egress.sessions.values()}

    async def statuses(self, stream_name: str | None = None) -> list[dict]:
        return [
            s.status()
            for s in list(self.egress.sessions.values())
            if stream_name in (None, self._open.get(s.id, s.stream.name))
        ]

    def metrics(self) -> list:
        from .stats import egress_families

        return egress_families(self.egress)

    def _reap(self) -> list[str]:
        """Report sessions that ended inside the egress; returns their ids."""
        gone = [sid for sid in self._open if sid not in self.egress.sessions]
        for sid in gone:
            self.ended.add(sid, self._open.pop(sid))
            if self.on_closed is not None:
                try:
                    self.on_closed(sid)
                except Exception:
                    log.exception("on_closed(%s) failed", sid)
        return gone

    async def _watch_ended(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            self._reap()
