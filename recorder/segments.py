"""Fragmented MP4 segments: H.264 and AAC packets muxed as they are, never re-encoded.

Each segment is a self-contained fragmented MP4 (``empty_moov``): the header is written
first, then one ``moof``+``mdat`` fragment per video keyframe (or per ``fragment_us`` when
keyframes are rare). A process killed mid-segment leaves every complete fragment
playable.

PyAV streams are created from a template whose codec context is never opened, so no
encoder runs: we only set the codec parameters (size, extradata). The video extradata is
the Annex-B SPS/PPS; FFmpeg's mp4 muxer turns it into an ``avcC`` record and rewrites
each Annex-B access unit into length-prefixed NAL units (a byte copy, no decoding).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from airclass_media.h264 import NAL_PPS, NAL_SPS, H264Error, parse_sps, split_annexb
from airclass_media.packets import TIME_BASE, MediaPacket

log = logging.getLogger(__name__)

START_CODE = b"\x00\x00\x00\x01"
VIDEO_TIME_BASE = Fraction(1, 90_000)


@dataclass(frozen=True, slots=True)
class VideoParams:
    """H.264 parameters of a segment; a change starts a new segment."""

    sps: bytes
    pps: bytes
    width: int
    height: int
    profile: str

    @property
    def extradata(self) -> bytes:
        return START_CODE + self.sps + START_CODE + self.pps


@dataclass(frozen=True, slots=True)
class AudioParams:
    """AAC parameters: the publisher's AudioSpecificConfig, rate, channels."""

    config: bytes
    sample_rate: int
    channels: int


def video_params(access_unit: bytes) -> VideoParams | None:
    """SPS/PPS (and size) carried in front of an IDR access unit, None if absent."""
    sps = pps = b""
    for nal in split_annexb(access_unit):
        kind = nal[0] & 0x1F
        if kind == NAL_SPS and not sps:
            sps = nal
        elif kind == NAL_PPS and not pps:
            pps = nal
        if sps and pps:
            break
    if not sps or not pps:
        return None
    try:
        info = parse_sps(sps)
    except H264Error:
        return None
    return VideoParams(sps, pps, info.width, info.height, info.profile)


def _layout(channels: int) -> str | av.AudioLayout:
    return {1: "mono", 2: "stereo"}.get(channels) or av.AudioLayout(channels)


class SegmentWriter:
    """One fragmented MP4 file. Not thread-safe: used by one recording worker thread."""

    def __init__(
        self,
        path: Path,
        video: VideoParams,
        audio: AudioParams | None,
        base_us: int,
        fragment_us: int = 2_000_000,
    ) -> None:
        self.path = path
        self.video = video
        self.audio = audio
        #: Stream-timeline microseconds that become 0 in this file (first keyframe's dts).
        self.base_us = base_us
        self.end_us = base_us
        self.video_packets = 0
        self.audio_packets = 0
        self.fixed_timestamps = 0
        self._last_dts: dict[str, int] = {}
        self._container = av.open(
            str(path),
            "w",
            format="mp4",
            container_options={
                "movflags": "+frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": str(fragment_us),
                # Write every fragment to the file as soon as it is complete.
                "flush_packets": "1",
                # Never hold video back more than 1 s waiting for audio (or vice versa).
                "max_interleave_delta": "1000000",
            },
        )
        try:
            self._video_stream, self._audio_stream = self._add_streams()
        except Exception:
            self._container.close()
            raise

    def _add_streams(self):
        # Templates: never-opened codec contexts. Nothing is encoded or decoded.
        templates = av.open(io.BytesIO(), "w", format="mp4")
        try:
            vt = templates.add_stream("h264")
            vs = self._container.add_stream_from_template(vt)
            vs.codec_context.width = self.video.width
            vs.codec_context.height = self.video.height
            vs.codec_context.extradata = self.video.extradata
            vs.time_base = VIDEO_TIME_BASE
            aus = None
            if self.audio is not None:
                at = templates.add_stream("aac", rate=self.audio.sample_rate)
                aus = self._container.add_stream_from_template(at)
                aus.codec_context.sample_rate = self.audio.sample_rate
                aus.codec_context.layout = _layout(self.audio.channels)
                aus.codec_context.extradata = self.audio.config
                aus.time_base = Fraction(1, self.audio.sample_rate)
        finally:
            templates.close()
        return vs, aus

    @property
    def duration_us(self) -> int:
        return max(0, self.end_us - self.base_us)

    def write(self, packet: MediaPacket) -> None:
        """Mux one packet (video, or aac when the segment has audio)."""
        if packet.kind == "video":
            stream = self._video_stream
            self.video_packets += 1
            frame_us = 33_333
        elif packet.kind == "aac" and self._audio_stream is not None:
            stream = self._audio_stream
            self.audio_packets += 1
            frame_us = 1024 * 1_000_000 // self.audio.sample_rate
        else:
            return
        dts = packet.dts - self.base_us
        pts = packet.pts - self.base_us
        last = self._last_dts.get(packet.kind)
        if last is not None and dts <= last:
            # The muxer needs strictly increasing dts; nudge rather than fail.
            self.fixed_timestamps += 1
            dts = last + 1
            pts = max(pts, dts)
        self._last_dts[packet.kind] = dts
        out = av.Packet(packet.data)
        out.stream = stream
        out.time_base = TIME_BASE
        out.pts = pts
        out.dts = dts
        out.is_keyframe = packet.keyframe
        self._container.mux(out)
        self.end_us = max(self.end_us, packet.pts + frame_us)

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        """Write the last fragment and the trailer."""
        try:
            self._container.close()
        except Exception:
            log.exception("closing segment %s failed", self.path)
