"""Publisher sessions: FLV audio/video tags from RTMP -> MediaPackets into the hub."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .audio import AacToOpus, parse_audio_specific_config
from .h264 import AnnexBWriter, H264Error, parse_avc_config, parse_sps
from .hub import Stream
from .packets import MediaPacket

log = logging.getLogger(__name__)

FLV_CODEC_AVC = 7
FLV_SOUND_AAC = 10
#: FLV timestamps are 32-bit milliseconds; larger jumps backwards are a wrap-around.
WRAP = 1 << 32


class _TimestampUnwrapper:
    def __init__(self) -> None:
        self.last = None
        self.base = 0

    def __call__(self, ts_ms: int) -> int:
        if self.last is not None and ts_ms < self.last and self.last - ts_ms > WRAP // 2:
            self.base += WRAP
        self.last = ts_ms
        return self.base + ts_ms


class PublishSession:
    """One publisher on one stream: parses FLV tags, converts, publishes to the hub.

    Video: AVCC -> Annex-B passthrough (no decode). Audio: AAC forwarded as is (for the
    recorder) and transcoded to Opus once (for every WebRTC viewer).
    """

    def __init__(
        self,
        stream: Stream,
        publisher_id: str,
        on_close: Callable[[PublishSession], None] | None = None,
    ) -> None:
        self.stream = stream
        self.publisher_id = publisher_id
        self.on_close = on_close
        self.started = time.time()
        self._video: AnnexBWriter | None = None
        self._opus: AacToOpus | None = None
        self._aac_ready = False
        self._unwrap = _TimestampUnwrapper()
        #: Highest video pts so far: a lower one means the encoder reorders frames.
        self._last_pts = -(1 << 62)
        self.video_frames = 0
        self.audio_frames = 0
        self.bad_frames = 0
        self.transcode_seconds = 0.0
        self.closed = False

    # FLV VIDEODATA: [frame type:4 | codec id:4] [AVCPacketType] [composition time:24] data
    def on_video(self, timestamp_ms: int, payload: bytes) -> None:
        if len(payload) < 5:
            return
        if payload[0] & 0x80:
            self._bad("enhanced RTMP video (HEVC/AV1) is not supported; send H.264")
            return
        if payload[0] & 0x0F != FLV_CODEC_AVC:
            self._bad(f"video codec {payload[0] & 0x0F} is not H.264")
            return
        packet_type = payload[1]
        cts = int.from_bytes(payload[2:5], "big", signed=True)
        body = payload[5:]
        try:
            if packet_type == 0:
                config = parse_avc_config(body)
                self._video = AnnexBWriter(config)
                self._update_video_info(config.sps[0], config.pps[0])
                return
            if packet_type != 1 or self._video is None:
                return
            data, has_idr = self._video.convert(body)
        except H264Error as exc:
            self._bad(str(exc))
            return
        if not data:
            return
        dts = self.stream.timeline(self._unwrap(timestamp_ms) * 1000)
        pts = dts + cts * 1000
        if pts < self._last_pts and not self.stream.info.reorders:
            # Presentation time went back: B-frames (a constant CTS offset reorders nothing).
            self.stream.info.reorders = True
            log.warning(
                "stream %s: the encoder sends B-frames (composition time %d ms); browsers "
                "get a re-encoded copy without them. Set x264 bframes=0 (OBS: profile "
                "baseline, or B-frames 0).",
                self.stream.name,
                cts,
            )
        self._last_pts = max(pts, self._last_pts)
        self.video_frames += 1
        self.stream.publish(MediaPacket("video", data, pts, dts, has_idr))

    def _update_video_info(self, sps: bytes, pps: bytes) -> None:
        info = self.stream.info
        info.sps, info.pps = sps, pps
        try:
            parsed = parse_sps(sps)
            info.width, info.height, info.video_profile = (
                parsed.width,
                parsed.height,
                parsed.profile,
            )
            log.info(
                "stream %s: H.264 %s %dx%d",
                self.stream.name,
                parsed.profile,
                parsed.width,
                parsed.height,
            )
        except H264Error as exc:
            log.warning("stream %s: unreadable SPS: %s", self.stream.name, exc)

    # FLV AUDIODATA: [format:4 | rate:2 | size:1 | type:1] [AACPacketType] data
    def on_audio(self, timestamp_ms: int, payload: bytes) -> None:
        if len(payload) < 2:
            return
        if payload[0] >> 4 != FLV_SOUND_AAC:
            self._bad(f"audio format {payload[0] >> 4} is not AAC")
            return
        body = payload[2:]
        if payload[1] == 0:
            try:
                rate, channels = parse_audio_specific_config(body)
                self._opus = AacToOpus(body)
            except Exception as exc:  # noqa: BLE001 - any decoder set-up failure
                self._bad(f"bad AAC config: {exc}")
                return
            info = self.stream.info
            info.aac_config, info.audio_sample_rate, info.audio_channels = body, rate, channels
            self._aac_ready = True
            return
        if not self._aac_ready or not body:
            return
        pts = self.stream.timeline(self._unwrap(timestamp_ms) * 1000)
        self.audio_frames += 1
        self.stream.publish(MediaPacket("aac", body, pts, pts, True))
        started = time.perf_counter()
        for data, opus_pts in self._opus.transcode(body, pts):
            self.stream.publish(MediaPacket("audio", data, opus_pts, opus_pts, True))
        self.transcode_seconds += time.perf_counter() - started

    def on_metadata(self, metadata: dict) -> None:
        log.info(
            "stream %s: metadata %s",
            self.stream.name,
            {
                k: metadata.get(k)
                for k in (
                    "encoder",
                    "width",
                    "height",
                    "framerate",
                    "videodatarate",
                    "audiodatarate",
                )
                if k in metadata
            },
        )

    def _bad(self, why: str) -> None:
        self.bad_frames += 1
        if self.bad_frames in (1, 100, 1000):
            log.warning("stream %s: %s (%d bad frames)", self.stream.name, why, self.bad_frames)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stream.detach_publisher(self.publisher_id)
        log.info(
            "stream %s: publish ended after %.1f s, %d video, %d audio frames",
            self.stream.name,
            time.time() - self.started,
            self.video_frames,
            self.audio_frames,
        )
        if self.on_close is not None:
            self.on_close(self)
