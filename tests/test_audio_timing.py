"""Lip sync starts at the transcode: an RTMP publisher's AAC becomes Opus once per stream,
and each Opus packet's pts must put its sound at the publisher's own time. A white flash
and a 1 kHz beep made at the same instants by ffmpeg (AAC priming and all, as OBS or a
phone app sends them over FLV): the beeps in the Opus made here fall where the flashes
are in the video, within a millisecond."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np

from airclass_media.audio import AacToOpus

FLASH = "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,2),0.1)'"
BEEP = "aevalsrc='0.8*sin(2*PI*1000*t)*lt(mod(t,2),0.1)':s=48000:d=5"
LOUD = 0.3


def _flash_and_beep_flv(path: Path) -> None:
    args = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=30:duration=5,{FLASH}",
        "-f", "lavfi", "-i", BEEP,
        "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "60",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", "-f", "flv", str(path),
    ]  # fmt: skip
    subprocess.run(args, check=True, timeout=60)


def _onsets(times_ms: list[float]) -> list[float]:
    """The first of each run of events (a flash or beep lasts 100 ms; they come every 2 s)."""
    out: list[float] = []
    for t in times_ms:
        if not out or t - out[-1] > 500:
            out.append(t)
    return out


def _first_loud_ms(samples: np.ndarray, start_ms: float, rate: int) -> float | None:
    loud = np.nonzero(np.abs(samples) > LOUD)[0]
    return start_ms + loud[0] * 1000 / rate if len(loud) else None


def test_opus_made_from_aac_keeps_each_sound_at_its_publisher_time(tmp_path):
    flv = tmp_path / "flash-beep.flv"
    _flash_and_beep_flv(flv)
    flashes, opus = [], []
    with av.open(str(flv)) as container:
        audio = container.streams.audio[0]
        transcoder = AacToOpus(bytes(audio.codec_context.extradata))
        video = container.streams.video[0].codec_context
        for packet in container.demux():
            if packet.size == 0:
                continue
            pts_ms = float(packet.pts * packet.time_base) * 1000
            if packet.stream.type == "audio":
                opus += transcoder.transcode(bytes(packet), round(pts_ms * 1000))
                continue
            for frame in video.decode(packet):
                if frame.to_ndarray(format="gray").mean() > 200:
                    flashes.append(float(frame.pts * frame.time_base) * 1000)
    decoder = av.CodecContext.create("opus", "r")
    decoder.sample_rate, decoder.layout = 48_000, "stereo"
    beeps = []
    for data, pts_us in opus:
        for frame in decoder.decode(av.Packet(data)):
            left = frame.to_ndarray()[0]  # planar float: one row per channel
            onset = _first_loud_ms(left, pts_us / 1000, frame.sample_rate)
            if onset is not None:
                beeps.append(onset)
    flashes, beeps = _onsets(flashes), _onsets(beeps)
    assert len(flashes) == 3, flashes
    assert len(beeps) == len(flashes), (flashes, beeps)
    for flash, beep in zip(flashes, beeps, strict=True):
        assert abs(beep - flash) < 1.0, (flashes, beeps)
