"""Audio transcodes, once per stream: AAC -> Opus for WebRTC viewers of an RTMP publisher,
Opus -> AAC for the recorder and HLS of a WHIP publisher."""

from __future__ import annotations

import logging
from fractions import Fraction

import av

log = logging.getLogger(__name__)

OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms
AAC_RATE = 48_000  # of the AAC made from a WHIP publisher's Opus
AAC_FRAME = 1024
#: Expected packet loss the Opus encoder plans its in-band FEC for (percent): fixed,
#: one encoder serves every viewer, so it is set for a lossy one, not the average.
OPUS_EXPECTED_LOSS_PERCENT = 10
#: A jump in publisher audio time bigger than this restarts the output timeline.
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


class AudioTranscoder:
    """Decode, resample, encode: one audio codec to another, once per stream.

    Output timestamps follow the samples encoded, anchored on the input's timeline (and
    re-anchored when the input jumps by more than RESYNC_US)."""

    def __init__(
        self, decoder: av.CodecContext, resampler: av.AudioResampler, encoder: av.CodecContext
    ) -> None:
        self.decoder, self.resampler, self.encoder = decoder, resampler, encoder
        self.rate = encoder.sample_rate
        self._anchor_us: int | None = None  # stream time of output sample 0
        self._samples_in = 0  # samples handed to the encoder
        self._expected_next_us: int | None = None

    def transcode(self, data: bytes, pts_us: int) -> list[tuple[bytes, int]]:
        """Encoded packets (data, pts in stream microseconds) made from one input packet."""
        if self._anchor_us is None or (
            self._expected_next_us is not None and abs(pts_us - self._expected_next_us) > RESYNC_US
        ):
            # Start, or a gap in the publisher's audio: re-anchor the output timeline.
            self._anchor_us = pts_us - self._samples_in * 1_000_000 // self.rate
        out: list[tuple[bytes, int]] = []
        try:
            frames = self.decoder.decode(av.Packet(data))
        except av.FFmpegError as exc:
            log.debug("audio packet dropped: %s", exc)
            return out
        for frame in frames:
            self._expected_next_us = pts_us + frame.samples * 1_000_000 // max(frame.sample_rate, 1)
            frame.pts = None
            for chunk in self.resampler.resample(frame):
                chunk.pts = self._samples_in
                chunk.time_base = Fraction(1, self.rate)
                self._samples_in += chunk.samples
                for packet in self.encoder.encode(chunk):
                    pts = self._anchor_us + int(packet.pts) * 1_000_000 // self.rate
                    out.append((bytes(packet), pts))
        return out


def _encoder(codec: str, rate: int, fmt: str, bitrate: int) -> av.CodecContext:
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate = rate
    encoder.layout = "stereo"
    encoder.format = fmt
    encoder.bit_rate = bitrate
    encoder.time_base = Fraction(1, rate)
    return encoder


class AacToOpus(AudioTranscoder):
    """An RTMP publisher's AAC to 20 ms Opus packets, 48 kHz stereo (for WebRTC viewers)."""

    def __init__(self, audio_specific_config: bytes, bitrate: int = 64_000) -> None:
        decoder = av.CodecContext.create("aac", "r")
        decoder.extradata = audio_specific_config
        resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME
        )
        encoder = _encoder("libopus", OPUS_RATE, "s16", bitrate)
        # In-band FEC: each packet carries a coarse copy of the one before, so a browser
        # rebuilds a lost packet from the next (it negotiates useinbandfec=1, see
        # aiortc_tuning); libopus spends bits on it only with an expected loss above 0.
        encoder.options = {
            "application": "audio",
            "frame_duration": "20",
            "fec": "1",
            "packet_loss": str(OPUS_EXPECTED_LOSS_PERCENT),
        }
        encoder.open()
        super().__init__(decoder, resampler, encoder)


class OpusToAac(AudioTranscoder):
    """A WHIP publisher's Opus to AAC-LC, 48 kHz stereo (for the recorder and HLS)."""

    def __init__(self, bitrate: int = 96_000) -> None:
        decoder = av.CodecContext.create("opus", "r")
        decoder.sample_rate = AAC_RATE
        decoder.layout = "stereo"
        resampler = av.AudioResampler(
            format="fltp", layout="stereo", rate=AAC_RATE, frame_size=AAC_FRAME
        )
        encoder = _encoder("aac", AAC_RATE, "fltp", bitrate)
        encoder.open()
        #: AudioSpecificConfig of the AAC made here.
        self.config = bytes(encoder.extradata or b"")
        super().__init__(decoder, resampler, encoder)
