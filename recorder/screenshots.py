"""Screenshots: one JPEG per interval, decoded from a single keyframe (no full-rate decode).

An IDR access unit (with its SPS/PPS in front, as the hub delivers it) decodes on its
own, so a screenshot costs one keyframe decode plus one JPEG encode (~10 ms at 720p).
Shots are taken at the first keyframe at or after each interval mark, so their spacing
follows the publisher's keyframe interval when it is longer than the screenshot interval.
"""

from __future__ import annotations

import logging
import math
import time
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

SHOTS_DIR = "shots"
JPEG_QSCALE = 4  # 2 (best) .. 31 (worst)


def encode_jpeg(frame: av.VideoFrame) -> bytes:
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = frame.width
    encoder.height = frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.qscale = JPEG_QSCALE
    encoder.thread_count = 1
    packets = encoder.encode(frame.reformat(format="yuvj420p"))
    packets += encoder.encode(None)
    return b"".join(bytes(p) for p in packets)


def decode_keyframe(access_unit: bytes) -> av.VideoFrame | None:
    """Decode one self-contained H.264 IDR access unit (Annex-B, SPS/PPS in front)."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_type = "NONE"
    decoder.thread_count = 1
    frames = decoder.decode(av.Packet(access_unit))
    frames += decoder.decode(None)
    return frames[0] if frames else None


class Screenshotter:
    """Decides when a shot is due and writes it under ``directory/shots``."""

    def __init__(self, directory: Path, interval: float) -> None:
        self.dir = directory / SHOTS_DIR
        self.interval = interval
        self._next_due = -math.inf
        self.seconds_spent = 0.0
        self.failures = 0

    def due(self, t: float) -> bool:
        return self.interval > 0 and t >= self._next_due

    def capture(self, access_unit: bytes, t: float, at: float) -> dict | None:
        """Decode this keyframe and save it as the shot for recording time t (seconds).

        Returns the screenshot entry ``{"file", "t", "at", "width", "height"}``.
        """
        t = max(0.0, t)
        self._next_due = (math.floor(t / self.interval) + 1) * self.interval
        started = time.perf_counter()
        try:
            frame = decode_keyframe(access_unit)
            if frame is None:
                return None
            data = encode_jpeg(frame)
        except (av.FFmpegError, ValueError) as exc:
            self.failures += 1
            log.warning("screenshot at %.1f s failed: %s", t, exc)
            return None
        finally:
            self.seconds_spent += time.perf_counter() - started
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{round(t * 1000):09d}.jpg"
        tmp = self.dir / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.dir / name)
        return {
            "file": name,
            "t": round(t, 3),
            "at": round(at, 3),
            "width": frame.width,
            "height": frame.height,
            "size": len(data),
        }
