"""AAC -> Opus, once per stream (WebRTC browsers play Opus, RTMP publishers send AAC)."""

from __future__ import annotations

import logging
from fractions import Fraction

import av

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms
#: A jump in publisher audio time bigger than this restarts the Opus timeline.
RESYNC_US = 200_000

AAC_RATES = [
    96000,
    88200,
    64000,
    48000,
    44100,
    32000,
    24000,
    22050,
    16000,
    12000,
    11025,
    8000,
    7350,
]


def parse_audio_specific_config(asc: bytes) -> tuple[int, int]:
    """(sample rate, channels) of an AAC AudioSpecificConfig."""
    if len(asc) < 2:
        raise ValueError("AudioSpecificConfig too short")
    index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
    channels = (asc[1] >> 3) & 0x0F
    rate = AAC_RATES[index] if index < len(AAC_RATES) else 0
    return rate, channels


class AacToOpus:
    """Decode AAC, resample to 48 kHz stereo s16, encode 20 ms Opus packets."""

    def __init__(self, audio_specific_config: bytes, bitrate: int = 64_000) -> None:
        self.decoder = av.CodecContext.create("aac", "r")
        self.decoder.extradata = audio_specific_config
        self.resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME
        )
        self.encoder = av.CodecContext.create("libopus", "w")
        self.encoder.sample_rate = OPUS_RATE
        self.encoder.layout = "stereo"
        self.encoder.format = "s16"
        self.encoder.bit_rate = bitrate
        self.encoder.time_base = Fraction(1, OPUS_RATE)
        self.encoder.options = {"application": "audio", "frame_duration": "20"}
        self.encoder.open()
        self._anchor_us: int | None = None  # stream time of Opus sample 0
        self._samples_in = 0  # samples handed to the encoder
        self._expected_next_us: int | None = None

    def transcode(self, aac_frame: bytes, pts_us: int) -> list[tuple[bytes, int]]:
        """Opus packets (data, pts in stream microseconds) produced by one AAC frame."""
        if self._anchor_us is None or (
            self._expected_next_us is not None and abs(pts_us - self._expected_next_us) > RESYNC_US
        ):
            # Start, or a gap in the publisher's audio: re-anchor the Opus timeline.
            self._anchor_us = pts_us - self._samples_in * 1_000_000 // OPUS_RATE
        out: list[tuple[bytes, int]] = []
        try:
            frames = self.decoder.decode(av.Packet(aac_frame))
        except av.FFmpegError as exc:
            log.debug("AAC frame dropped: %s", exc)
            return out
        for frame in frames:
            self._expected_next_us = pts_us + frame.samples * 1_000_000 // max(frame.sample_rate, 1)
            frame.pts = None
            for chunk in self.resampler.resample(frame):
                chunk.pts = self._samples_in
                chunk.time_base = Fraction(1, OPUS_RATE)
                self._samples_in += chunk.samples
                for packet in self.encoder.encode(chunk):
                    pts = self._anchor_us + int(packet.pts) * 1_000_000 // OPUS_RATE
                    out.append((bytes(packet), pts))
        return out
