"""Fan-out RTP sender: one loop per stream sends every viewer's RTP.

Per packet and viewer only what must differ is done: a 12-byte RTP header (sequence
number, timestamp, marker) in front of the viewer's constant SSRC and header-extension
bytes, the viewer's SRTP protection, and a share of one UDP GSO `sendmsg` per frame
(equal-size FU-A fragments make one run of equal segments; Opus packets go in pairs).
Payloads are cut once per stream (`MediaPacket.rtp`), sequence numbers come from one
shared history per stream (a viewer's sequence number is the stream's packet index plus
its own offset), so NACKs are answered from that history, with RTX when the viewer
negotiated it. A new viewer (or one that lost the picture) is caught up from the
fan-out's copy of the GOP, paced, before it joins the live packets.

Traffic control per viewer, from its bandwidth estimate (`estimate.BandwidthEstimate`):
big frames leave in paced bursts (one timer per stream), NACKs are answered once per
round trip within an RTX byte budget, GOP replays at most once per interval, padding
(RTX padding-only packets) while the adaptation probes a viewer's link; audio has
its own subscription and targets, so nothing done to video holds it. A viewer's video
can move to another stream of the same timeline (a ladder rung) or pause, at a
keyframe, with its sequence numbers and timestamps continuing. Sender reports come from
one media clock per source, so audio and video stay in sync.

aiortc still negotiates, runs ICE and DTLS, reads RTCP and sends sender reports; how a
viewer's aiortc sender is bound to this module lives in `aiortc_tuning.take_over_rtp`.
This module knows nothing of aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .estimate import BandwidthEstimate
from .h264 import rtp_payloads
from .hub import (
    GOP_CACHE_MAX_PACKETS,
    RENDITION_SEPARATOR,
    Stream,
    Subscription,
    SubscriptionClosed,
    rung_keyframe_due,
)
from .packets import MediaPacket

log = logging.getLogger(__name__)

#: RTP payload bytes per packet: FU-A fragments are cut to exactly this size. Leaves room
#: for RTP header + extensions (~24), SRTP tag (16), UDP/IP (28) and a TURN wrap in 1500.
RTP_PAYLOAD_MAX = 1200
CLOCK_RATES = {"video": 90_000, "audio": 48_000}
#: Linux UDP_SEGMENT socket option (not exported by Python's socket module).
UDP_SEGMENT = 103
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65_000
#: Errors that mean "this socket or route will not do GSO": fall back to one packet a call.
GSO_REFUSED = {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
#: Packets kept per stream and kind for retransmission (NACK): ~5 s of 2 Mbps video.
HISTORY_SIZE = 1024
#: Cached GOP sent to one catching-up viewer: paced at this multiple of the viewer's
#: estimated rate, in bursts CATCH_UP_PAUSE_S apart (at least one frame per burst).
CATCH_UP_RATE_FACTOR = 2.5
CATCH_UP_PAUSE_S = 0.004
#: NACKs for catch-up packets are answered this long after the viewer went live.
CATCH_UP_NACK_SECONDS = 3.0
#: Spacing of cached-GOP frames sent to a new viewer (microseconds).
CATCH_UP_STEP_US = 1000
#: Spacing of cached-GOP frames replayed after a keyframe request: just over one tick
#: of the 90 kHz video clock, so even a 900-frame GOP fits before the next live frame.
REPLAY_STEP_US = 12
#: A viewer asking for keyframes gets the cached GOP at most this often (seconds);
#: keyframe requests in between are ignored (the next GOP's keyframe comes anyway).
KEYFRAME_REPLAY_INTERVAL = 3.0
#: Retransmission budget: a packet is resent at most once per round trip (at least
#: this long), and RTX bytes stay under this share of the viewer's estimated rate (or
#: of the video that reaches it, where that is more) within each RTX_WINDOW_S.
RTX_MIN_INTERVAL_S = 0.1
#: A packet is resent at most this often: a receiver that NACKs it again and again while
#: its resend is delayed (jitter) must not spend the budget that new losses need.
RTX_MAX_PER_PACKET = 3
RTX_SHARE = 0.2
#: A packet still NACKed a round trip after its first NACK was lost, not just reordered
#: (a receiver such as aiortc NACKs every gap at once, and a jittery path makes many
#: gaps that fill themselves): its resend may use this further share of the rate, so
#: that NACKs for late packets cannot spend what real losses need.
RTX_LOST_SHARE = 0.2
RTX_WINDOW_S = 1.0
#: Pacing: a frame of more than PACE_BURST_PACKETS packets leaves in bursts, one per
#: PACE_INTERVAL_S tick of the stream's one timer, at PACE_FACTOR x the viewer's
#: estimated rate (libwebrtc's pacer: 5 ms, 2.5x), and at least STREAM_PACE_FACTOR x
#: the stream's own bitrate (an estimate stuck under the rung it watches must not make
#: the pacer fall behind and flush whole frames at line rate). A viewer with more than
#: PACE_MAX_DELAY_S of its paced rate queued is flushed at once: the loop never lags.
PACE_BURST_PACKETS = 8
PACE_INTERVAL_S = 0.005
PACE_FACTOR = 2.5
STREAM_PACE_FACTOR = 1.5
PACE_MAX_DELAY_S = 0.5
#: Padding probe: while the adaptation tests whether a viewer's link carries a higher
#: rung, the pacer adds padding-only RTX packets (RTP padding, PADDING_PACKET_BYTES,
#: abs-send-time stamped: the browser's REMB counts them) at the missing rate. RTX,
#: because lost padding on the media SSRC would be NACKed; the browser drops padding-only
#: RTX packets unread (libwebrtc pads this way). The padding grows from nothing to its
#: rate over PADDING_RAMP_S and stops at the first sign of a full link (the REMB drops,
#: a video packet is NACKed): a link that cannot carry it says so with the least queued
#: and lost.
PADDING_PACKET_BYTES = 255
PADDING_RAMP_S = 2.5
#: A padding packet's payload: all padding, its last byte the padding's length.
PADDING_PAYLOAD = bytes(PADDING_PACKET_BYTES - 1) + bytes((PADDING_PACKET_BYTES,))
#: Opus packets go to viewers in pairs (one syscall each): the first waits at most this
#: long for the second (packets come every 20 ms).
AUDIO_PAIR_WAIT_S = 0.025
#: Queue of the one hub subscription a stream's fan-out reads (all viewers share it).
FANOUT_QUEUE_PACKETS = 600
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800
#: A viewer stream's sender-report figures are handed to aiortc at most this often
#: (0.25 s as a 64-bit NTP interval).
REPORT_EVERY_NTP = 1 << 30

#: (stream name, packet, fan-out picked it up, sent to every viewer) monotonic times.
OnSent = Callable[[str, MediaPacket, float, float], None]

RTP_HEADER = struct.Struct("!BBHI")  # V/P/X/CC, M/PT, sequence number, timestamp
RTX_OSN = struct.Struct("!H")


@dataclass(slots=True)
class RtpReady:
    """An encoded packet cut into RTP payloads, with its RTP timestamp (no origin)."""

    payloads: list[bytes]
    timestamp: int


@dataclass(slots=True)
class AudioFrame:
    """One Opus packet as every viewer of a stream gets it; its RED payloads (one per
    Opus payload type viewers negotiated, usually one) are made once, when first asked."""

    data: bytes
    timestamp: int  # RTP, no origin
    index: int  # in the stream's audio history (the sequence number, no offset)
    pts: int
    previous: tuple[bytes, int] | None  # the packet before it (payload, RTP timestamp)
    _red: dict[int, bytes] = field(default_factory=dict)

    def red(self, opus_type: int) -> bytes:
        payload = self._red.get(opus_type)
        if payload is None:
            payload = self._red[opus_type] = red_payload(
                opus_type, self.data, self.previous, self.timestamp
            )
        return payload


def rtp_ready(packet: MediaPacket) -> RtpReady:
    """The packet's RTP payloads, made once per stream and shared by every viewer."""
    ready = packet.rtp
    if ready is None:
        if packet.kind == "video":
            payloads = rtp_payloads(packet.data, RTP_PAYLOAD_MAX)
        else:
            payloads = [packet.data]
        ready = packet.rtp = RtpReady(payloads, packet.pts * CLOCK_RATES[packet.kind] // 1_000_000)
    return ready


#: RED block header limits (RFC 2198): a 14-bit timestamp offset, a 10-bit length.
RED_MAX_OFFSET = (1 << 14) - 1
RED_MAX_BLOCK = (1 << 10) - 1


def red_payload(
    block_type: int, primary: bytes, previous: tuple[bytes, int] | None, timestamp: int
) -> bytes:
    """An RFC 2198 payload: the previous packet (payload, RTP timestamp) as the redundant
    block when it fits the header's fields, then this one; both of `block_type`."""
    if previous is not None:
        data, previous_ts = previous
        offset = (timestamp - previous_ts) & 0xFFFFFFFF
        if 0 < offset <= RED_MAX_OFFSET and 0 < len(data) <= RED_MAX_BLOCK:
            header = (0x80 | block_type) << 24 | offset << 10 | len(data)
            return b"".join((header.to_bytes(4, "big"), bytes((block_type,)), data, primary))
    return bytes((block_type,)) + primary


def ntp_now() -> int:
    """64-bit NTP timestamp of now (for RTCP sender reports)."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | (nanos << 32) // 1_000_000_000


def abs_send_time(ntp: int) -> int:
    """The abs-send-time header extension value (6.18 fixed-point seconds) of an NTP time."""
    return (ntp >> 14) & 0xFFFFFF


#: The most the playout-delay extension can say (40.95 s): no limit.
PLAYOUT_DELAY_ANY_MS = 40_950


def playout_delay(min_ms: int, max_ms: int = PLAYOUT_DELAY_ANY_MS) -> bytes:
    """The playout-delay header extension value: the least and the most (12 bits each,
    in 10 ms) a receiver's jitter buffer is to hold the video."""
    low, high = (min(max(0, round(ms / 10)), 0xFFF) for ms in (min_ms, max_ms))
    return (low << 12 | high).to_bytes(3, "big")


class MediaClock:
    """One stream's presentation timeline mapped once to NTP wallclock.

    Every sender report of every track of the stream (and of its ladder renditions,
    which share the pts timeline) pairs an RTP time with the wallclock this one mapping
    gives its pts, not with when a packet happened to leave: audio and video agree, so
    the browser syncs lips."""

    __slots__ = ("pts_origin", "ntp_origin")

    def __init__(self) -> None:
        self.pts_origin: int | None = None
        self.ntp_origin = 0

    def ntp(self, pts: int) -> int:
        if self.pts_origin is None:
            self.pts_origin, self.ntp_origin = pts, ntp_now()
        return self.ntp_origin + ((pts - self.pts_origin) << 32) // 1_000_000


def squeeze(gop: list[MediaPacket], after: int | None) -> list[tuple[MediaPacket, int]]:
    """Timestamps for sending a cached GOP at once.

    To a new viewer (`after` None) the frames go 1 ms apart ending on the newest one, so
    the first picture shows at once and at live latency. To a viewer that was already
    sent frames up to `after` (a keyframe request), they go just over one 90 kHz tick
    apart right after it: distinct RTP timestamps, all before the next live frame, so
    the decoder rebuilds the picture and the player shows the newest frame."""
    n = len(gop)
    if not n:
        return []
    if after is None:
        start = gop[-1].pts - (n - 1) * CATCH_UP_STEP_US
        return [(packet, start + i * CATCH_UP_STEP_US) for i, packet in enumerate(gop)]
    return [(packet, after + (i + 1) * REPLAY_STEP_US) for i, packet in enumerate(gop)]


# -- the wire ---------------------------------------------------------------------------
class UdpPath:
    """One viewer's UDP path: a socket of its own (a dup of the ICE pair's) and the
    remote address. Sends a frame's SRTP packets with as few syscalls as it can."""

    def __init__(
        self,
        sock: socket.socket | None,
        addr: tuple,
        fallback: Callable[[bytes], None] | None = None,
    ) -> None:
        self.sock = sock
        self.addr = addr
        self.fallback = fallback
        self.gso = sock is not None
        self.syscalls = 0
        self.dropped = 0
        self.errors = 0

    def send(self, packets: list[bytes]) -> None:
        """Send in order; equal-size runs go out in one GSO call each."""
        if self.sock is None:
            for data in packets:
                self.fallback(data)
            return
        if len(packets) == 1 or not self.gso:
            for i, data in enumerate(packets):
                if not self._sendto(data):
                    self.dropped += len(packets) - i - 1
                    return
            return
        i, n = 0, len(packets)
        while i < n:
            segment = len(packets[i])
            j, total = i + 1, segment
            while j < n and j - i < GSO_MAX_SEGMENTS:
                size = len(packets[j])
                if size > segment or total + size > GSO_MAX_BYTES:
                    break
                total += size
                j += 1
                if size < segment:
                    break  # only the last segment of a call may be shorter
            run = packets[i:j]
            if not (self._sendmsg(run, segment) if len(run) > 1 else self._sendto(run[0])):
                self.dropped += n - j
                return
            i = j

    def _sendto(self, data: bytes) -> bool:
        self.syscalls += 1
        try:
            self.sock.sendto(data, self.addr)
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError:
            self.errors += 1
            return False
        return True

    def _sendmsg(self, run: list[bytes], segment: int) -> bool:
        self.syscalls += 1
        try:
            self.sock.sendmsg(
                run,
                [(socket.SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, sys.byteorder))],
                0,
                self.addr,
            )
        except BlockingIOError:
            self.dropped += len(run)
            return False
        except OSError as exc:
            if exc.errno not in GSO_REFUSED:
                self.errors += 1
                return False
            log.info("UDP GSO refused (%s): one packet per call for %s", exc, self.addr)
            self.gso = False
            return all(self._sendto(data) for data in run)
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
            self.fallback = lambda data: None


# -- per viewer -------------------------------------------------------------------------
@dataclass(slots=True)
class RtpBinding:
    """What one viewer's RTP stream (one SSRC) needs from its negotiation."""

    kind: str
    payload_type: int
    #: RTP header bytes after the timestamp: SSRC and the header extensions (mid).
    header_tail: bytes
    #: First header byte (version 2, X bit when there are extensions).
    first_byte: int
    #: SRTP-protects a whole RTP packet (retransmissions).
    protect: Callable[[bytes], bytes]
    path: UdpPath
    #: RTX payload type, SSRC-and-extension bytes and first byte, when RTX was negotiated.
    rtx_payload_type: int | None = None
    rtx_header_tail: bytes = b""
    #: RED payload type (RFC 2198) when negotiated for this Opus stream: each packet
    #: then carries the previous one too, so one lost packet is rebuilt, not concealed.
    red_payload_type: int | None = None
    #: (rtp timestamp, ntp time, packets, octets) after each burst, for sender reports.
    report: Callable[[int, int, int, int], None] = lambda *args: None
    initial_sequence: int = 0
    timestamp_origin: int = 0
    #: write(second byte, sequence number, timestamp, payload) -> SRTP packet: the fast
    #: path (aiortc_tuning.srtp_writer); by default built from `protect`.
    write: Callable[[int, int, int, bytes], bytes] | None = None
    #: Offset in `header_tail` of the 3-byte abs-send-time extension, when negotiated.
    abs_send_time_at: int | None = None
    #: stamp(abs-send-time) sets the value `write` puts in the packets that follow.
    stamp: Callable[[int], None] = lambda value: None
    #: patch(offset, bytes) sets header-tail bytes of the packets `write` writes next.
    patch: Callable[[int, bytes], None] | None = None
    #: Offsets in `header_tail` and `rtx_header_tail` of the 3-byte playout-delay
    #: extension, when negotiated (see `set_playout_delay`).
    playout_delay_at: int | None = None
    rtx_playout_delay_at: int | None = None
    #: The viewer's round-trip time (seconds) from its receiver reports, if known.
    rtt: Callable[[], float | None] = lambda: None

    def __post_init__(self) -> None:
        if self.write is None:
            protect, pack, b0 = self.protect, RTP_HEADER.pack, self.first_byte
            tail = bytearray(self.header_tail)
            at = self.abs_send_time_at

            def write(b1: int, seq: int, ts: int, payload: bytes) -> bytes:
                return protect(pack(b0, b1, seq, ts) + tail + payload)

            def stamp(value: int) -> None:
                if at is not None:
                    tail[at : at + 3] = value.to_bytes(3, "big")

            def patch(offset: int, data: bytes) -> None:
                tail[offset : offset + len(data)] = data

            self.write, self.stamp, self.patch = write, stamp, patch

    def set_playout_delay(self, min_ms: int, max_ms: int = PLAYOUT_DELAY_ANY_MS) -> bool:
        """Ask the viewer's jitter buffer to hold video `min_ms`..`max_ms` from the next
        packet on (RTX included); False when the extension was not negotiated."""
        if self.playout_delay_at is None or self.patch is None:
            return False
        value = playout_delay(min_ms, max_ms)
        at = self.playout_delay_at
        self.header_tail = self.header_tail[:at] + value + self.header_tail[at + 3 :]
        self.patch(at, value)
        at = self.rtx_playout_delay_at
        if at is not None:
            self.rtx_header_tail = (
                self.rtx_header_tail[:at] + value + self.rtx_header_tail[at + 3 :]
            )
        return True

    def tail_at(self, ntp: int, rtx: bool = False) -> bytes:
        """The header tail (RTX's when `rtx`) with abs-send-time set for `ntp`."""
        tail = self.rtx_header_tail if rtx else self.header_tail
        at = self.abs_send_time_at
        if at is None:
            return tail
        return tail[:at] + abs_send_time(ntp).to_bytes(3, "big") + tail[at + 3 :]


@dataclass(eq=False)
class RtpTarget:
    """One viewer's RTP stream of one kind, fed by its stream's fan-out."""

    binding: RtpBinding
    fanout: StreamFanout | None = None
    #: The viewer's bandwidth estimate (shared by its audio and video streams).
    estimate: BandwidthEstimate = field(default_factory=BandwidthEstimate)
    #: Stream packet index + offset = this viewer's sequence number (while live).
    seq_offset: int = 0
    #: First stream packet index sent with the current offset (older ones: no NACK).
    live_from: int = 0
    #: Set while cached GOP frames (then live ones) wait to be sent to this viewer.
    backlog: deque | None = None
    #: Newest presentation time sent (B-frames make pts go back and forth).
    last_pts: int | None = None
    #: Held: nothing is sent (video: audio only below the estimate's floor; either
    #: kind: the viewer went silent, see `liveness`).
    paused: bool = False
    #: The fan-out this viewer moves to at its next keyframe (a rung switch, a resume).
    joining: StreamFanout | None = None
    #: The target rung's keyframe came with a pts already sent (it lags the stream the
    #: viewer watches): stop at the current stream's next keyframe, or where a rung's
    #: next one is due when moving to a rung (`holding`), and join
    #: the target's keyframe of that same pts, so time never goes back for the viewer.
    hold_next_key: bool = False
    holding: bool = False
    packets: int = 0
    octets: int = 0
    nacks: int = 0
    #: Packets of the viewer's current stream NACKed (not what its link dropped before
    #: a pause or a switch; each once, however often the browser asks again for one it
    #: did not get): what rung choices judge loss by.
    nacks_live: int = 0
    retransmits: int = 0
    rtx_octets: int = 0
    rtx_repeats_ignored: int = 0
    rtx_over_budget: int = 0
    keyframe_replays: int = 0
    keyframe_requests_ignored: int = 0
    paced_frames: int = 0
    pace_flushes: int = 0
    switches: int = 0
    #: Padding-only RTX packets sent while a probe runs: bit/s at full rate and at its
    #: start, since and until when, credit bytes; REMB drops, live NACKs and packets
    #: sent at its start.
    padding_bps: float = 0.0
    padding_floor: float = 0.0
    padding_since: float = 0.0
    padding_until: float = 0.0
    padding_credit: float = 0.0
    padding_from: tuple[int, int, int] = (0, 0, 0)
    padding_octets: int = 0
    started_at: float = field(default_factory=time.monotonic)
    #: Sequence number of the next packet this viewer gets (kept across switches).
    next_seq: int = 0
    #: Frames waiting for the pacer: [payloads, next index, first seq, timestamp, pt].
    pending: deque = field(default_factory=deque)
    pending_packets: int = 0
    #: Bytes the pacer has granted and not yet used (a burst waits until it covers it).
    pace_credit: float = 0.0
    _next_seq: int = 0
    #: Sequence number -> (payload, rtp timestamp, marker) of what the current catch-up
    #: sent, for NACKs (live packets are answered from the stream's shared history).
    _catch_up_sent: dict = field(default_factory=dict)
    _catch_up_nacks_until: float = 0.0
    _rtx_seq: int = 0
    _rtx_window_at: float = 0.0
    _rtx_window_bytes: int = 0
    #: Sequence number -> when it was last retransmitted; and when first NACKed.
    _resent: dict = field(default_factory=dict)
    _nacked: dict = field(default_factory=dict)
    _reported_ntp: int = 0
    _reported_packets: int = 0
    _reported_octets: int = 0
    #: RTP timestamp of the newest packet sent (padding packets carry it).
    _last_ts: int = 0
    _last_replay: float = 0.0
    _drain: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self._rtx_seq = self.binding.initial_sequence ^ 0x5A5A
        self.next_seq = self.binding.initial_sequence

    @property
    def kind(self) -> str:
        return self.binding.kind

    def send_frame(
        self, payloads: list[bytes], rtp_ts: int, seq: int, pts: int, ntp: int, pace: bool = True
    ) -> None:
        """Send one frame's payloads starting at sequence number `seq`: at once when it
        is small and nothing waits, otherwise through the stream's pacer."""
        b = self.binding
        pt = b.payload_type
        ts = (rtp_ts + b.timestamp_origin) & 0xFFFFFFFF
        last = len(payloads) - 1
        self.next_seq = (seq + len(payloads)) & 0xFFFF
        self._account(len(payloads), sum(map(len, payloads)), ts, pts)
        if not pace or (not self.pending and last < PACE_BURST_PACKETS) or self.fanout is None:
            write = b.write
            b.stamp(abs_send_time(ntp))
            b.path.send(
                [
                    write(pt | 0x80 if i == last else pt, (seq + i) & 0xFFFF, ts, p)
                    for i, p in enumerate(payloads)
                ]
            )
            return
        self.paced_frames += 1
        if not self.pending:
            # The first burst goes now (GSO), the rest waits for the stream's pacer.
            first = PACE_BURST_PACKETS
            write = b.write
            b.stamp(abs_send_time(ntp))
            b.path.send(
                [write(pt, (seq + i) & 0xFFFF, ts, p) for i, p in enumerate(payloads[:first])]
            )
            self.pace_credit = 0.0
        else:
            first = 0
        self.pending.append([payloads, first, seq, ts, pt])
        self.pending_packets += len(payloads) - first
        if self.pending_packets * RTP_PAYLOAD_MAX > self.pace_rate() * PACE_MAX_DELAY_S / 8:
            self.pace_flushes += 1
            self.send_paced(1 << 40, ntp)  # too far behind: everything now
        else:
            self.fanout.pace(self)

    def drop_pending(self) -> None:
        """Forget what waits for the pacer (a keyframe comes instead). The next packets
        take the sequence numbers those had: a gap would be counted lost by the viewer,
        NACKed, and read by the adaptation as a link that cannot carry the stream."""
        if self.pending:
            _, sent, seq, _, _ = self.pending[0]
            self.next_seq = (seq + sent) & 0xFFFF
        self.pending.clear()
        self.pending_packets = 0

    def pace_rate(self) -> float:
        """The rate (bit/s) this viewer's packets are paced at."""
        fanout = self.fanout
        stream_bps = fanout.bitrate_bps if fanout is not None else 0.0
        return max(self.estimate.bps * PACE_FACTOR, stream_bps * STREAM_PACE_FACTOR)

    def send_paced(self, budget: float, ntp: int) -> bool:
        """Add `budget` bytes of credit; once it covers a burst (PACE_BURST_PACKETS, or
        all that waits) send that many queued packets in one GSO-batched call. True
        while packets are left."""
        pending = self.pending
        credit = self.pace_credit + budget
        count = int(credit // RTP_PAYLOAD_MAX)
        if count < min(PACE_BURST_PACKETS, self.pending_packets):
            self.pace_credit = credit
            return True
        b = self.binding
        write, burst = b.write, []
        b.stamp(abs_send_time(ntp))
        while pending and len(burst) < count:
            chunk = pending[0]
            payloads, i, seq, ts, pt = chunk
            last = len(payloads) - 1
            end = min(len(payloads), i + count - len(burst))
            for j in range(i, end):
                burst.append(
                    write(pt | 0x80 if j == last else pt, (seq + j) & 0xFFFF, ts, payloads[j])
                )
            if end == len(payloads):
                pending.popleft()
            else:
                chunk[1] = end
        self.pending_packets -= len(burst)
        self.pace_credit = credit - len(burst) * RTP_PAYLOAD_MAX if pending else 0.0
        if burst:
            b.path.send(burst)
        return bool(pending)

    # -- padding: what a probe adds to test the viewer's link ----------------------------
    def start_padding(self, bps: float, seconds: float, floor: float = 0.0) -> bool:
        """Send padding on top of the video for `seconds`, growing from `floor` to `bps`
        bit/s (see PADDING_PACKET_BYTES). False when the viewer cannot get it: no RTX
        negotiated, or no video flowing."""
        fanout = self.fanout
        if self.binding.rtx_payload_type is None or fanout is None or self.paused or bps <= 0:
            return False
        self.padding_bps, self.padding_floor, self.padding_credit = bps, floor, 0.0
        self.padding_since = time.monotonic()
        self.padding_until = self.padding_since + seconds
        self.padding_from = (self.estimate.remb_drops, self.nacks_live, self.packets)
        fanout.pace(self)
        return True

    def stop_padding(self) -> None:
        self.padding_bps = self.padding_until = 0.0

    @property
    def video_bps(self) -> float:
        """The rate of the video this viewer gets now (bit/s; nothing while held)."""
        return 0.0 if self.paused or self.fanout is None else self.fanout.bitrate_bps

    def padding_congested(self) -> bool:
        """Did the link show it is full since the padding started (see PADDING_RAMP_S)?
        A REMB drop, or NACKs for more of the video than the link loses anyway: on a
        clean link any NACK, on one with background loss more than chance (at 2 % loss
        the first NACK stopped 86 % of a class's probes, which then never climbed from
        the rung it started on)."""
        drops, nacks, packets = self.padding_from
        estimate = self.estimate
        if estimate.remb_drops > drops:
            return True
        nacks, packets = self.nacks_live - nacks, self.packets - packets
        if estimate.background_loss > 0:
            return estimate.beyond_background(nacks, packets)
        return nacks > 0

    def send_padding(self, elapsed: float, now: float, ntp: int) -> bool:
        """The padding due for `elapsed` seconds, in one GSO-batched call; True while
        the padding goes on."""
        if now >= self.padding_until or self.paused or self.padding_congested():
            self.stop_padding()
            return False
        ramp = min(1.0, (now - self.padding_since) / PADDING_RAMP_S)
        bps = self.padding_floor + (self.padding_bps - self.padding_floor) * ramp
        credit = self.padding_credit + bps * elapsed / 8
        count = int(credit // PADDING_PACKET_BYTES)
        self.padding_credit = credit - count * PADDING_PACKET_BYTES
        if count:
            b = self.binding
            head = bytes((b.first_byte | 0x20, b.rtx_payload_type))
            tail = self._last_ts.to_bytes(4, "big") + b.tail_at(ntp, rtx=True) + PADDING_PAYLOAD
            packets = []
            for _ in range(count):
                seq, self._rtx_seq = self._rtx_seq, (self._rtx_seq + 1) & 0xFFFF
                packets.append(b.protect(head + seq.to_bytes(2, "big") + tail))
            b.path.send(packets)
            self.padding_octets += count * PADDING_PACKET_BYTES
        return True

    def send_audio(self, frames: list[AudioFrame], ntp: int) -> None:
        """Send one or two Opus packets in one call: two go as one GSO pair, the shorter
        last (the receiver reorders by seq). With RED each carries the one before it."""
        b = self.binding
        write, origin, offset = b.write, b.timestamp_origin, self.seq_offset
        red, opus = b.red_payload_type, b.payload_type
        b1 = (opus if red is None else red) | 0x80
        payloads = [f.data if red is None else f.red(opus) for f in frames]
        packets = [
            write(b1, (f.index + offset) & 0xFFFF, (f.timestamp + origin) & 0xFFFFFFFF, payload)
            for f, payload in zip(frames, payloads, strict=True)
        ]
        if len(packets) == 2 and len(packets[0]) < len(packets[1]):
            packets.reverse()
        b.path.send(packets)
        last = frames[-1]
        self.next_seq = (last.index + offset + 1) & 0xFFFF
        octets = sum(len(payload) for payload in payloads)
        self._account(len(frames), octets, (last.timestamp + origin) & 0xFFFFFFFF, last.pts)

    def _account(self, packets: int, octets: int, ts: int, pts: int) -> None:
        self.packets += packets
        self.octets += octets
        self._last_ts = ts
        if self.last_pts is None or pts > self.last_pts:
            self.last_pts = pts
        fanout = self.fanout
        if fanout is None:
            return
        # The sender report pairs this RTP time with the wallclock the stream's one
        # media clock gives its pts (not the send time): every track maps alike.
        ntp = fanout.clock.ntp(pts)
        if abs(ntp - self._reported_ntp) > REPORT_EVERY_NTP:
            # Kept fresh for aiortc's RTCP loop (about once a second), not every frame.
            self._reported_ntp = ntp
            self.binding.report(
                ts, ntp, self.packets - self._reported_packets, self.octets - self._reported_octets
            )
            self._reported_packets, self._reported_octets = self.packets, self.octets

    # -- catch-up: cached GOP, keyframe requests ----------------------------------------
    def start_catch_up(self, frames: list[tuple[MediaPacket, int]]) -> None:
        """Send these (packet, pts) first, at this viewer's own pace, then go live."""
        fanout = self.fanout
        if fanout is None:
            return
        if self.backlog is None:
            self._next_seq = self.next_seq
        self.backlog = deque(frames)
        self._catch_up_sent = {}
        if self._drain is None or self._drain.done():
            self._drain = asyncio.ensure_future(self._drain_backlog())

    async def _drain_backlog(self) -> None:
        try:
            await self._send_backlog()
        except asyncio.CancelledError:
            raise
        except Exception:  # that viewer's SRTP or socket is gone: only it stops
            log.exception("viewer RTP stream dropped while catching up")
            self.stop()

    async def _send_backlog(self) -> None:
        while self.backlog:
            # Paced at a multiple of the viewer's estimated rate, not at line rate.
            budget = self.estimate.bps * CATCH_UP_RATE_FACTOR * CATCH_UP_PAUSE_S / 8
            ntp = ntp_now()
            while self.backlog and budget > 0:
                packet, pts = self.backlog.popleft()
                ready = rtp_ready(packet)
                rtp_ts = pts * CLOCK_RATES[packet.kind] // 1_000_000
                seq, last = self._next_seq, len(ready.payloads) - 1
                self.send_frame(ready.payloads, rtp_ts, seq, pts, ntp, pace=False)
                for i, payload in enumerate(ready.payloads):
                    marker = 0x80 if i == last else 0
                    self._catch_up_sent[(seq + i) & 0xFFFF] = (payload, rtp_ts, marker)
                self._next_seq = (seq + len(ready.payloads)) & 0xFFFF
                budget -= len(packet.data)
            if self.backlog:
                await asyncio.sleep(CATCH_UP_PAUSE_S)
        fanout = self.fanout
        if fanout is not None:
            self.live_from = fanout.history[self.kind].next_index
            self.seq_offset = self._next_seq - self.live_from
        self.backlog = None
        self._catch_up_nacks_until = time.monotonic() + CATCH_UP_NACK_SECONDS

    def request_keyframe(self) -> bool:
        """The viewer lost the picture (PLI/FIR). A publisher that can make a keyframe on
        demand (WHIP) is asked for one; an RTMP publisher cannot be, so the stream's
        cached GOP is replayed to this viewer alone, at most once per
        KEYFRAME_REPLAY_INTERVAL (requests in between are ignored)."""
        now = time.monotonic()
        if self.kind != "video" or self.fanout is None or self.paused:
            return False
        if self.joining is not None or now - self._last_replay < KEYFRAME_REPLAY_INTERVAL:
            # A keyframe is on its way (a switch) or was just sent.
            self.keyframe_requests_ignored += 1
            return False
        requester = self.fanout.stream.keyframe_requester
        if requester is not None:
            self._last_replay = now
            requester()
            return False
        gop = list(self.fanout.gop)
        if not gop:
            return False
        self._last_replay = now
        self.keyframe_replays += 1
        self.drop_pending()  # the replay supersedes what still waits for the pacer
        self.start_catch_up(squeeze(gop, self.last_pts))
        return True

    def retransmit(self, seq: int) -> bool:
        """Answer a NACK from the stream's shared history (as RTX when negotiated),
        within budget: once per round trip per packet, RTX bytes under RTX_SHARE of the
        viewer's estimated rate per RTX_WINDOW_S; packets past the history are ignored."""
        self.nacks += 1
        fanout = self.fanout
        if fanout is None or self.paused:
            return False  # held: a keyframe comes with the video again
        now = time.monotonic()
        if self._catch_up_sent and now > self._catch_up_nacks_until:
            self._catch_up_sent = {}  # long live again: its sequence numbers will wrap
        entry = self._catch_up_sent.get(seq)
        if entry is None and self.backlog is None:
            history = fanout.history[self.kind]
            latest = history.next_index - 1
            index = latest - ((latest + self.seq_offset - seq) & 0xFFFF)
            entry = history.get(index) if index >= self.live_from else None
        if entry is None:
            return False
        first_nacked = self._nacked.get(seq)
        if first_nacked is None or now - first_nacked >= RTX_WINDOW_S:  # not a repeat
            self.nacks_live += 1
            if len(self._nacked) > 2 * HISTORY_SIZE:
                self._nacked = {k: t for k, t in self._nacked.items() if now - t < RTX_WINDOW_S}
            self._nacked[seq] = first_nacked = now
        round_trip = max(self.binding.rtt() or 0.0, RTX_MIN_INTERVAL_S)
        last, times = self._resent.get(seq, (None, 0))
        if times >= RTX_MAX_PER_PACKET or (last is not None and now - last < round_trip):
            self.rtx_repeats_ignored += 1  # its resend is still on the way (jitter), or lost twice
            return False
        payload, rtp_ts, marker = entry
        if now - self._rtx_window_at >= RTX_WINDOW_S:
            self._rtx_window_at, self._rtx_window_bytes = now, 0
        share = RTX_SHARE
        if now - first_nacked >= round_trip:
            share += RTX_LOST_SHARE
        # Of what reaches the viewer: after a padding probe its REMB trails the rung it
        # climbed to by 10-20 s (8 % a second), and a budget of the REMB left 5 % loss
        # at 720p unrepaired (3.2 s frozen a minute).
        reaches = max(self.estimate.bps, self.video_bps * (1 - self.estimate.loss))
        cap = reaches * share * RTX_WINDOW_S / 8
        if self._rtx_window_bytes + len(payload) > cap:
            self.rtx_over_budget += 1
            return False
        if len(self._resent) > 2 * HISTORY_SIZE:
            self._resent = {k: v for k, v in self._resent.items() if now - v[0] < RTX_WINDOW_S}
        self._resent[seq] = (now, times + 1)
        b = self.binding
        ts = (rtp_ts + b.timestamp_origin) & 0xFFFFFFFF
        ntp = ntp_now()
        if b.rtx_payload_type is not None:
            rtx_seq, self._rtx_seq = self._rtx_seq, (self._rtx_seq + 1) & 0xFFFF
            header = RTP_HEADER.pack(b.first_byte, b.rtx_payload_type | marker, rtx_seq, ts)
            data = header + b.tail_at(ntp, rtx=True) + RTX_OSN.pack(seq) + payload
        else:
            header = RTP_HEADER.pack(b.first_byte, b.payload_type | marker, seq, ts)
            data = header + b.tail_at(ntp) + payload
        b.path.send([b.protect(data)])
        self.retransmits += 1
        self.rtx_octets += len(payload)
        self._rtx_window_bytes += len(payload)
        return True

    def stats(self) -> dict:
        path = self.binding.path
        age = max(time.monotonic() - self.started_at, 1e-6)
        out = {
            "packets": self.packets,
            "octets": self.octets,
            "bitrate_kbps": round(self.octets * 8 / age / 1000, 1),
            "nacks": self.nacks,
            "retransmits": self.retransmits,
            "rtx_octets": self.rtx_octets,
            "rtx_repeats_ignored": self.rtx_repeats_ignored,
            "rtx_over_budget": self.rtx_over_budget,
            "keyframe_replays": self.keyframe_replays,
            "keyframe_requests_ignored": self.keyframe_requests_ignored,
            "send_dropped": path.dropped,
            "send_errors": path.errors,
            "gso": path.gso,
        }
        if self.kind == "audio":
            out["red"] = self.binding.red_payload_type is not None
        if self.kind == "video":
            out["paced_frames"] = self.paced_frames
            out["pace_flushes"] = self.pace_flushes
            out["switches"] = self.switches
            out["padding_octets"] = self.padding_octets
            out["paused"] = self.paused
            if self.fanout is not None:
                out["serving"] = self.fanout.stream.name
        return out

    def stop(self) -> None:
        if self.fanout is not None:
            self.fanout.remove(self)
        if self.joining is not None:
            self.joining.cancel_join(self)
        if self._drain is not None:
            self._drain.cancel()
        self.pending.clear()


# -- per stream -------------------------------------------------------------------------
class History:
    """The last HISTORY_SIZE RTP payloads of one kind of one stream, by packet index."""

    __slots__ = ("entries", "next_index")

    def __init__(self) -> None:
        self.entries: list = [None] * HISTORY_SIZE
        self.next_index = 0

    def add(self, payloads: list[bytes], rtp_ts: int) -> int:
        """Remember a frame's payloads; returns the index of the first."""
        first = self.next_index
        entries, last = self.entries, len(payloads) - 1
        for i, payload in enumerate(payloads):
            entries[(first + i) % HISTORY_SIZE] = (first + i, payload, rtp_ts, i == last)
        self.next_index = first + len(payloads)
        return first

    def get(self, index: int) -> tuple[bytes, int, int] | None:
        entry = self.entries[index % HISTORY_SIZE]
        if entry is None or entry[0] != index:
            return None
        return entry[1], entry[2], 0x80 if entry[3] else 0


class StreamFanout:
    """One stream's packets to every viewer of it in this process: one hub
    subscription per kind, one loop each, one history per kind, one pacing timer.

    It keeps its own copy of the stream's GOP, made of exactly the packets it has sent,
    so a viewer that joins (or asks for a keyframe) is caught up without a frame missed
    or sent twice, whatever is still queued in the subscription."""

    def __init__(self, stream: Stream, on_sent: OnSent, clock: MediaClock | None = None) -> None:
        self.stream = stream
        self.on_sent = on_sent
        #: The stream's media clock -> wallclock mapping (shared with its renditions).
        self.clock = clock or MediaClock()
        self.targets: dict[str, list[RtpTarget]] = {"video": [], "audio": []}
        self.history = {"video": History(), "audio": History()}
        self.gop: list[MediaPacket] = stream.gop_snapshot()
        #: A ladder rung: keyframes also where `rung_keyframe_due` says (not only the
        #: source's), so a viewer moving here holds at that frame of its own stream.
        self.is_rung = RENDITION_SEPARATOR in stream.name
        #: The pts of the stream's last keyframe (where the rungs' next ones are due).
        self.key_pts: int | None = self.gop[0].pts if self.gop else None
        #: Video viewers (of other fan-outs, or paused) that move here at the next keyframe.
        self.joining: list[RtpTarget] = []
        #: Viewers with packets waiting for the pacer, and its one timer.
        self._pacing: dict[RtpTarget, None] = {}
        self._pace_timer: asyncio.TimerHandle | None = None
        self._paced_at = 0.0
        #: Video bits per second, measured (for rung choice; REMB counts video only).
        self.bitrate_bps = 0.0
        self._rate_at = time.monotonic()
        self._rate_bytes = 0
        self._failed: list[RtpTarget] = []
        #: An Opus packet waiting for the next one (they go out in pairs).
        self._held_audio: MediaPacket | None = None
        #: The last Opus packet sent (payload, RTP timestamp): RED's redundant block.
        self._last_audio: tuple[bytes, int] | None = None
        self._held_timer: asyncio.TimerHandle | None = None
        # Two subscriptions: a video queue that overflows (and waits for a keyframe)
        # never takes the audio with it.
        self.subscription: Subscription = stream.subscribe(
            ("video",),
            max_packets=FANOUT_QUEUE_PACKETS,
            with_gop=False,
            label=f"fanout-{stream.name}",
        )
        self.audio_subscription: Subscription = stream.subscribe(
            ("audio",),
            max_packets=FANOUT_QUEUE_PACKETS,
            with_gop=False,
            label=f"fanout-audio-{stream.name}",
        )
        # Continue right after the GOP copied above, not at the next keyframe.
        self.subscription.clear()
        self.task = asyncio.ensure_future(self._run(self.subscription))
        self.audio_task = asyncio.ensure_future(self._run(self.audio_subscription))

    def __len__(self) -> int:
        return sum(len(t) for t in self.targets.values()) + len(self.joining)

    def add(self, target: RtpTarget, first_frame_only: bool = False) -> None:
        """Start a viewer: video from the cached GOP, audio live. With `first_frame_only`
        (a class pressing play together) only the GOP's keyframe: a picture at once for a
        fraction of the bytes, then nothing until a keyframe, of this stream or of the
        rung the viewer is switched to meanwhile (`Fanout.switch`)."""
        target.fanout = self
        kind = target.kind
        self.targets[kind].append(target)
        history = self.history[kind]
        target.live_from = history.next_index
        target.seq_offset = target.binding.initial_sequence - history.next_index
        if kind != "video":
            return
        gop = list(self.gop)
        if first_frame_only and gop:
            target.paused = True  # live frames would lack the frames left out
            self.join(target)
            target.start_catch_up([(gop[0], gop[-1].pts)])  # shown at live latency
            return
        target.start_catch_up(squeeze(gop, None))

    def join(self, target: RtpTarget) -> None:
        """Move a video viewer here at this stream's next keyframe, its sequence numbers
        and timestamps continuing (renditions share the source's pts timeline)."""
        if target.joining is not None and target.joining is not self:
            target.joining.cancel_join(target)
        if target.joining is not self:
            target.joining = self
            self.joining.append(target)

    def cancel_join(self, target: RtpTarget) -> None:
        with contextlib.suppress(ValueError):
            self.joining.remove(target)
        if target.joining is self:
            target.joining = None
            target.hold_next_key = target.holding = False

    def _take_joining(self, first: int, pts: int) -> None:
        """At a keyframe with stream index `first`: the waiting viewers start with it
        (those already sent this pts wait for the next one, see `hold_next_key`)."""
        waiting = []
        for target in self.joining:
            if target.last_pts is not None and pts <= target.last_pts and not target.paused:
                target.hold_next_key = True
                waiting.append(target)
                continue
            old = target.fanout
            if old is not self:
                if old is not None:
                    old.remove(target)
                target.fanout = self
                self.targets["video"].append(target)
            if target._drain is not None:
                target._drain.cancel()
            target.backlog = None
            target.drop_pending()
            target._catch_up_sent = {}
            target.joining = None
            target.paused = target.holding = target.hold_next_key = False
            target.live_from = first
            target.seq_offset = target.next_seq - first
            target.switches += 1
        self.joining[:] = waiting

    def remove(self, target: RtpTarget) -> None:
        with contextlib.suppress(ValueError):
            self.targets[target.kind].remove(target)
        self._pacing.pop(target, None)
        if target.fanout is self:
            target.fanout = None

    # -- pacing ------------------------------------------------------------------------
    def pace(self, target: RtpTarget) -> None:
        """`target` has packets for the pacer: the stream's one timer sends them."""
        self._pacing[target] = None
        if self._pace_timer is None:
            self._paced_at = time.monotonic()
            loop = asyncio.get_running_loop()
            self._pace_timer = loop.call_later(PACE_INTERVAL_S, self._pace_tick)

    def _pace_tick(self) -> None:
        now = time.monotonic()
        # Bytes due since the last tick; a late tick sends more, never falls behind.
        elapsed = min(max(now - self._paced_at, PACE_INTERVAL_S), 10 * PACE_INTERVAL_S)
        self._paced_at = now
        ntp = ntp_now()
        for target in list(self._pacing):
            try:
                more = target.send_paced(target.pace_rate() * elapsed / 8, ntp)
                if target.padding_until:
                    more = target.send_padding(elapsed, now, ntp) or more
            except Exception:  # that viewer's SRTP or socket is gone: only it stops
                log.exception("viewer RTP stream dropped by the pacer of %s", self.stream.name)
                more = False
                self._failed.append(target)
            if not more:
                del self._pacing[target]
        while self._failed:
            self.remove(self._failed.pop())
        if self._pacing:
            loop = asyncio.get_running_loop()
            self._pace_timer = loop.call_later(PACE_INTERVAL_S, self._pace_tick)
        else:
            self._pace_timer = None

    async def _run(self, subscription: Subscription) -> None:
        while True:
            try:
                packet = await subscription.get()
            except SubscriptionClosed:
                return
            try:
                self._send(packet)
            except Exception:  # one bad packet must not end the stream for everyone
                log.exception("fan-out of %s failed on a %s packet", self.stream.name, packet.kind)

    def _measure(self, size: int, now: float) -> None:
        self._rate_bytes += size
        elapsed = now - self._rate_at
        if elapsed >= 1.0:
            rate = self._rate_bytes * 8 / elapsed
            self.bitrate_bps = rate if not self.bitrate_bps else 0.7 * self.bitrate_bps + 0.3 * rate
            self._rate_at, self._rate_bytes = now, 0

    def _send(self, packet: MediaPacket) -> None:
        started = time.monotonic()
        kind = packet.kind
        targets = self.targets.get(kind)
        if targets is None:
            return
        if kind == "audio":
            held = self._held_audio
            if held is None:
                self._held_audio = packet
                loop = asyncio.get_running_loop()
                self._held_timer = loop.call_later(AUDIO_PAIR_WAIT_S, self._send_held_audio)
            else:
                self._held_audio = None
                self._held_timer.cancel()
                self._send_audio([held, packet], started)
            return
        if kind == "video":
            if packet.keyframe:
                self.key_pts = packet.pts
            self._keep_gop(packet)
            self._measure(len(packet.data), started)
        ready = rtp_ready(packet)
        payloads, rtp_ts = ready.payloads, ready.timestamp
        first = self.history[kind].add(payloads, rtp_ts)
        if self.joining and packet.keyframe:
            self._take_joining(first, packet.pts)
        ntp, pts = ntp_now(), packet.pts
        for target in targets:
            if (
                target.hold_next_key
                and target.joining is not None
                and (
                    packet.keyframe
                    or not self.is_rung  # rungs' keyframes are aligned: the clause above
                    and target.joining.is_rung
                    and rung_keyframe_due(self.key_pts, target.last_pts, pts)
                )
            ):
                target.holding = True  # its next stream starts at this same pts
            if target.paused or target.holding:
                continue
            if target.backlog is not None:
                target.backlog.append((packet, packet.pts))
                continue
            try:
                target.send_frame(payloads, rtp_ts, first + target.seq_offset, pts, ntp)
            except Exception:  # that viewer's SRTP or socket is gone: only it stops
                log.exception("viewer RTP stream dropped from the fan-out of %s", self.stream.name)
                self._failed.append(target)
        while self._failed:
            self.remove(self._failed.pop())
        self.on_sent(self.stream.name, packet, started, time.monotonic())

    def _send_held_audio(self) -> None:
        held, self._held_audio = self._held_audio, None
        if held is not None:
            self._send_audio([held], time.monotonic())

    def _send_audio(self, packets: list[MediaPacket], started: float) -> None:
        """Opus packets to every viewer: two at a time, one syscall per viewer (an audio
        packet is small: the per-call cost, not the bytes, is what a viewer costs)."""
        history, frames = self.history["audio"], []
        for packet in packets:
            ready = rtp_ready(packet)
            index = history.add(ready.payloads, ready.timestamp)
            data = ready.payloads[0]
            frames.append(AudioFrame(data, ready.timestamp, index, packet.pts, self._last_audio))
            self._last_audio = (data, ready.timestamp)
        ntp = ntp_now()
        for target in self.targets["audio"]:
            if target.paused:
                continue
            try:
                target.send_audio(frames, ntp)
            except Exception:  # that viewer's SRTP or socket is gone: only it stops
                log.exception("viewer RTP stream dropped from the fan-out of %s", self.stream.name)
                self._failed.append(target)
        while self._failed:
            self.remove(self._failed.pop())
        now = time.monotonic()
        for packet in packets:
            self.on_sent(self.stream.name, packet, started, now)

    def _keep_gop(self, packet: MediaPacket) -> None:
        if packet.keyframe:
            self.gop = [packet]
        elif self.gop and len(self.gop) < GOP_CACHE_MAX_PACKETS:
            self.gop.append(packet)
        else:
            self.gop = []  # no keyframe yet, or too long: none until the next keyframe

    def close(self) -> None:
        self.subscription.close()
        self.audio_subscription.close()
        self.task.cancel()
        self.audio_task.cancel()
        if self._held_timer is not None:
            self._held_timer.cancel()
        if self._pace_timer is not None:
            self._pace_timer.cancel()
        for target in list(self.joining):
            self.cancel_join(target)
        for targets in self.targets.values():
            for target in list(targets):
                target.stop()


class Fanout:
    """Every stream fan-out of this process (one per stream with viewers here)."""

    def __init__(self, on_sent: OnSent | None = None) -> None:
        self.streams: dict[str, StreamFanout] = {}
        self.on_sent = on_sent or (lambda *args: None)
        #: One media clock per source stream, shared by its renditions (NAME~RUNG).
        self.clocks: dict[str, MediaClock] = {}

    def _fanout(self, stream: Stream) -> StreamFanout:
        fanout = self.streams.get(stream.name)
        if fanout is None or fanout.stream is not stream:
            if fanout is not None:
                fanout.close()
            source = stream.name.split(RENDITION_SEPARATOR, 1)[0]
            clock = self.clocks.get(source)
            if clock is None:
                clock = self.clocks[source] = MediaClock()
            fanout = self.streams[stream.name] = StreamFanout(stream, self.on_sent, clock)
        return fanout

    def add(self, stream: Stream, target: RtpTarget, first_frame_only: bool = False) -> None:
        self._fanout(stream).add(target, first_frame_only)

    def switch(self, target: RtpTarget, stream: Stream) -> None:
        """Move a video viewer to `stream` (a rendition of what it watches) at that
        stream's next keyframe; it keeps what it gets until then."""
        fanout = self._fanout(stream)
        if target.fanout is fanout and target.joining is None and not target.paused:
            return
        target.stop_padding()
        fanout.join(target)
        self.reap()

    def pause(self, target: RtpTarget) -> None:
        """Hold a viewer's video (audio goes on); `switch` resumes it at a keyframe."""
        if target.joining is not None:
            target.joining.cancel_join(target)
        target.paused = True
        target.stop_padding()
        target.drop_pending()
        if target._drain is not None:
            target._drain.cancel()
        target.backlog = None
        if target.fanout is not None:
            target.fanout._pacing.pop(target, None)

    def remove(self, target: RtpTarget) -> None:
        target.stop()
        self.reap()

    def reap(self) -> None:
        """Close the fan-outs nobody watches or waits for any more."""
        for name, fanout in list(self.streams.items()):
            if not len(fanout):
                del self.streams[name]
                fanout.close()
        live = {name.split(RENDITION_SEPARATOR, 1)[0] for name in self.streams}
        for source in list(self.clocks):
            if source not in live:
                del self.clocks[source]

    def close(self) -> None:
        for fanout in self.streams.values():
            fanout.close()
        self.streams.clear()
