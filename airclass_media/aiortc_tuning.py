"""Process-wide adjustments to aiortc for a passthrough server, applied on import.

aiortc has no options for these, so each is made at the narrowest point and kept here,
in one place, with the reason:
- H.264 High and Main profiles are added to the codecs it negotiates (it lists only
  Baseline), so browsers are told the truth about OBS/Android High profile streams.
- Its sender accepts `RtpReady` (payloads cut once per stream, shared by every viewer)
  besides frames and `av.Packet`s, which it would packetize again for every viewer.
- Its NTP clock (two calls per RTP packet sent) is computed from `time.time_ns()` rather
  than through `datetime` objects: same value, a fraction of the cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiortc.clock
import aiortc.rtcrtpsender
from aiortc.codecs import CODECS
from aiortc.codecs.h264 import H264Encoder
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from .packets import MediaPacket

#: H.264 profiles negotiated besides aiortc's Baseline ones.
EXTRA_H264_PROFILES = ("64001f", "4d001f")
CLOCK_RATES = {"video": 90_000, "audio": 48_000}
#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800


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


@dataclass(slots=True)
class RtpReady:
    """An encoded packet already cut into RTP payloads, with its RTP timestamp."""

    payloads: list[bytes]
    timestamp: int


def rtp_ready(packet: MediaPacket, pts: int | None = None) -> RtpReady:
    """RTP payloads of a packet, packetized once per stream and shared by every viewer.

    aiortc would otherwise split and fragment the same H.264 access unit again for each
    viewer; only the RTP header and SRTP are left per viewer. `pts` gives a viewer its
    own timestamp (GOP catch-up) with the shared payloads.
    """
    ready = packet.rtp
    if ready is None:
        if packet.kind == "video":
            payloads = H264Encoder._packetize(H264Encoder._split_bitstream(packet.data))
        else:
            payloads = [packet.data]
        ready = packet.rtp = RtpReady(payloads, packet.pts * CLOCK_RATES[packet.kind] // 1_000_000)
    if pts is None or pts == packet.pts:
        return ready
    return RtpReady(ready.payloads, pts * CLOCK_RATES[packet.kind] // 1_000_000)


_original_get_encoder = aiortc.rtcrtpsender.get_encoder


def _get_encoder(codec):
    """aiortc's encoder, taught to send RtpReady packets as they are."""
    encoder = _original_get_encoder(codec)
    pack = encoder.pack

    def pack_ready(data):
        if isinstance(data, RtpReady):
            return data.payloads, data.timestamp
        return pack(data)

    encoder.pack = pack_ready
    return encoder


aiortc.rtcrtpsender.get_encoder = _get_encoder


def current_ntp_time() -> int:
    """64-bit NTP timestamp of now, as aiortc.clock.current_ntp_time but cheaper."""
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return ((seconds + NTP_UNIX_OFFSET) << 32) | (nanos << 32) // 1_000_000_000


aiortc.clock.current_ntp_time = current_ntp_time
