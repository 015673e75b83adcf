"""A test publisher: moving pattern, a tone and a wall clock, H.264 + AAC over RTMP.

Feeds `airclass serve --demo` and the benchmark. With `stamp_time` it also writes the
wall-clock time of capture into the picture as 64 black/white blocks, which a viewer
reads back from decoded frames to measure glass-to-glass latency.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction

import av
import numpy as np

log = logging.getLogger(__name__)

STAMP_BITS = 64
STAMP_BLOCK = 16  # pixels per bit block, on the luma plane
AUDIO_RATE = 48_000
AAC_FRAME = 1024

# 7-segment digits: segments a b c d e f g
_SEGMENTS = {
    "0": "abcdef",
    "1": "bc",
    "2": "abdeg",
    "3": "abcdg",
    "4": "bcfg",
    "5": "acdfg",
    "6": "acdefg",
    "7": "abc",
    "8": "abcdefg",
    "9": "abcdfg",
}


def draw_clock(planes: np.ndarray, height: int, text: str, x: int, y: int, scale: int = 6):
    """Draw digits and colons as 7-segment glyphs, white on a black box, in place.

    `planes` is a yuv420p frame as `VideoFrame.to_ndarray()` gives it (luma rows, then
    the two chroma planes); the box is made neutral grey in chroma too.
    """
    w, h, t = 4 * scale, 7 * scale, max(2, scale)
    luma = planes[:height]
    box = (y - t, y + h + t, x - t, x + len(text) * (w + 2 * t) + t)
    luma[box[0] : box[1], box[2] : box[3]] = 16
    half_w = planes.shape[1] // 2
    for first_row in (height, height + height // 4):
        chroma = planes[first_row : first_row + height // 4].reshape(height // 2, half_w)
        chroma[box[0] // 2 : box[1] // 2, box[2] // 2 : box[3] // 2] = 128
    for ch in text:
        if ch == ":":
            luma[y + h // 3 : y + h // 3 + t, x + w // 3 : x + w // 3 + t] = 235
            luma[y + 2 * h // 3 : y + 2 * h // 3 + t, x + w // 3 : x + w // 3 + t] = 235
            x += w // 2 + t
            continue
        segs = _SEGMENTS.get(ch, "")
        boxes = {
            "a": (y, x, t, w),
            "d": (y + h - t, x, t, w),
            "g": (y + h // 2 - t // 2, x, t, w),
            "f": (y, x, h // 2, t),
            "b": (y, x + w - t, h // 2, t),
            "e": (y + h // 2, x, h // 2, t),
            "c": (y + h // 2, x + w - t, h // 2, t),
        }
        for s in segs:
            by, bx, bh, bw = boxes[s]
            luma[by : by + bh, bx : bx + bw] = 235
        x += w + 2 * t


def write_stamp(luma: np.ndarray, value: int) -> None:
    """Write a 64-bit value as a row of black/white blocks at the top left."""
    for bit in range(STAMP_BITS):
        on = (value >> (STAMP_BITS - 1 - bit)) & 1
        x = bit * STAMP_BLOCK
        luma[0:STAMP_BLOCK, x : x + STAMP_BLOCK] = 235 if on else 16


def read_stamp(luma: np.ndarray) -> int | None:
    """Read back a value written by `write_stamp` from a decoded luma plane."""
    if luma.shape[1] < STAMP_BITS * STAMP_BLOCK or luma.shape[0] < STAMP_BLOCK:
        return None
    c = STAMP_BLOCK // 2
    row = luma[c - 2 : c + 2, c : STAMP_BITS * STAMP_BLOCK : STAMP_BLOCK].mean(axis=0)
    value = 0
    for sample in row:
        value = (value << 1) | int(sample > 128)
    return value


class TestPatternPublisher:
    """Encodes and publishes in real time from its own thread until stopped."""

    def __init__(
        self,
        url: str,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        bitrate: int = 1_500_000,
        preset: str = "ultrafast",
        stamp_time: bool = False,
        gop_seconds: float = 2.0,
    ) -> None:
        self.url = url
        self.width, self.height, self.fps = width, height, fps
        self.bitrate = bitrate
        self.preset = preset
        self.stamp_time = stamp_time
        self.gop = max(1, int(fps * gop_seconds))
        self.frames_sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run_forever, name="test-publisher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_forever(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self.publish()
                delay = 1.0
            except Exception as exc:  # noqa: BLE001 - network or encoder errors: retry
                log.warning("test publisher: %s; retrying in %.0f s", exc, delay)
            self._stop.wait(delay)
            delay = min(delay * 2, 10)

    def _pattern(self) -> av.filter.Graph:
        graph = av.filter.Graph()
        src = graph.add("testsrc2", f"size={self.width}x{self.height}:rate={self.fps}")
        fmt = graph.add("format", "yuv420p")
        sink = graph.add("buffersink")
        src.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        return graph

    def publish(self) -> None:
        """Publish until stopped or the connection fails (raises)."""
        graph = self._pattern()
        with av.open(self.url, "w", format="flv", timeout=5) as out:
            video = out.add_stream("libx264", rate=self.fps)
            video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
            video.bit_rate = self.bitrate
            video.options = {
                "preset": self.preset,
                "tune": "zerolatency",
                "g": str(self.gop),
                "bf": "0",
            }
            audio = out.add_stream("aac", rate=AUDIO_RATE)
            audio.layout = "stereo"
            audio.bit_rate = 96_000
            t0 = time.monotonic()
            samples = 0
            index = 0
            while not self._stop.is_set():
                due = t0 + index / self.fps
                wait = due - time.monotonic()
                if wait > 0:
                    self._stop.wait(wait)
                frame = graph.pull()
                planes = frame.to_ndarray()  # (h * 3 / 2, w) yuv420p
                luma = planes[: self.height]
                clock = time.strftime("%H:%M:%S")
                draw_clock(planes, self.height, clock, self.width // 2 - 180, self.height - 80)
                if self.stamp_time:
                    write_stamp(luma, time.time_ns() // 1000)
                picture = av.VideoFrame.from_ndarray(planes, format="yuv420p")
                picture.pts = index
                picture.time_base = Fraction(1, self.fps)
                for packet in video.encode(picture):
                    out.mux(packet)
                index += 1
                self.frames_sent += 1
                # Audio up to the video time: a 440 Hz tone, beeping once a second.
                target = index * AUDIO_RATE // self.fps
                while samples + AAC_FRAME <= target:
                    t = (samples + np.arange(AAC_FRAME)) / AUDIO_RATE
                    envelope = ((t % 1.0) < 0.15).astype(np.float32) * 0.3 + 0.02
                    tone = (np.sin(2 * np.pi * 440 * t) * envelope).astype(np.float32)
                    sound = av.AudioFrame.from_ndarray(
                        np.stack([tone, tone]), format="fltp", layout="stereo"
                    )
                    sound.sample_rate = AUDIO_RATE
                    sound.pts = samples
                    sound.time_base = Fraction(1, AUDIO_RATE)
                    for packet in audio.encode(sound):
                        out.mux(packet)
                    samples += AAC_FRAME


def main(argv: list[str] | None = None) -> None:
    """Run as its own process (PyAV holds the GIL while it writes to the network, so an
    in-process publisher would stall the event loop of a server in the same process)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Publish a test pattern over RTMP")
    parser.add_argument("url")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=1_500_000)
    parser.add_argument("--preset", default="ultrafast")
    parser.add_argument("--stamp-time", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s test-publisher: %(message)s")
    width, height = (int(v) for v in args.size.split("x"))
    publisher = TestPatternPublisher(
        args.url, width, height, args.fps, args.bitrate, args.preset, args.stamp_time
    )
    signal.signal(signal.SIGTERM, lambda *_: publisher._stop.set())
    signal.signal(signal.SIGINT, lambda *_: publisher._stop.set())
    publisher._run_forever()


if __name__ == "__main__":
    main()
