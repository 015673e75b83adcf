"""Encoded media as it travels through a node: ingest -> hub -> viewers, relay, recorder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

PacketKind = Literal["video", "audio", "aac"]

#: Every timestamp on a stream's timeline is in microseconds.
TIME_BASE = Fraction(1, 1_000_000)


@dataclass(slots=True)
class MediaPacket:
    """One encoded access unit on a stream's continuous timeline.

    kind "video": H.264 Annex-B access unit, SPS/PPS in front of every IDR.
    kind "audio": one Opus packet (20 ms, 48 kHz stereo), made once per stream.
    kind "aac":   one raw AAC frame as the publisher sent it (for the recorder).
    """

    kind: PacketKind
    data: bytes
    pts: int  # microseconds on the stream timeline (presentation time)
    dts: int  # microseconds on the stream timeline (decode time, monotonic)
    keyframe: bool
    #: time.monotonic() when the node received the packet: for per-stage latency.
    received_at: float = field(default_factory=time.monotonic)
    #: RTP payloads and timestamp, made by the first WebRTC viewer and shared by all the
    #: others (see airclass_media.fanout.rtp_ready). Nothing else writes to a packet.
    rtp: object = None


@dataclass(slots=True)
class StreamInfo:
    """Codec parameters of a live stream, known once the publisher sent its headers."""

    width: int = 0
    height: int = 0
    video_profile: str = ""
    sps: bytes = b""
    pps: bytes = b""
    #: AAC AudioSpecificConfig as sent by the publisher (empty when no audio).
    aac_config: bytes = b""
    audio_sample_rate: int = 0
    audio_channels: int = 0
    #: The publisher sends B-frames (a video pts went back in time): browsers' WebRTC
    #: decoders cannot reorder, so WebRTC viewers get `webrtc_default` instead.
    reorders: bool = False
    #: The ladder's renditions of this stream, highest first: dicts with name (hub
    #: stream), rung, width, height, bitrate (bit/s). See airclass_media.ladder.
    renditions: list[dict] = field(default_factory=list)
    #: Hub stream a WebRTC viewer gets by default ("" = this stream itself).
    webrtc_default: str = ""

    def as_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "video_profile": self.video_profile,
            "audio_sample_rate": self.audio_sample_rate,
            "audio_channels": self.audio_channels,
            "reorders": self.reorders,
            "renditions": self.renditions,
            "webrtc_default": self.webrtc_default,
        }
