"""WebRTC egress with aiortc: H.264 passed through, Opus shared, per-viewer cost = RTP only.

A viewer's tracks return packets already cut into RTP payloads once per stream (no
encoder, no packetizer per viewer: aiortc adds the RTP header and SRTP). Video starts
from the stream's cached GOP with squeezed timestamps, so the first picture shows at
once and at live latency; audio starts live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp

from .aiortc_tuning import RtpReady, rtp_ready
from .hub import Stream, Subscription, SubscriptionClosed
from .packets import MediaPacket

log = logging.getLogger(__name__)

#: Not connected by then: the session is dropped.
CONNECT_TIMEOUT = 30.0
#: Spacing of cached-GOP frames replayed to a new viewer (microseconds).
CATCH_UP_STEP_US = 1000
#: A viewer asking for keyframes gets the cached GOP at most this often (seconds).
KEYFRAME_REPLAY_INTERVAL = 1.0
H264_PREFERENCE = ("64", "4d", "42e0", "4200")


class BadOffer(ValueError):
    """The SDP offer cannot be answered (HTTP 400)."""


class Overloaded(Exception):
    """This node serves as many viewers as it may (HTTP 503)."""


def h264_preferences():
    """H.264 codec capabilities, High first, for `setCodecPreferences`."""
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]

    def rank(codec) -> int:
        plid = str(codec.parameters.get("profile-level-id", "42e01f")).lower()
        for i, prefix in enumerate(H264_PREFERENCE):
            if plid.startswith(prefix):
                return i
        return len(H264_PREFERENCE)

    return sorted(codecs, key=rank)


class LatencyStats:
    """Recent values (seconds) of one pipeline stage, for percentiles at scrape time."""

    def __init__(self, size: int = 2048) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.count = 0

    def record(self, seconds: float) -> None:
        self.values.append(seconds)
        self.count += 1

    def percentile(self, q: float) -> float:
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def add_public_candidates(answer: str, public_ips: list[str]) -> str:
    """Repeat each host candidate with a public address (same port) after it.

    For a node behind a 1:1 NAT or Docker port mapping: aioice can only advertise
    addresses it binds, but clients must be told the address they can reach.
    """
    if not public_ips:
        return answer
    out = []
    for line in answer.split("\r\n"):
        out.append(line)
        if line.startswith("a=candidate:") and line.endswith(" typ host"):
            fields = line.split(" ")
            for i, address in enumerate(public_ips):
                extra = list(fields)
                extra[0] = f"{fields[0]}p{i}"  # its own foundation
                extra[3] = str(max(int(fields[3]) - 1 - i, 1))  # just below the original
                extra[4] = address
                out.append(" ".join(extra))
    return "\r\n".join(out)


def squeeze(gop: list[MediaPacket], after: int | None) -> deque[tuple[MediaPacket, int]]:
    """Timestamps for replaying a cached GOP at once: packed just before its newest frame
    (so the picture shows immediately, at live latency) and, for a viewer that already
    played something, strictly after the last timestamp it was sent."""
    n = len(gop)
    if not n:
        return deque()
    end = gop[-1].pts
    start = end - (n - 1) * CATCH_UP_STEP_US
    if after is not None and start <= after:
        start = after + 1
    step = max(1, (end - start) // (n - 1)) if n > 1 else 0
    return deque((packet, start + i * step) for i, packet in enumerate(gop))


class PacketTrack(MediaStreamTrack):
    """A track fed from a hub subscription; `recv` returns packets ready for RTP."""

    def __init__(self, kind: str, subscription: Subscription, egress: WebRtcEgress) -> None:
        super().__init__()
        self.kind = kind
        self.subscription = subscription
        self.egress = egress
        self.packets_sent = 0
        self.keyframe_replays = 0
        self._last_pts: int | None = None
        self._last_replay = 0.0
        self._catch_up = squeeze(subscription.backlog, None)
        subscription.backlog = []

    def request_keyframe(self) -> None:
        """The viewer lost the picture (PLI/FIR). The teacher's encoder cannot be asked for
        a keyframe over RTMP, so replay the stream's cached GOP to this viewer alone."""
        now = time.monotonic()
        if self.kind != "video" or now - self._last_replay < KEYFRAME_REPLAY_INTERVAL:
            return
        gop = self.subscription.stream.gop_snapshot()
        if not gop:
            return
        self._last_replay = now
        self.keyframe_replays += 1
        self.egress.keyframe_replays += 1
        self.subscription.clear()  # what is queued is in the snapshot too
        self._catch_up = squeeze(gop, self._last_pts)

    async def recv(self) -> RtpReady:
        if self.readyState != "live":
            raise MediaStreamError
        if self._catch_up:
            packet, pts = self._catch_up.popleft()
            ready = rtp_ready(packet, pts)
        else:
            try:
                packet = await self.subscription.get()
            except SubscriptionClosed:
                self.stop()
                raise MediaStreamError from None
            pts = packet.pts
            ready = rtp_ready(packet)
            self.egress.queue_delay.record(time.monotonic() - packet.received_at)
        self._last_pts = pts
        self.packets_sent += 1
        return ready

    def stop(self) -> None:
        super().stop()
        self.subscription.close()


@dataclass
class ViewerSession:
    id: str
    stream: Stream
    user_id: str
    pc: RTCPeerConnection
    tracks: list[PacketTrack] = field(default_factory=list)
    created_at: float = field(default_factory=time.monotonic)
    answer_sdp: str = ""
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> dict:
        return {
            "id": self.id,
            "stream": self.stream.name,
            "user_id": self.user_id,
            "state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created_at, 1),
            "packets_sent": sum(t.packets_sent for t in self.tracks),
            "dropped": sum(t.subscription.dropped for t in self.tracks),
        }


class WebRtcEgress:
    """All WebRTC viewer sessions of this node."""

    def __init__(
        self,
        ice_servers: list[str] | None = None,
        capacity: int = 150,
        public_ips: list[str] | None = None,
    ) -> None:
        self.ice_servers = [RTCIceServer(urls=u) for u in (ice_servers or [])]
        self.public_ips = list(public_ips or [])
        self.capacity = capacity
        self.sessions: dict[str, ViewerSession] = {}
        self.queue_delay = LatencyStats()
        self.sessions_opened = 0
        self.keyframe_replays = 0
        self._timeouts: set[asyncio.Task] = set()

    @property
    def viewer_count(self) -> int:
        return len(self.sessions)

    def viewers_of(self, stream_name: str) -> int:
        return sum(1 for s in self.sessions.values() if s.stream.name == stream_name)

    async def open(self, stream: Stream, offer_sdp: str, user_id: str) -> ViewerSession:
        """Answer a recvonly offer; raises BadOffer or Overloaded."""
        if len(self.sessions) >= self.capacity:
            raise Overloaded(f"{len(self.sessions)} viewers")
        if "m=" not in offer_sdp or "a=fingerprint" not in offer_sdp:
            raise BadOffer("not an SDP offer with media and a DTLS fingerprint")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        session = ViewerSession(secrets.token_urlsafe(12), stream, user_id, pc)
        try:
            await self._negotiate(session, offer_sdp)
        except BadOffer:
            await self._discard(session)
            raise
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            await self._discard(session)
            raise BadOffer(f"cannot use this offer: {exc}") from exc
        self.sessions[session.id] = session
        self.sessions_opened += 1

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.debug("viewer %s: %s", session.id, state)
            if state == "connected":
                session.connected.set()
            elif state in ("failed", "closed"):
                await self.close(session.id)

        task = asyncio.ensure_future(self._expire_unconnected(session))
        self._timeouts.add(task)
        task.add_done_callback(self._timeouts.discard)
        log.info(
            "viewer %s (%s) on %s: %d viewers", session.id, user_id, stream.name, len(self.sessions)
        )
        return session

    async def _negotiate(self, session: ViewerSession, offer_sdp: str) -> None:
        """Answer with our tracks; video offers only H.264 (passthrough needs it).

        Transceivers are made before the offer is applied: aiortc filters codecs by the
        preferences when the remote description is set, not later.
        """
        offer = sdp.SessionDescription.parse(offer_sdp)
        media = [m for m in offer.media if m.kind in ("audio", "video")]
        if not media:
            raise BadOffer("offer has no audio or video")
        for m in media:
            if not m.ice.usernameFragment or not m.ice.password:
                raise BadOffer(f"{m.kind} section lacks ICE credentials")
        kinds = list(dict.fromkeys(m.kind for m in media))
        if "video" in kinds and not any(
            c.mimeType.lower() == "video/h264"
            for m in media
            if m.kind == "video"
            for c in m.rtp.codecs
        ):
            raise BadOffer("offer has no H.264 video codec")
        pc = session.pc
        for kind in kinds:
            sub = session.stream.subscribe([kind], label=f"viewer-{session.id}-{kind}")
            track = PacketTrack(kind, sub, self)
            session.tracks.append(track)
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if kind == "video":
                transceiver.setCodecPreferences(h264_preferences())
                # aiortc turns PLI/FIR into a request to its encoder; we have none.
                transceiver.sender._send_keyframe = track.request_keyframe
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except (InvalidAccessError, InvalidStateError, OperationError) as exc:
            raise BadOffer(str(exc)) from exc
        session.answer_sdp = add_public_candidates(pc.localDescription.sdp, self.public_ips)

    async def _expire_unconnected(self, session: ViewerSession) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.connected.wait(), CONNECT_TIMEOUT)
            return
        log.info("viewer %s never connected; dropped", session.id)
        await self.close(session.id)

    async def add_candidates(self, session_id: str, sdpfrag: str) -> int:
        """Trickle ICE: add the candidates of an SDP fragment; returns how many."""
        session = self.sessions[session_id]
        mid = None
        added = 0
        for line in sdpfrag.splitlines():
            line = line.strip()
            if line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:"):
                candidate = candidate_from_sdp(line[2:].split(":", 1)[1])
                candidate.sdpMid = mid
                candidate.sdpMLineIndex = None if mid is not None else 0
                await session.pc.addIceCandidate(candidate)
                added += 1
        return added

    async def _discard(self, session: ViewerSession) -> None:
        for track in session.tracks:
            track.stop()
        await session.pc.close()

    async def close(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        await self._discard(session)
        log.info("viewer %s closed: %d viewers", session_id, len(self.sessions))
        return True

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close(session_id)
        for task in list(self._timeouts):
            task.cancel()
