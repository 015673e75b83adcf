"""WebRTC egress: aiortc negotiates each viewer, the fan-out sends everyone's RTP.

H.264 is passed through and Opus made once per stream; per viewer only RTP headers,
SRTP and the syscalls remain (airclass_media.fanout). Video starts from the stream's
cached GOP with squeezed timestamps, so the first picture shows at once and at live
latency; audio starts live. Each viewer's video follows its bandwidth estimate (REMB and
receiver-report loss) over the source and its ladder renditions, down to audio only
(airclass_media.adapt chooses).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
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
from aiortc.sdp import candidate_from_sdp, candidate_to_sdp

from .adapt import ADAPT_INTERVAL_S, Adaptation, ViewerRung
from .aiortc_tuning import (
    answer_audio_red,
    close_peer,
    on_selected_pair,
    receiver_report,
    take_over_rtp,
    udp_path,
)
from .fanout import Fanout, RtpBinding, RtpTarget
from .hub import Stream
from .ice import restart_ice
from .liveness import Liveness
from .packets import MediaPacket

log = logging.getLogger(__name__)

#: Not connected by then: the session is dropped.
CONNECT_TIMEOUT = 30.0
H264_PREFERENCE = ("64", "4d", "42e0", "4200")


class BadOffer(ValueError):
    """The SDP offer cannot be answered (HTTP 400)."""


class Overloaded(Exception):
    """This node serves as many viewers as it may (HTTP 503)."""


class BadCandidate(ValueError):
    """A candidate line that cannot be used (HTTP 400)."""


class StaleIceState(ValueError):
    """A PATCH whose If-Match names an ICE state the session has left (HTTP 412)."""


def check_offer(offer_sdp: str, *, need_video: bool) -> list[str]:
    """The media kinds of an offer we can answer (WHEP and WHIP alike): audio/video
    sections with ICE credentials and, for video, H.264 (passthrough needs it)."""
    try:
        offer = sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser raises whatever it trips on
        raise BadOffer(f"cannot parse the offer: {exc!r}") from exc
    media = [m for m in offer.media if m.kind in ("audio", "video")]
    if not media:
        raise BadOffer("offer has no audio or video")
    kinds = list(dict.fromkeys(m.kind for m in media))
    if need_video and "video" not in kinds:
        raise BadOffer("offer has no video")
    for m in media:
        if not m.ice.usernameFragment or not m.ice.password:
            raise BadOffer(f"{m.kind} section lacks ICE credentials")
    if "video" in kinds and not any(
        c.mimeType.lower() == "video/h264" for m in media if m.kind == "video" for c in m.rtp.codecs
    ):
        raise BadOffer("offer has no H.264 video codec (passthrough needs H.264)")
    return kinds


async def apply_offer(pc: RTCPeerConnection, offer_sdp: str, audio_red: bool = False) -> None:
    """Set the remote offer and our answer on a peer connection whose transceivers are
    made (answering RED for Opus when `audio_red` and offered); aiortc's own errors
    become BadOffer."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        # Checked before anything else awaits: aiortc's connect task, scheduled by
        # setRemoteDescription, would trip over a transceiver the offer left unused.
        if any(t.receiver.transport is None for t in pc.getTransceivers()):
            raise BadOffer("the offer's media sections do not match its media kinds")
        if audio_red:
            answer_audio_red(pc, sdp.SessionDescription.parse(offer_sdp))
        await pc.setLocalDescription(await pc.createAnswer())
    except (InvalidAccessError, InvalidStateError, OperationError) as exc:
        raise BadOffer(str(exc)) from exc


def watch_connection(
    pc: RTCPeerConnection,
    label: str,
    on_connected: Callable[[], None],
    close: Callable[[], Awaitable[object]],
) -> None:
    """Connected -> on_connected(); failed or closed -> close() (viewers and publishers)."""

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        state = pc.connectionState
        log.debug("%s: %s", label, state)
        if state == "connected":
            on_connected()
        elif state in ("failed", "closed"):
            await close()


async def trickle(
    pc: RTCPeerConnection,
    sdpfrag: str,
    on_selected: Callable[[object], None] | None = None,
    if_match: str | None = None,
) -> str | None:
    """Trickle ICE and ICE restart (RFC 9725 section 4.3) from an SDP fragment.

    Candidates are added to the connection. A fragment whose `a=ice-ufrag` is not the
    one in use restarts ICE first (`ice.restart_ice`): the answer is then a fragment
    with our new credentials and candidates, else None. BadCandidate for a line or
    credentials that cannot be used. `on_selected(connection)` once a restart's new
    pair carries media (the fan-out sends on a path of its own). `if_match`, the PATCH's
    If-Match: "*" or the session's entity tag (`ice_etag`, our ICE ufrag), else
    StaleIceState."""
    lines = [line.strip() for line in sdpfrag.splitlines()]
    attributes = dict(line[2:].split(":", 1) for line in lines if line.startswith("a=ice-"))
    answer = None
    ufrag = attributes.get("ice-ufrag")
    transports = _ice_transports(pc)
    if if_match not in (None, "*") and transports:
        current = _etag(transports[0]._connection.local_username)
        if if_match.removeprefix("W/") != current:
            raise StaleIceState(f"If-Match {if_match} is not the session's ICE state {current}")
    if ufrag and transports and ufrag != _remote_ufrag(pc, transports[0]):
        answer = _restart(pc, transports, ufrag, attributes.get("ice-pwd", ""), on_selected)
    mid = None
    for line in lines:
        if line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line[2:].split(":", 1)[1])
            except (IndexError, ValueError) as exc:
                raise BadCandidate(f"bad candidate {line!r}") from exc
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = None if mid is not None else 0
            await pc.addIceCandidate(candidate)
    return answer


def ice_etag(sdp: str) -> str:
    """A session's entity tag (RFC 9725 section 4.3.1): the node's ICE ufrag in `sdp` (the
    answer, or a restart's answer fragment), which each ICE restart changes."""
    return _etag(
        next(line[12:].strip() for line in sdp.splitlines() if line.startswith("a=ice-ufrag:"))
    )


def _etag(ice_ufrag: str) -> str:
    return f'"{ice_ufrag}"'


def _remote_ufrag(pc: RTCPeerConnection, transport) -> str | None:
    """The remote ICE ufrag in use: the connection's, or the offer's until ICE starts."""
    if transport._connection.remote_username is not None:
        return transport._connection.remote_username
    offer = sdp.SessionDescription.parse(pc.remoteDescription.sdp) if pc.remoteDescription else None
    return offer.media[0].ice.usernameFragment if offer and offer.media else None


def _ice_transports(pc: RTCPeerConnection) -> list:
    """The connection's ICE transports (one when bundled), in media order."""
    found = []
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is not None and dtls.transport not in found:
            found.append(dtls.transport)
    return found


def _restart(
    pc: RTCPeerConnection,
    transports: list,
    ufrag: str,
    password: str,
    on_selected: Callable[[object], None] | None,
) -> str:
    """Restart ICE on every transport with the remote's new credentials; our answer
    fragment (RFC 8840) with the new local ones and our candidates."""
    local = None
    for transport in transports:
        try:
            # Every transport answers with the same credentials (one fragment).
            local = restart_ice(transport._connection, ufrag, password, local, on_selected)
        except ValueError as exc:
            raise BadCandidate(f"bad ICE credentials: {exc}") from exc
        transport.iceGatherer._remote_candidates_end = False
    assert local is not None
    first = pc.getTransceivers()[0]
    candidates = [
        f"a=candidate:{candidate_to_sdp(c)}" for c in transports[0].iceGatherer.getLocalCandidates()
    ]
    return "\r\n".join(
        [
            f"a=ice-ufrag:{local[0]}",
            f"a=ice-pwd:{local[1]}",
            f"m={first.kind} 9 UDP/TLS/RTP/SAVPF 0",
            f"a=mid:{first.mid}",
            *candidates,
            "a=end-of-candidates",
            "",
        ]
    )


def h264_preferences():
    """H.264 codec capabilities, High first, then RTX, for `setCodecPreferences`.

    RTX (RFC 4588) puts retransmissions and probe padding on a stream of their own: a
    lost padding packet is not NACKed, and browsers count resent bytes apart."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    codecs = [c for c in capabilities if c.mimeType == "video/H264"]
    rtx = [c for c in capabilities if c.mimeType == "video/rtx"]

    def rank(codec) -> int:
        plid = str(codec.parameters.get("profile-level-id", "42e01f")).lower()
        for i, prefix in enumerate(H264_PREFERENCE):
            if plid.startswith(prefix):
                return i
        return len(H264_PREFERENCE)

    return sorted(codecs, key=rank) + rtx


class LatencyStats:
    """Recent values (seconds) of one pipeline stage, for percentiles at scrape time,
    plus a histogram of every value (counts per bucket; made cumulative at scrape)."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

    def __init__(self, size: int = 2048) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.count = 0
        self.sum = 0.0
        self.bucket_counts = [0] * (len(self.BUCKETS) + 1)

    def record(self, seconds: float) -> None:
        self.values.append(seconds)
        self.count += 1
        self.sum += seconds
        self.bucket_counts[bisect.bisect_left(self.BUCKETS, seconds)] += 1

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


class FanoutTrack(MediaStreamTrack):
    """A viewer's track as aiortc sees it. Its sender's RTP loop is taken over by the
    fan-out (see aiortc_tuning.take_over_rtp), so `recv` is never called."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self):
        raise MediaStreamError


@dataclass(kw_only=True)
class ViewerSession(ViewerRung):
    """One WHEP viewer: its peer connection and senders (the rung state it inherits)."""

    user_id: str
    pc: RTCPeerConnection
    senders: dict[str, RTCRtpSender] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    answer_sdp: str = ""
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: When the viewer's RTCP was last heard; while it is silent nothing is sent to it,
    #: and its video (when it had some) resumes at a keyframe once it is heard again.
    liveness: Liveness = field(default_factory=Liveness)
    silent: bool = False
    video_silenced: bool = False

    def status(self) -> dict:
        """State, and per kind what was sent and what the viewer's RTCP reports say;
        the viewer's bandwidth estimate and the rung it gets ("audio-only" when held)."""
        media = {}
        for kind, target in self.targets.items():
            media[kind] = {**target.stats(), **receiver_report(self.senders[kind])}
        return {
            "id": self.id,
            "stream": self.stream.name,
            "user_id": self.user_id,
            "state": self.pc.connectionState,
            "age_s": round(time.monotonic() - self.created_at, 1),
            "packets_sent": sum(t.packets for t in self.targets.values()),
            "dropped": sum(t.binding.path.dropped for t in self.targets.values()),
            **self.estimate.as_dict(),
            "rung": self.rung,
            "padding_probe": None if self.padding is None else self.padding.rung,
            "video_again_in_s": self.video_again_in(),
            "playout_delay_ms": self.playout_delay_ms,
            "silent": self.silent,
            "heard_ago_s": None
            if self.liveness.heard_at is None
            else round(time.monotonic() - self.liveness.heard_at, 1),
            "media": media,
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
        #: Node receive -> fan-out picks the packet up (all streams).
        self.queue_delay = LatencyStats()
        #: Node receive -> on the wire to every viewer of this process, per stream.
        self.wire_delay: dict[str, LatencyStats] = {}
        self.sessions_opened = 0
        self.keyframe_replays = 0
        self.nacks = 0
        #: ICE restarts answered, and viewers' fan-out paths moved to a new ICE pair.
        self.ice_restarts = 0
        self.path_moves = 0
        #: Viewers found silent (their media held until heard again).
        self.silences = 0
        self.fanout = Fanout(on_sent=self._packet_sent)
        self._timeouts: set[asyncio.Task] = set()
        #: name -> hub stream (pulled from the node in a media worker); finds the rungs
        #: a viewer switches to. By default the stream's own hub.
        self.resolve: Callable[[str], Awaitable[Stream | None]] | None = None
        #: Each viewer's rung, chosen from its estimate.
        self.adaptation = Adaptation(self.fanout, self._find)
        self._adapt_task: asyncio.Task | None = None

    def _packet_sent(self, stream: str, packet: MediaPacket, started: float, now: float) -> None:
        self.queue_delay.record(started - packet.received_at)
        stats = self.wire_delay.get(stream)
        if stats is None:
            stats = self.wire_delay[stream] = LatencyStats(size=256)
        stats.record(now - packet.received_at)

    def receiver_reports(self, kind: str = "video") -> list[dict]:
        """Each connected viewer's latest RTCP receiver-report figures for one kind."""
        return [
            receiver_report(session.senders[kind])
            for session in self.sessions.values()
            if kind in session.targets
        ]

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
        session = ViewerSession(id=secrets.token_urlsafe(12), stream=stream, user_id=user_id, pc=pc)
        try:
            await self._negotiate(session, offer_sdp)
        except BaseException as exc:
            # Whatever went wrong (cancellation included), nothing of it is left behind.
            # Awaited directly (not in a task) so that the peer connection is marked
            # closed before aiortc's own connect task, already scheduled, gets to run.
            await self._discard(session)
            if isinstance(exc, (ValueError, KeyError, IndexError, AttributeError, TypeError)):
                raise BadOffer(f"cannot use this offer: {exc}") from exc
            raise
        self.sessions[session.id] = session
        self.sessions_opened += 1
        if self._adapt_task is None or self._adapt_task.done():
            self._adapt_task = asyncio.ensure_future(self._adapt_loop())

        watch_connection(
            pc, f"viewer {session.id}", session.connected.set, lambda: self.close(session.id)
        )

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
        kinds = check_offer(offer_sdp, need_video=False)
        pc = session.pc
        for kind in kinds:
            transceiver = pc.addTransceiver(FanoutTrack(kind), direction="sendonly")
            if kind == "video":
                transceiver.setCodecPreferences(h264_preferences())
            session.senders[kind] = transceiver.sender
            take_over_rtp(
                transceiver.sender,
                functools.partial(self._feed, session),
                functools.partial(self._keyframe_requested, session),
                functools.partial(self._nack, session, kind),
                on_remb=session.estimate.on_remb if kind == "video" else None,
                on_report=functools.partial(self._video_report, session)
                if kind == "video"
                else None,
                on_rtcp=session.liveness.heard,
            )
        await apply_offer(pc, offer_sdp, audio_red=True)
        session.answer_sdp = add_public_candidates(pc.localDescription.sdp, self.public_ips)

    async def _feed(self, session: ViewerSession, binding: RtpBinding) -> None:
        """Feed one of the viewer's RTP streams from the fan-out until the session ends."""
        target = RtpTarget(binding, estimate=session.estimate)
        session.targets[binding.kind] = target
        try:
            if binding.kind == "video":
                await self.adaptation.start(session, target)
            else:
                self.fanout.add(session.stream, target)
            await session.closed.wait()
        finally:
            self.fanout.remove(target)
            binding.path.close()

    @staticmethod
    def _video_report(session: ViewerSession, lost: int, highest_sequence: int) -> None:
        """A receiver report of the viewer's video, counted only when video was sent
        since the previous one: while audio only, a browser repeats its last figures,
        and a count started then would take in what the link dropped before the pause,
        reported once video comes again."""
        video = session.targets.get("video")
        if video is None or video.packets == session.reported_packets:
            return
        session.reported_packets = video.packets
        session.estimate.on_report(lost, highest_sequence, video.video_bps)

    def _keyframe_requested(self, session: ViewerSession) -> None:
        target = session.targets.get("video")
        if target is not None and target.request_keyframe():
            self.keyframe_replays += 1

    def _nack(self, session: ViewerSession, kind: str, sequence_number: int) -> None:
        target = session.targets.get(kind)
        if target is not None:
            self.nacks += 1
            target.retransmit(sequence_number)

    # -- adaptation: each viewer's rung from its estimate ----------------------------------
    def estimates(self) -> list[int]:
        """Each connected viewer's bandwidth estimate (bit/s)."""
        return [s.estimate.bps for s in self.sessions.values() if "video" in s.targets]

    async def _adapt_loop(self) -> None:
        while self.sessions:
            await asyncio.sleep(ADAPT_INTERVAL_S)
            self.adaptation.measure()
            now = time.monotonic()
            for session in list(self.sessions.values()):
                try:
                    self._follow(session)
                    if self._hold_if_silent(session, now):
                        continue
                    await self.adaptation.adapt(session)
                except Exception:  # one viewer's choice must not stop the others'
                    log.exception("choosing a rung for viewer %s failed", session.id)
            # A rung its last viewers just left at a keyframe of another: its
            # subscription (and so its relay and encoder) ends now, not at the next leave.
            self.fanout.reap()

    def _hold_if_silent(self, session: ViewerSession, now: float) -> bool:
        """Hold a silent viewer's media (see `liveness`), resume it once heard again;
        True while it is silent (its rung is not chosen then: nothing is known)."""
        quiet = session.liveness.silent_for(now)
        if (quiet is not None) == session.silent:
            return session.silent
        video, audio = session.targets.get("video"), session.targets.get("audio")
        if quiet is not None:
            log.info("viewer %s: nothing heard for %.1f s: its media is held", session.id, quiet)
            self.silences += 1
            session.silent = True
            session.video_silenced = video is not None and not video.paused
            if session.video_silenced:
                self.fanout.pause(video)
            if audio is not None:
                audio.paused = True
            return True
        log.info("viewer %s heard again: its media resumes", session.id)
        session.silent = False
        if audio is not None:
            audio.paused = False
        if session.video_silenced and video is not None and video.fanout is not None:
            self.fanout.switch(video, video.fanout.stream)  # at its next keyframe
        session.video_silenced = False
        return False

    async def _find(self, session: ViewerSession, name: str) -> Stream | None:
        if self.resolve is not None:
            return await self.resolve(name)
        return session.stream.hub.get(name)

    async def _expire_unconnected(self, session: ViewerSession) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.connected.wait(), CONNECT_TIMEOUT)
            return
        log.info("viewer %s never connected; dropped", session.id)
        await self.close(session.id)

    async def add_candidates(
        self, session_id: str, sdpfrag: str, if_match: str | None = None
    ) -> str | None:
        """Trickle ICE or ICE restart (see `trickle`): the restart's answer fragment or
        None; KeyError for an unknown session."""
        session = self.sessions[session_id]

        def follow(_connection) -> None:
            self._follow(session)

        answer = await trickle(session.pc, sdpfrag, follow, if_match)
        if answer is None:
            return None
        self.ice_restarts += 1
        log.info("viewer %s: ICE restart", session.id)
        return add_public_candidates(answer, self.public_ips)

    def _follow(self, session: ViewerSession) -> None:
        """The viewer's streams go out on its ICE connection's selected pair (a new one
        after an ICE restart or a NAT rebinding: see aiortc_tuning.on_selected_pair)."""
        for kind, target in session.targets.items():
            sender = session.senders[kind]
            if not on_selected_pair(target.binding.path, sender):
                old, target.binding.path = target.binding.path, udp_path(sender)
                old.close()
                self.path_moves += 1
                log.info("viewer %s: %s now goes to %s", session.id, kind, target.binding.path.addr)

    async def _discard(self, session: ViewerSession) -> None:
        session.closed.set()
        try:
            await close_peer(session.pc)
        except AttributeError:
            # aiortc cannot close a connection whose offer left a transceiver without
            # transports; it is marked closed by then, so stop the transports there are.
            for transceiver in session.pc.getTransceivers():
                dtls = transceiver.receiver.transport
                if dtls is not None:
                    with contextlib.suppress(Exception):
                        await dtls.stop()
                        await dtls.transport.stop()

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
        if self._adapt_task is not None:
            self._adapt_task.cancel()
        self.fanout.close()
