"""WHIP ingest: a browser (or OBS) publishes over WebRTC; its H.264 goes into the hub as
received, its Opus goes to viewers as is, and one Opus -> AAC transcode per stream feeds
the recorder (and HLS).

aiortc negotiates, runs ICE/DTLS/SRTP, reorders packets, sends NACKs and reassembles
each encoded frame in the receiver's jitter buffer. It then hands every frame to a
decoder thread through a queue; that queue is the one place we take over
(`aiortc_tuning.tap_encoded_frames`): frames go to `WhipSession`, nothing is decoded.
Video arrives as Annex-B access units (aiortc's H.264 depayloader writes start codes).

Keyframes: browsers' encoders make a keyframe at start and when asked (RTCP PLI), not
periodically. The session asks for one every `keyframe_interval` seconds (so new viewers,
the recorder and HLS get a short GOP) and whenever a viewer lost the picture
(`Stream.keyframe_requester`, called by the fan-out on a viewer's PLI/FIR), at most
every `PLI_MIN_INTERVAL` seconds.

Timestamps: each kind's RTP clock is anchored at the arrival time of its first frame
(monotonic), so audio and video share one time base without waiting for RTCP sender
reports, then mapped to the stream timeline by `Stream.timeline`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
)

from .aiortc_tuning import close_peer, media_ssrc, tap_encoded_frames
from .audio import AAC_RATE, OpusToAac
from .h264 import H264Error, parse_sps, split_annexb
from .hub import Stream, StreamBusy
from .packets import MediaPacket
from .webrtc import (
    BadOffer,
    add_public_candidates,
    apply_offer,
    check_offer,
    trickle,
    watch_connection,
)

log = logging.getLogger(__name__)

__all__ = ["BadOffer", "StreamBusy", "WhipIngest", "WhipSession"]

#: Not connected by then: the session is dropped (and the stream freed).
CONNECT_TIMEOUT = 30.0
#: Connected but no media for this long: the publisher is gone (tab closed, network).
MEDIA_TIMEOUT = 15.0
#: Default seconds between keyframes the session asks the publisher for.
KEYFRAME_INTERVAL = 2.0
#: Keyframe requests (RTCP PLI) to the publisher are at least this far apart.
PLI_MIN_INTERVAL = 0.5
#: H.264 profiles a WHIP publisher is asked for, in order (browsers encode Baseline).
INGEST_H264_PREFERENCE = ("42e0", "4200", "4d", "64")
START_CODE = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8


def ingest_preferences(kind: str) -> list:
    """Receive codecs for `setCodecPreferences`: H.264 (Baseline first) or Opus only."""
    codecs = RTCRtpReceiver.getCapabilities(kind).codecs
    if kind == "audio":
        return [c for c in codecs if c.mimeType.lower() == "audio/opus"]
    h264 = [c for c in codecs if c.mimeType.lower() == "video/h264"]

    def rank(codec) -> int:
        plid = str(codec.parameters.get("profile-level-id", "42e01f")).lower()
        for i, prefix in enumerate(INGEST_H264_PREFERENCE):
            if plid.startswith(prefix):
                return i
        return len(INGEST_H264_PREFERENCE)

    return sorted(h264, key=rank)


@dataclass
class WhipSession:
    """One publisher: its peer connection and what it sent."""

    id: str
    stream: Stream
    user_id: str
    pc: RTCPeerConnection
    publisher_id: str
    keyframe_interval: float
    answer_sdp: str = ""
    created_at: float = field(default_factory=time.monotonic)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    video_receiver: RTCRtpReceiver | None = None
    video_frames: int = 0
    audio_frames: int = 0
    keyframes: int = 0
    bytes_in: int = 0
    #: RTCP PLIs sent to the publisher, by reason (start, interval, viewer).
    plis: dict[str, int] = field(default_factory=lambda: {"start": 0, "interval": 0, "viewer": 0})
    transcode_seconds: float = 0.0
    last_media_at: float = field(default_factory=time.monotonic)
    last_keyframe_at: float = 0.0
    _last_pli_at: float = -1e9
    _anchors: dict[str, int] = field(default_factory=dict)
    _sps: bytes = b""
    _pps: bytes = b""
    _aac: OpusToAac | None = None
    _tasks: set = field(default_factory=set)

    # -- keyframe requests ---------------------------------------------------------------
    def request_keyframe(self, reason: str = "viewer") -> bool:
        """Send an RTCP PLI to the publisher (rate-limited); True when one was sent."""
        now = time.monotonic()
        receiver = self.video_receiver
        if receiver is None or self.closed.is_set() or now - self._last_pli_at < PLI_MIN_INTERVAL:
            return False
        ssrc = media_ssrc(receiver)
        if ssrc is None:
            return False
        self._last_pli_at = now
        self.plis[reason] = self.plis.get(reason, 0) + 1
        task = asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    # -- media ---------------------------------------------------------------------------
    def _raw_us(self, kind: str, rtp_timestamp: int, clock: int) -> int:
        anchor = self._anchors.get(kind)
        if anchor is None:
            anchor = self._anchors[kind] = int(time.monotonic() * 1_000_000)
        return anchor + rtp_timestamp * 1_000_000 // clock

    def on_video(self, frame) -> None:
        """One reassembled H.264 access unit (Annex-B) from aiortc's jitter buffer."""
        self.last_media_at = time.monotonic()
        nals = split_annexb(frame.data)
        if not nals:
            return
        types = [n[0] & 0x1F for n in nals]
        if NAL_SPS in types:
            self._update_sps(nals[types.index(NAL_SPS)])
        if NAL_PPS in types:
            self._pps = nals[types.index(NAL_PPS)]
        keyframe = NAL_IDR in types
        if keyframe and not (NAL_SPS in types and NAL_PPS in types):
            if not (self._sps and self._pps):
                keyframe = False  # undecodable without parameter sets
            else:
                nals = [self._sps, self._pps, *nals]
        if keyframe:
            self.keyframes += 1
            self.last_keyframe_at = self.last_media_at
        elif not self.keyframes:
            # Nothing decodable before the first keyframe: ask for one.
            self.request_keyframe("start")
            return
        data = b"".join(START_CODE + n for n in nals)
        us = self.stream.timeline(self._raw_us("video", frame.timestamp, 90_000))
        self.video_frames += 1
        self.bytes_in += len(data)
        self.stream.publish(MediaPacket("video", data, us, us, keyframe))

    def _update_sps(self, sps: bytes) -> None:
        if sps == self._sps:
            return
        self._sps = sps
        info = self.stream.info
        info.sps = sps
        try:
            parsed = parse_sps(sps)
        except H264Error as exc:
            log.warning("stream %s: unreadable SPS: %s", self.stream.name, exc)
            return
        info.width, info.height, info.video_profile = parsed.width, parsed.height, parsed.profile
        log.info(
            "stream %s: WHIP H.264 %s %dx%d",
            self.stream.name,
            parsed.profile,
            parsed.width,
            parsed.height,
        )

    def on_audio(self, frame) -> None:
        """One Opus packet: to viewers as is, and into the stream's AAC transcode."""
        self.last_media_at = time.monotonic()
        if not frame.data:
            return
        us = self.stream.timeline(self._raw_us("audio", frame.timestamp, AAC_RATE))
        self.audio_frames += 1
        self.bytes_in += len(frame.data)
        self.stream.publish(MediaPacket("audio", frame.data, us, us, True))
        if self._aac is None:
            return
        started = time.perf_counter()
        for data, pts in self._aac.transcode(frame.data, us):
            self.stream.publish(MediaPacket("aac", data, pts, pts, True))
        self.transcode_seconds += time.perf_counter() - started

    def status(self) -> dict:
        return {
            "id": self.id,
            "stream": self.stream.name,
            "user_id": self.user_id,
            "state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created_at, 1),
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "keyframes": self.keyframes,
            "bytes_in": self.bytes_in,
            "keyframe_requests": dict(self.plis),
            "width": self.stream.info.width,
            "height": self.stream.info.height,
        }


class WhipIngest:
    """All WHIP publisher sessions of this node."""

    def __init__(
        self,
        ice_servers: list[str] | None = None,
        public_ips: list[str] | None = None,
        keyframe_interval: float = KEYFRAME_INTERVAL,
    ) -> None:
        self.ice_servers = [RTCIceServer(urls=u) for u in (ice_servers or [])]
        self.public_ips = list(public_ips or [])
        self.keyframe_interval = keyframe_interval
        self.sessions: dict[str, WhipSession] = {}
        self.sessions_opened = 0
        self._tasks: set[asyncio.Task] = set()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def open(self, stream: Stream, offer_sdp: str, user_id: str) -> WhipSession:
        """Answer a sendonly offer and make its sender the stream's publisher.

        Raises BadOffer (malformed or unusable offer) or StreamBusy (already live).
        """
        if stream.live:
            raise StreamBusy(stream.name)
        if "m=" not in offer_sdp or "a=fingerprint" not in offer_sdp:
            raise BadOffer("not an SDP offer with media and a DTLS fingerprint")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        session_id = secrets.token_urlsafe(12)
        session = WhipSession(
            session_id, stream, user_id, pc, f"whip-{session_id[:8]}", self.keyframe_interval
        )
        try:
            await self._negotiate(session, offer_sdp)
            stream.attach_publisher(session.publisher_id)  # StreamBusy: lost a race
        except BaseException as exc:
            await self._discard(session)
            unusable = (ValueError, KeyError, IndexError, AttributeError, TypeError)
            if isinstance(exc, unusable) and not isinstance(exc, BadOffer):
                raise BadOffer(f"cannot use this offer: {exc}") from exc
            raise
        if session._aac is not None:
            info = stream.info
            info.aac_config = session._aac.config
            info.audio_sample_rate, info.audio_channels = AAC_RATE, 2
        stream.keyframe_requester = session.request_keyframe
        self.sessions[session.id] = session
        self.sessions_opened += 1

        def connected() -> None:
            session.connected.set()
            session.last_media_at = time.monotonic()

        watch_connection(pc, f"whip {session.id}", connected, lambda: self.close(session.id))

        self._spawn(self._watch(session))
        log.info("whip %s: %s publishes %s", session.id, user_id, stream.name)
        return session

    async def _negotiate(self, session: WhipSession, offer_sdp: str) -> None:
        """Receive-only answer: H.264 video (passthrough needs it), Opus audio."""
        kinds = check_offer(offer_sdp, need_video=True)
        pc = session.pc
        for kind in kinds:
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            transceiver.setCodecPreferences(ingest_preferences(kind))
            if kind == "video":
                session.video_receiver = transceiver.receiver
                tap_encoded_frames(transceiver.receiver, session.on_video)
            else:
                session._aac = OpusToAac()
                tap_encoded_frames(transceiver.receiver, session.on_audio)
        await apply_offer(pc, offer_sdp)
        session.answer_sdp = add_public_candidates(pc.localDescription.sdp, self.public_ips)

    async def _watch(self, session: WhipSession) -> None:
        """Drop a session that never connects or stops sending; ask for keyframes."""
        try:
            await asyncio.wait_for(session.connected.wait(), CONNECT_TIMEOUT)
        except TimeoutError:
            log.info("whip %s never connected; dropped", session.id)
            await self.close(session.id)
            return
        while not session.closed.is_set():
            await asyncio.sleep(min(0.25, session.keyframe_interval / 4))
            now = time.monotonic()
            if now - session.last_media_at > MEDIA_TIMEOUT:
                log.info("whip %s: no media for %.0f s; closed", session.id, MEDIA_TIMEOUT)
                await self.close(session.id)
                return
            if session.keyframes and now - session.last_keyframe_at >= session.keyframe_interval:
                session.request_keyframe("interval")

    async def add_candidates(
        self, session_id: str, sdpfrag: str, if_match: str | None = None
    ) -> str | None:
        """Trickle ICE or ICE restart (see webrtc.trickle): the restart's answer fragment
        or None; KeyError for an unknown session."""
        answer = await trickle(self.sessions[session_id].pc, sdpfrag, if_match=if_match)
        return add_public_candidates(answer, self.public_ips) if answer else None

    def get(self, session_id: str, stream_name: str | None = None) -> WhipSession | None:
        session = self.sessions.get(session_id)
        if session is None or (stream_name is not None and session.stream.name != stream_name):
            return None
        return session

    async def _discard(self, session: WhipSession) -> None:
        session.closed.set()
        with contextlib.suppress(Exception):
            await close_peer(session.pc)

    async def close(self, session_id: str) -> bool:
        """End a publisher session: the stream goes offline (viewers stay connected)."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        session.closed.set()
        stream = session.stream
        if stream.keyframe_requester == session.request_keyframe:
            stream.keyframe_requester = None
        stream.detach_publisher(session.publisher_id)
        await self._discard(session)
        log.info(
            "whip %s: publish of %s ended after %.1f s, %d video (%d keyframes), %d audio frames",
            session_id,
            stream.name,
            time.monotonic() - session.created_at,
            session.video_frames,
            session.keyframes,
            session.audio_frames,
        )
        return True

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close(session_id)
        for task in list(self._tasks):
            task.cancel()
