"""Everything AIRClass takes over from aiortc, in one place, each with its reason.

aiortc (pinned to 1.16.x in pyproject.toml; tests/test_fanout.py checks every internal
used here) negotiates, runs ICE (aioice) and DTLS, reads RTCP and sends sender reports.
It has no options for what follows, so each change is made at the narrowest point:

- H.264 High and Main profiles are added to the codecs it negotiates (it lists only
  Baseline), so browsers are told the truth about OBS/Android High profile streams.
- A viewer's RTP is sent by `airclass_media.fanout`, not by aiortc's per-packet sender
  loop (`RTCRtpSender._run_rtp`: an `RtpPacket` object, a serialize, an SRTP call and a
  `sendto` per packet per viewer; 78 % of a loaded node's time). `take_over_rtp`
  replaces that loop on each viewer's sender with one that hands the fan-out what it
  needs: the negotiated payload types, SSRCs and header-extension bytes, the DTLS
  transport's SRTP session, and the socket and remote address of the nominated ICE
  pair (dup'ed, so the fan-out can use `sendmsg` with UDP GSO, which asyncio lacks).
  aiortc's RTCP loop keeps sending sender reports from the counters we update, and its
  NACK and PLI/FIR handling calls into the fan-out (`_retransmit`, `_send_keyframe`).
- RTP packets are SRTP-protected by calling libsrtp through pylibsrtp's binding
  (pinned too) into one buffer per viewer stream that already holds its SSRC and
  header extensions (`srtp_writer`): `Session.protect` allocates and copies per call,
  which cost a third of the protect path.
- A WHIP publisher's receivers hand their reassembled encoded frames to the ingest
  (`tap_encoded_frames`) instead of to aiortc's decoder thread: passthrough, no decode.
- RED for Opus (RFC 2198, `audio/red` with the Opus payload type in its fmtp) is answered
  when a viewer's offer lists it (`answer_audio_red`): aiortc does not know the codec.
  Browsers offer it and rebuild a lost audio packet from the copy in the next one.
- The playout-delay header extension (libwebrtc's; Chromium offers it) is answered for
  video and written into each viewer's header tail (`with_playout_delay`): aiortc does
  not know it. The adaptation sets it on links that lose packets anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import queue
import socket
from collections.abc import Awaitable, Callable

import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, sdp
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

from .fanout import RTP_HEADER, RtpBinding, UdpPath, playout_delay

log = logging.getLogger(__name__)

#: H.264 profiles negotiated besides aiortc's Baseline ones.
EXTRA_H264_PROFILES = ("64001f", "4d001f")
#: Send buffer asked for each viewer's socket: a keyframe burst to many viewers.
SEND_BUFFER_BYTES = 4 * 1024 * 1024
#: One viewer stream's SRTP packet buffer, and the most libsrtp appends (tag, MKI).
SRTP_BUFFER_BYTES = 2048
SRTP_MAX_TRAILER = 144


def _register_h264_profiles() -> None:
    """Let aiortc negotiate High and Main profile H.264 (it only lists Baseline)."""
    video = CODECS["video"]
    known = {c.parameters.get("profile-level-id") for c in video}
    next_pt = max(c.payloadType for c in video) + 1
    for profile in EXTRA_H264_PROFILES:
        if profile in known:
            continue
        video += [
            RTCRtpCodecParameters(
                mimeType="video/H264",
                clockRate=90000,
                payloadType=next_pt,
                rtcpFeedback=[
                    RTCRtcpFeedback(type="nack"),
                    RTCRtcpFeedback(type="nack", parameter="pli"),
                    RTCRtcpFeedback(type="goog-remb"),
                ],
                parameters={
                    "level-asymmetry-allowed": "1",
                    "packetization-mode": "1",
                    "profile-level-id": profile,
                },
            ),
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90000,
                payloadType=next_pt + 1,
                parameters={"apt": next_pt},
            ),
        ]
        next_pt += 2


_register_h264_profiles()


def _opus_inband_fec() -> None:
    """Answer Opus with useinbandfec=1: the transcoder (audio.AacToOpus) writes FEC, and
    a browser uses it to rebuild a lost packet only when the SDP says so."""
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters["useinbandfec"] = 1


_opus_inband_fec()

#: libwebrtc's playout-delay RTP header extension: the least and the most a receiver's
#: jitter buffer is to hold the video (Chromium honours it for every frame carrying it).
PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"


def _answer_playout_delay() -> None:
    """Video header extensions aiortc negotiates: its own, and playout-delay (it keeps
    what the offer lists of these, with the offer's ids)."""
    video = HEADER_EXTENSIONS["video"]
    if all(e.uri != PLAYOUT_DELAY_URI for e in video):
        # An id of its own in aiortc's offers: audio and video share one map (BUNDLE).
        used = {e.id for kind in HEADER_EXTENSIONS.values() for e in kind}
        free = next(i for i in range(1, 15) if i not in used)
        video.append(RTCRtpHeaderExtensionParameters(id=free, uri=PLAYOUT_DELAY_URI))


_answer_playout_delay()


def _red_of(codec: RTCRtpCodecParameters, opus_type: int) -> bool:
    """Is this `audio/red` whose every block is Opus of `opus_type` (fmtp "111/111")?"""
    if codec.mimeType.lower() != "audio/red" or codec.clockRate != 48000:
        return False
    formats = [key for key, value in codec.parameters.items() if value is None]
    return len(formats) == 1 and all(part == str(opus_type) for part in formats[0].split("/"))


def answer_audio_red(pc: RTCPeerConnection, offer: sdp.SessionDescription) -> None:
    """Call between setRemoteDescription and createAnswer: an audio transceiver whose
    offer lists RED of its Opus answers it too (after Opus, which stays the first
    codec). The fan-out then sends each Opus packet with the previous one inside."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind != "audio" or transceiver.mid is None:
            continue
        codecs = transceiver._codecs
        opus = next((c for c in codecs if c.mimeType.lower() == "audio/opus"), None)
        media = next((m for m in offer.media if m.rtp.muxId == transceiver.mid), None)
        if opus is None or media is None or any(c.mimeType.lower() == "audio/red" for c in codecs):
            continue
        red = next((c for c in media.rtp.codecs if _red_of(c, opus.payloadType)), None)
        if red is not None:
            red = copy.deepcopy(red)
            red.rtcpFeedback = []
            codecs.insert(codecs.index(opus) + 1, red)


def take_over_rtp(
    sender: RTCRtpSender,
    run: Callable[[RtpBinding], Awaitable[None]],
    on_keyframe_request: Callable[[], None],
    on_nack: Callable[[int], None],
    on_remb: Callable[[int], None] | None = None,
    on_report: Callable[[int, int], None] | None = None,
    on_rtcp: Callable[[], None] | None = None,
) -> None:
    """Replace this sender's RTP loop: once DTLS is up aiortc starts `_run_rtp(codec)`;
    ours describes the viewer's RTP stream and awaits `run(binding)` until the sender
    stops (its task is cancelled by `RTCRtpSender.stop`). aiortc parses the viewer's
    RTCP and keeps its own bookkeeping (RTT, stats); REMB (`on_remb(bit/s)`) and each
    receiver report's cumulative packets lost and extended highest sequence number
    (`on_report(lost, highest)`) are handed on as well, and `on_rtcp()` hears of every
    RTCP packet (the viewer is still there)."""

    negotiated: list[RTCRtpCodecParameters] = []
    extensions: list[RTCRtpHeaderExtensionParameters] = []
    send = sender.send

    async def send_recording_codecs(parameters) -> None:
        negotiated[:] = parameters.codecs  # aiortc hands `_run_rtp` only the first
        extensions[:] = parameters.headerExtensions
        await send(parameters)

    async def run_rtp(codec: RTCRtpCodecParameters) -> None:
        sender._RTCRtpSender__rtp_started.set()
        try:
            await run(describe(sender, codec, negotiated, extensions))
        except (asyncio.CancelledError, ConnectionError):
            pass
        except Exception:
            log.exception("RTP fan-out of a %s sender failed", sender.kind)
        finally:
            sender._RTCRtpSender__rtp_exited.set()

    async def retransmit(sequence_number: int) -> None:
        on_nack(sequence_number)

    handle = sender._handle_rtcp_packet

    async def handle_rtcp(packet) -> None:
        await handle(packet)
        if on_rtcp is not None:
            on_rtcp()
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            if on_report is not None:
                for report in packet.reports:
                    if report.ssrc == sender._ssrc:
                        on_report(report.packets_lost, report.highest_sequence)
        elif (
            on_remb is not None
            and isinstance(packet, RtcpPsfbPacket)
            and packet.fmt == RTCP_PSFB_APP
        ):
            with contextlib.suppress(ValueError):
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if sender._ssrc in ssrcs:
                    on_remb(bitrate)

    sender.send = send_recording_codecs
    sender._run_rtp = run_rtp
    sender._retransmit = retransmit
    sender._send_keyframe = on_keyframe_request
    sender._handle_rtcp_packet = handle_rtcp


#: A marker value for finding where abs-send-time sits in a serialized header.
_ABS_SEND_TIME_MARK = 0xA5C3E7


def _header(
    payload_type: int, ssrc: int, mid: str | None, extensions: HeaderExtensionsMap
) -> tuple[int, bytes, int | None]:
    """(first byte, bytes after the timestamp, offset of abs-send-time in them or None)
    of this stream's RTP header (abs-send-time is written only when negotiated)."""
    packet = RtpPacket(payload_type=payload_type, ssrc=ssrc)
    packet.extensions.mid = mid
    packet.extensions.abs_send_time = _ABS_SEND_TIME_MARK
    raw = packet.serialize(extensions)
    tail = raw[8:]
    at = tail.find(_ABS_SEND_TIME_MARK.to_bytes(3, "big"), 4)
    if at < 0:
        return raw[0], tail, None
    return raw[0], tail[:at] + bytes(3) + tail[at + 3 :], at


def with_playout_delay(first_byte: int, tail: bytes, ext_id: int) -> tuple[int, bytes, int]:
    """(first byte, tail, offset of the extension's 3 bytes in the tail): the header with
    a playout-delay element (one-byte form, RFC 8285) after its other extensions, set to
    "no wish" (0 to 40.95 s) until `RtpBinding.set_playout_delay`."""
    data = b""
    if len(tail) > 4:  # SSRC, then 0xBEDE, length in words, elements, padding
        data = tail[8 : 8 + 4 * int.from_bytes(tail[6:8], "big")]
        end = i = 0
        while i < len(data):
            if data[i] == 0:  # padding
                i += 1
                continue
            i += 2 + (data[i] & 0x0F)
            end = i
        data = data[:end]
    at = 4 + 4 + len(data) + 1
    data += bytes([ext_id << 4 | 2]) + playout_delay(0)
    data += bytes(-len(data) % 4)
    tail = tail[:4] + b"\xbe\xde" + (len(data) // 4).to_bytes(2, "big") + data
    return first_byte | 0x10, tail, at


async def close_peer(pc: RTCPeerConnection) -> None:
    """`pc.close()`, safe beside aiortc's own close task (started when the peer ended
    DTLS): a second close() awaits the first one's future, and a cancelled await would
    cancel that future, so aiortc's task then fails ("invalid state") when it finishes."""
    in_progress = getattr(pc, "_RTCPeerConnection__isClosed", None)
    if in_progress is not None:
        await asyncio.shield(in_progress)
        return
    await pc.close()


def on_selected_pair(path: UdpPath, sender: RTCRtpSender) -> bool:
    """Whether `path` still goes where the sender's ICE connection sends: aioice selects
    another pair after an ICE restart, or when the remote nominates its new address (a
    NAT rebinding, a phone's new network); the fan-out's own path must follow."""
    pair = sender.transport.transport._connection._nominated.get(1)
    return pair is None or pair.remote_addr == path.addr


def udp_path(sender: RTCRtpSender) -> UdpPath:
    """The nominated ICE pair's socket (dup'ed) and remote address; aioice's own send
    path when it is not a plain UDP socket (a TURN relay, for instance)."""
    connection = sender.transport.transport._connection
    pair = connection._nominated.get(1)
    if pair is None:
        raise ConnectionError("no nominated ICE pair")
    transport = getattr(pair.protocol, "transport", None)
    raw = transport.get_extra_info("socket") if transport is not None else None
    if pair.local_candidate.type == "host" and raw is not None and raw.type == socket.SOCK_DGRAM:
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        return UdpPath(sock, pair.remote_addr)

    def fallback(data: bytes) -> None:
        asyncio.ensure_future(connection.send(data))

    return UdpPath(None, pair.remote_addr, fallback)


def describe(
    sender: RTCRtpSender,
    codec: RTCRtpCodecParameters,
    negotiated: list[RTCRtpCodecParameters] = (),
    header_extensions: list[RTCRtpHeaderExtensionParameters] = (),
) -> RtpBinding:
    """Everything the fan-out needs to send this sender's RTP stream (`codec` is the
    first of the `negotiated` ones)."""
    mid = sender._RTCRtpSender__mid
    extensions = sender._RTCRtpSender__rtp_header_extensions_map
    first_byte, tail, abs_at = _header(codec.payloadType, sender._ssrc, mid, extensions)
    rtx_type = sender._RTCRtpSender__rtx_payload_type
    rtx_tail = _header(rtx_type, sender._rtx_ssrc, mid, extensions)[1] if rtx_type else b""
    delay_at = rtx_delay_at = None  # RTX packets go out with the media's first byte
    delay_id = next((e.id for e in header_extensions if e.uri == PLAYOUT_DELAY_URI), None)
    if sender.kind == "video" and delay_id is not None and delay_id < 15:
        first_byte, tail, delay_at = with_playout_delay(first_byte, tail, delay_id)
        if rtx_type:
            _, rtx_tail, rtx_delay_at = with_playout_delay(first_byte, rtx_tail, delay_id)

    def report(rtp_timestamp: int, ntp_timestamp: int, packets: int, octets: int) -> None:
        # What aiortc's own loop records per packet; its RTCP loop builds reports from it.
        sender._RTCRtpSender__rtp_timestamp = rtp_timestamp
        sender._RTCRtpSender__ntp_timestamp = ntp_timestamp
        sender._RTCRtpSender__packet_count += packets
        sender._RTCRtpSender__octet_count += octets

    def rtt() -> float | None:
        return sender._RTCRtpSender__rtt

    session = sender.transport._tx_srtp
    write, stamp, patch = srtp_writer(session, first_byte, tail, abs_at)
    return RtpBinding(
        kind=sender.kind,
        payload_type=codec.payloadType,
        header_tail=tail,
        first_byte=first_byte,
        protect=session.protect,
        write=write,
        stamp=stamp,
        patch=patch,
        abs_send_time_at=abs_at,
        playout_delay_at=delay_at,
        rtx_playout_delay_at=rtx_delay_at,
        rtt=rtt,
        path=udp_path(sender),
        rtx_payload_type=rtx_type,
        rtx_header_tail=rtx_tail,
        red_payload_type=next(
            (c.payloadType for c in negotiated if _red_of(c, codec.payloadType)), None
        ),
        report=report,
        initial_sequence=int.from_bytes(os.urandom(2)) % 32768,
        timestamp_origin=int.from_bytes(os.urandom(4)),
    )


def srtp_writer(
    session: pylibsrtp.Session, first_byte: int, tail: bytes, abs_send_time_at: int | None = None
) -> tuple[
    Callable[[int, int, int, bytes], bytes], Callable[[int], None], Callable[[int, bytes], None]
]:
    """(write, stamp, patch): write(second byte, sequence number, timestamp, payload) ->
    one SRTP packet; stamp(value) sets the abs-send-time the packets written next carry,
    patch(offset, bytes) other bytes of their header tail.

    The 12-byte header is packed into a buffer that keeps the stream's SSRC and header
    extensions after it, the payload copied behind, and libsrtp protects it in place.
    libsrtp encrypts the payload only, so the header extensions stay as written: the
    3 abs-send-time bytes are set once per burst, not per packet."""
    cdata = srtp_ffi.new("char[]", SRTP_BUFFER_BYTES)
    buffer = srtp_ffi.buffer(cdata)
    length = srtp_ffi.new("int *")
    context = session._srtp[0]
    protect, pack_into = srtp_lib.srtp_protect, RTP_HEADER.pack_into
    header_end = 8 + len(tail)
    buffer[8:header_end] = tail
    room = SRTP_BUFFER_BYTES - header_end - SRTP_MAX_TRAILER

    def write(second_byte: int, sequence_number: int, timestamp: int, payload: bytes) -> bytes:
        if len(payload) > room:
            raise ValueError("RTP payload too long")
        pack_into(buffer, 0, first_byte, second_byte, sequence_number, timestamp)
        end = header_end + len(payload)
        buffer[header_end:end] = payload
        length[0] = end
        status = protect(context, cdata, length)
        if status:
            raise pylibsrtp.Error(f"srtp_protect failed ({status})")
        return buffer[0 : length[0]]

    def patch(offset: int, data: bytes) -> None:
        buffer[8 + offset : 8 + offset + len(data)] = data

    if abs_send_time_at is None:
        return write, lambda value: None, patch
    at = 8 + abs_send_time_at

    def stamp(value: int) -> None:
        buffer[at : at + 3] = value.to_bytes(3, "big")

    return write, stamp, patch


def receiver_report(sender: RTCRtpSender) -> dict:
    """The viewer's latest RTCP receiver report figures for this sender."""
    out: dict = {}
    rtt = sender._RTCRtpSender__rtt
    if rtt is not None:
        out["rtt_ms"] = round(rtt * 1000, 1)
    for stats in sender._RTCRtpSender__stats.values():
        if stats.type == "remote-inbound-rtp":
            out["packets_lost"] = stats.packetsLost
            out["fraction_lost"] = round(stats.fractionLost / 256, 4)
            out["jitter_ms"] = round(
                stats.jitter * 1000 / (90_000 if sender.kind == "video" else 48_000), 2
            )
    return out


class _EncodedFrameTap(queue.Queue):
    """Stands in for an aiortc receiver's decoder queue (`RTCRtpReceiver.__decoder_queue`).

    aiortc puts `(codec, JitterFrame)` for every reassembled frame, on the event loop
    thread; we hand the encoded frame on instead of decoding it. Only the end marker
    (None) reaches the receiver's idle decoder thread, which then exits.
    """

    def __init__(self, on_frame: Callable[[object], None]) -> None:
        super().__init__()
        self.on_frame = on_frame

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None, block, timeout)
        else:
            self.on_frame(item[1])


def tap_encoded_frames(receiver: RTCRtpReceiver, on_frame: Callable[[object], None]) -> None:
    """Take the receiver's encoded frames before its decoder (set before `receive()`)."""
    receiver._RTCRtpReceiver__decoder_queue = _EncodedFrameTap(on_frame)


def media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """SSRC of the publisher's video (not its RTX stream), once packets arrived."""
    rtx = receiver._RTCRtpReceiver__rtx_ssrc
    for ssrc in receiver._RTCRtpReceiver__remote_streams:
        if ssrc not in rtx:
            return ssrc
    return None
