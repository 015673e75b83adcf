"""Rendition ladder: decode a live source once, encode each rung once (libx264).

Per live source stream S, each rung is its own hub stream named ``f"{S}~{rung}"``
(``class1~540p``, ``class1~360p``); ``~`` is not allowed in user stream names, so nobody
can publish or spoof one. A rung stream is a complete stream: H.264 made here (Annex-B,
SPS/PPS before every IDR, no B-frames, tune zerolatency) plus the source's own Opus and
AAC packets copied unchanged. Every rung shares the source's timeline: a rung frame has
the pts of the source frame it was made from, and a rung keyframe (forced IDR, no
other keyframes) falls exactly where the source has one and, in a longer source GOP,
every 2 s after the source's keyframe (`hub.rung_keyframe_due`), so all rungs switch at
the same instants and a viewer of the source (whose GOP may be 8 s) can move to a rung
within 2 s. The cost grows with the ladder, never with viewers: one decoder per source,
one encoder per rung.

Fields of the SOURCE stream's StreamInfo (stable: the fan-out and HLS read them):

- ``reorders: bool`` -- the publisher sends B-frames (ingest saw a video pts go back in
  time; a constant composition-time offset reorders nothing). Chromium's WebRTC decoder
  renders in decode order: such a source must not go to browsers as is.
- ``renditions: list[dict]`` -- the rungs, highest first, each
  ``{"name": "class1~540p", "rung": "540p", "width": 960, "height": 540,
  "bitrate": 1200000}`` (bitrate: the encoder's target in bit/s). The source itself is
  not listed.
- ``webrtc_default: str`` -- the hub stream a WebRTC viewer gets by default: when the
  source reorders, the top rung (the source's own size and bitrate, without B-frames,
  e.g. ``class1~720p``); otherwise "" (the source itself).

A rung is encoded only while its hub stream has a subscriber (a viewer, a media worker's
or sub node's relay, an HLS segmenter), and for `grace` seconds after the last one left;
a rung that starts waits for its next keyframe. The decoder runs while any rung
does. Decoding and encoding run in one thread per source (PyAV releases the GIL in the
codecs), never on the event loop; the loop only moves packets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
from av.video.frame import PictureType

from .h264 import NAL_PPS, NAL_SPS, H264Error, parse_sps, split_annexb
from .hub import RENDITION_SEPARATOR, Stream, StreamHub, rung_keyframe_due
from .packets import TIME_BASE, MediaPacket

log = logging.getLogger(__name__)

SEPARATOR = RENDITION_SEPARATOR
#: A rendition's hub stream name: a user stream name, "~", a rung ("540p").
RENDITION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}~[0-9]{3,4}p\Z")
_RUNG = re.compile(r"^([0-9]{3,4})p:([0-9]{2,6})\Z")
DEFAULT_LADDER = "540p:1200,360p:500"
#: Seconds a rung keeps encoding after its last subscriber left (AIRCLASS_LADDER_GRACE).
DEFAULT_GRACE = float(os.environ.get("AIRCLASS_LADDER_GRACE", "15"))
#: How often the ladder looks at sources and subscribers (seconds).
TICK_SECONDS = 0.2
#: Source packets waiting for the encoder thread past which it skips to a keyframe.
MAX_BACKLOG = 90
#: A rung viewer that lost its picture (PLI) gets a keyframe of every active rung (they
#: stay aligned) at most this often per source (seconds): one keyframe costs its link
#: far less than the rung's GOP again.
KEYFRAME_REQUEST_INTERVAL_S = 1.0
#: A rung's encoder buffer (VBV) in seconds of its bitrate: the largest frame (a flash,
#: a scene cut) then crosses a link that just carries the rung in half a second, within
#: what the fan-out's pacer spreads (fanout.PACE_MAX_DELAY_S). With a second, a flash
#: and the frame after it made two 60 KB frames at 360p 500 kbit/s, which a 1 Mbit/s
#: link dropped half of.
VBV_SECONDS = 0.5
#: libx264 preset per output height, chosen from the measured cost (README, media).
PRESETS = ((720, "superfast"), (540, "veryfast"), (0, "veryfast"))
#: Top-rung bitrate when the source's own cannot be measured yet (bit/s per height).
FALLBACK_BITRATE = ((1080, 4_500_000), (720, 2_500_000), (540, 1_200_000), (0, 800_000))
MIN_BITRATE, MAX_BITRATE = 300_000, 8_000_000


@dataclass(frozen=True, slots=True)
class Rung:
    """One configured rung: output height and target bitrate (bit/s)."""

    height: int
    bitrate: int

    @property
    def name(self) -> str:
        return f"{self.height}p"


@dataclass(frozen=True, slots=True)
class Rendition:
    """A rung planned for one source: its hub stream and output size."""

    name: str
    rung: str
    width: int
    height: int
    bitrate: int

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "rung": self.rung,
            "width": self.width,
            "height": self.height,
            "bitrate": self.bitrate,
        }


def parse_ladder(text: str) -> list[Rung]:
    """``"540p:1200,360p:500"`` (kbit/s) -> rungs, highest first; ``"none"`` -> []."""
    text = text.strip()
    if text.lower() in ("", "none", "off"):
        return []
    rungs = []
    for part in text.split(","):
        match = _RUNG.match(part.strip())
        if match is None:
            raise ValueError(f"bad ladder rung {part!r}: use HEIGHTp:KBITS, e.g. 540p:1200")
        height, kbits = int(match[1]), int(match[2])
        if not 144 <= height <= 2160 or height % 2 or not 100 <= kbits <= 20_000:
            raise ValueError(f"bad ladder rung {part!r}: even height 144-2160, 100-20000 kbit/s")
        rungs.append(Rung(height, kbits * 1000))
    if len({r.height for r in rungs}) != len(rungs):
        raise ValueError("ladder rungs must have different heights")
    return sorted(rungs, key=lambda r: -r.height)


def rendition_name(source: str, rung: str) -> str:
    return f"{source}{SEPARATOR}{rung}"


def is_rendition(name: str) -> bool:
    return RENDITION_NAME.match(name) is not None


def source_of(name: str) -> str:
    """The source stream of a rendition name (the name itself otherwise)."""
    return name.split(SEPARATOR, 1)[0]


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def plan(
    source: str,
    width: int,
    height: int,
    rungs: Iterable[Rung],
    reorders: bool,
    source_bitrate: int,
) -> list[Rendition]:
    """The renditions of a source: the rungs below its height, and with B-frames a top
    rung at its own size and bitrate. Highest first."""
    out = []
    if reorders:
        bitrate = min(max(source_bitrate, MIN_BITRATE), MAX_BITRATE)
        rung = f"{height}p"
        out.append(Rendition(rendition_name(source, rung), rung, width, height, bitrate))
    for r in rungs:
        if r.height < height:
            w = _even(width * r.height / height)
            out.append(Rendition(rendition_name(source, r.name), r.name, w, r.height, r.bitrate))
    return out


def preset_for(height: int) -> str:
    return next(p for h, p in PRESETS if height >= h)


def fallback_bitrate(height: int) -> int:
    return next(b for h, b in FALLBACK_BITRATE if height >= h)


# -- codecs (run in the encoder thread) ---------------------------------------------------
class RungEncoder:
    """libx264 for one rendition: no B-frames, IDR only where told (the source's)."""

    def __init__(self, rendition: Rendition, fps: float = 30.0) -> None:
        self.rendition = rendition
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = rendition.width, rendition.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(round(fps * 1000), 1000)
        ctx.bit_rate = rendition.bitrate
        ctx.gop_size = 100_000  # keyframes only where the source has them
        kbits = rendition.bitrate // 1000
        buffer_kbits = int(kbits * VBV_SECONDS)
        ctx.options = {
            "preset": preset_for(rendition.height),
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": (
                f"keyint=infinite:scenecut=0:bframes=0:repeat-headers=1:"
                f"vbv-maxrate={kbits}:vbv-bufsize={buffer_kbits}:threads=1"
            ),
        }
        self.ctx = ctx
        self.started = False
        self.frames = 0
        self._last_pts = -(1 << 62)

    def encode(self, frame: av.VideoFrame, keyframe: bool) -> list[tuple[bytes, int, bool]]:
        """(Annex-B access unit, pts, keyframe) made from one decoded source frame."""
        if frame.pts <= self._last_pts:
            return []  # x264 needs strictly rising pts; a glitch in the source's is skipped
        if not self.started:
            # The first frame made is a keyframe: the decoder is at the live edge (the
            # cached GOP was decoded first) and viewers wait for this rung. Later
            # keyframes fall where every rung has them (`rung_keyframe_due`).
            keyframe = self.started = True
        self._last_pts = frame.pts
        r = self.rendition
        if frame.width != r.width or frame.height != r.height or frame.format.name != "yuv420p":
            out = frame.reformat(width=r.width, height=r.height, format="yuv420p")
        else:
            out = frame
        out.pts, out.time_base = frame.pts, TIME_BASE
        out.pict_type = PictureType.I if keyframe else PictureType.NONE
        self.frames += 1
        return [(bytes(p), p.pts, p.is_keyframe) for p in self.ctx.encode(out)]


class LadderCodec:
    """Decodes one source once and feeds each active rung's encoder (thread-confined)."""

    def __init__(self) -> None:
        self.decoder = av.CodecContext.create("h264", "r")
        self.decoder.thread_count = 1  # frame threads would add a frame of delay each
        self.encoders: dict[str, RungEncoder] = {}
        self.fps = 30.0
        self._last_pts: int | None = None
        self._key_pts: int | None = None  # of the source's last keyframe
        self.frames_decoded = 0
        #: The next frame is a keyframe in every rung (a viewer asked for one).
        self.keyframe_wanted = False

    def set_renditions(self, renditions: Iterable[Rendition]) -> None:
        """Encode exactly these from their next keyframe on (running ones go on)."""
        wanted = {r.name: r for r in renditions}
        for name in list(self.encoders):
            if name not in wanted or self.encoders[name].rendition != wanted[name]:
                del self.encoders[name]
        for name, r in wanted.items():
            if name not in self.encoders:
                self.encoders[name] = RungEncoder(r, self.fps)

    def feed(self, packet: MediaPacket, encode: bool = True) -> list[tuple[str, bytes, int, bool]]:
        """(rendition name, access unit, pts, keyframe) for one source video packet;
        with `encode` False it is only decoded (catching up to the live edge)."""
        pkt = av.Packet(packet.data)
        pkt.pts, pkt.dts, pkt.time_base = packet.pts, packet.dts, TIME_BASE
        out = []
        try:
            frames = self.decoder.decode(pkt)
        except av.error.InvalidDataError:
            return out
        for frame in frames:
            self.frames_decoded += 1
            if frame.pts is None:
                continue
            keyframe = bool(frame.key_frame)
            if keyframe:
                self._key_pts = frame.pts
            elif rung_keyframe_due(self._key_pts, self._last_pts, frame.pts):
                keyframe = True  # a long source GOP: the rungs' own keyframe
            elif self.keyframe_wanted and encode:
                keyframe = True
            self.keyframe_wanted = self.keyframe_wanted and not (keyframe and encode)
            if self._last_pts is not None and 0 < frame.pts - self._last_pts < 200_000:
                self.fps = 0.9 * self.fps + 0.1 * (1e6 / (frame.pts - self._last_pts))
            self._last_pts = frame.pts
            if not encode:
                continue
            for name, encoder in self.encoders.items():
                for data, pts, key in encoder.encode(frame, keyframe):
                    out.append((name, data, pts, key))
        return out


# -- the live side ------------------------------------------------------------------------
_STOP = object()
_KEYFRAME = object()


@dataclass(frozen=True, slots=True)
class _CatchUp:
    """The source's cached GOP, decoded (not encoded) before the live packets: the rungs
    start at their next keyframe instead of the source's next one (a GOP of 8 s or more)."""

    packets: list[MediaPacket]


class _EncoderThread:
    """One thread per source: source packets in, rung packets out to the loop."""

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop, deliver) -> None:
        self.loop = loop
        self.deliver = deliver
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.cpu_seconds = 0.0
        self.thread = threading.Thread(target=self._run, name=f"ladder-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        codec = LadderCodec()
        renditions: list[Rendition] = []
        received: dict[int, float] = {}
        while True:
            item = self.inbox.get()
            if item is _STOP:
                return
            if item is _KEYFRAME:
                codec.keyframe_wanted = True
                continue
            started = time.thread_time()
            if isinstance(item, list):
                renditions = item
                codec.set_renditions(renditions)
                continue
            if not isinstance(item, _CatchUp):
                received[item.pts] = item.received_at
                if len(received) > 256:
                    for pts in sorted(received)[:128]:
                        del received[pts]
            try:
                if isinstance(item, _CatchUp):
                    for packet in item.packets:
                        codec.feed(packet, encode=False)
                    made = []
                else:
                    made = codec.feed(item)
            except Exception:  # noqa: BLE001 - a codec failure must not end the stream
                log.exception("ladder: encoding failed; resetting")
                codec = LadderCodec()
                codec.set_renditions(renditions)
                made = []
            self.cpu_seconds += time.thread_time() - started
            if made:
                out = [
                    (n, MediaPacket("video", d, p, p, k, received.get(p, 0.0)))
                    for n, d, p, k in made
                ]
                self.loop.call_soon_threadsafe(self.deliver, out)

    def put(self, item) -> None:
        self.inbox.put(item)

    def backlog(self) -> int:
        return self.inbox.qsize()

    def stop(self) -> None:
        self.inbox.put(_STOP)


class SourceLadder:
    """The renditions of one live source: their hub streams and, while any is watched,
    a feed from the source into an encoder thread."""

    def __init__(self, ladder: Ladder, source: Stream) -> None:
        self.ladder = ladder
        self.source = source
        self.publisher_id = source.publisher_id or ""
        self.renditions: list[Rendition] = []
        self.streams: dict[str, Stream] = {}
        #: Rendition name -> monotonic time it was last watched.
        self.watched_at: dict[str, float] = {}
        #: Renditions being encoded now (the encoder thread's set).
        self.active: list[Rendition] = []
        self.thread: _EncoderThread | None = None
        self.feed: asyncio.Task | None = None
        self.frames: dict[str, int] = {}
        self.skipped = 0
        self._planned: tuple | None = None
        self._keyframe_asked_at = 0.0

    def tick(self, now: float) -> None:
        info = self.source.info
        if not info.width or not info.height:
            return
        key = (info.width, info.height, info.reorders)
        if key != self._planned:
            self._plan(key)
        for name, stream in self.streams.items():
            if stream.subscriber_count:
                self.watched_at[name] = now
            if stream.info.aac_config != info.aac_config:  # audio headers came later
                self._copy_audio_info(stream)
        grace = self.ladder.grace
        active = [r for r in self.renditions if now - self.watched_at.get(r.name, -1e9) < grace]
        if active != self.active:
            self._set_active(active)

    def _plan(self, key: tuple) -> None:
        width, height, reorders = key
        source = self.source
        elapsed = time.time() - (source.publisher_since or time.time())
        bitrate = int(source.bytes_in * 8 / elapsed) if elapsed > 2 else fallback_bitrate(height)
        renditions = plan(source.name, width, height, self.ladder.rungs, reorders, bitrate)
        self._planned = key
        self.renditions = renditions
        for r in renditions:
            stream = self.streams.get(r.name)
            if stream is None:
                stream = self.streams[r.name] = self.ladder.hub.stream(r.name)
                if stream.live:  # left by an earlier publisher session of the source
                    stream.detach_publisher(stream.publisher_id or "")
                stream.attach_publisher(f"ladder-{self.publisher_id}")
                stream.keyframe_requester = self.request_keyframe
            stream.info.width, stream.info.height = r.width, r.height
            self._copy_audio_info(stream)
        info = source.info
        info.renditions = [r.as_dict() for r in renditions]
        info.webrtc_default = renditions[0].name if reorders and renditions else ""
        log.info(
            "ladder %s: %dx%d%s -> %s",
            source.name,
            width,
            height,
            " with B-frames" if reorders else "",
            ", ".join(f"{r.rung} {r.bitrate // 1000}k" for r in renditions) or "no rungs",
        )

    def request_keyframe(self) -> None:
        """A viewer of a rung lost its picture: the next frame of every active rung is a
        keyframe (at most once per KEYFRAME_REQUEST_INTERVAL_S)."""
        now = time.monotonic()
        if self.thread is None or now - self._keyframe_asked_at < KEYFRAME_REQUEST_INTERVAL_S:
            return
        self._keyframe_asked_at = now
        self.thread.put(_KEYFRAME)

    def _copy_audio_info(self, stream: Stream) -> None:
        src, dst = self.source.info, stream.info
        dst.aac_config = src.aac_config
        dst.audio_sample_rate, dst.audio_channels = src.audio_sample_rate, src.audio_channels

    def _set_active(self, active: list[Rendition]) -> None:
        started = {r.name for r in active} - {r.name for r in self.active}
        stopped = {r.name for r in self.active} - {r.name for r in active}
        self.active = active
        if started or stopped:
            log.info(
                "ladder %s: encoding %s",
                self.source.name,
                ", ".join(r.rung for r in active) or "nothing",
            )
        if not active:
            self._stop_encoding()
            return
        if self.thread is None:
            loop = asyncio.get_running_loop()
            self.thread = _EncoderThread(self.source.name, loop, self._deliver)
        self.thread.put(list(active))
        if self.feed is None:
            self.feed = asyncio.ensure_future(self._feed())
            self.feed.set_name(f"ladder-feed-{self.source.name}")

    async def _feed(self) -> None:
        """Source packets to the encoder thread (video) and to every rung (audio)."""
        sub = self.source.subscribe(("video", "audio", "aac"), label=f"ladder-{self.source.name}")
        if self.thread is not None:  # the cached GOP, decoded only, before live packets
            self.thread.put(_CatchUp(sub.backlog))
        skip_to_keyframe = False
        try:
            while True:
                packet = await sub.get()
                if packet.kind != "video":
                    for r in self.active:
                        stream = self.streams[r.name]
                        if stream.info.sps:  # its video started
                            stream.publish(packet)
                    continue
                thread = self.thread
                if thread is None:
                    return
                if thread.backlog() > MAX_BACKLOG:
                    skip_to_keyframe = True  # the machine cannot keep up: drop a GOP
                if skip_to_keyframe:
                    if not packet.keyframe:
                        self.skipped += 1
                        continue
                    skip_to_keyframe = False
                thread.put(packet)
        except Exception as exc:  # noqa: BLE001 - SubscriptionClosed or the source gone
            log.debug("ladder %s: feed ended: %r", self.source.name, exc)
        finally:
            sub.close()

    def _deliver(self, made: list[tuple[str, MediaPacket]]) -> None:
        """On the loop: publish what the encoder thread made into the rung streams."""
        for name, packet in made:
            stream = self.streams.get(name)
            if stream is None or not stream.live:
                continue
            if packet.keyframe and not stream.info.sps:
                self._set_params(stream, packet.data)
            if packet.received_at == 0.0:
                packet.received_at = time.monotonic()
            self.frames[name] = self.frames.get(name, 0) + 1
            stream.publish(packet)

    def _set_params(self, stream: Stream, access_unit: bytes) -> None:
        info = stream.info
        for nal in split_annexb(access_unit):
            kind = nal[0] & 0x1F
            if kind == NAL_SPS and not info.sps:
                info.sps = nal
                try:
                    info.video_profile = parse_sps(nal).profile
                except H264Error:
                    pass
            elif kind == NAL_PPS and not info.pps:
                info.pps = nal

    def _stop_encoding(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.ladder.ending.add(self.feed)
            self.feed.add_done_callback(self.ladder.ending.discard)
            self.feed = None
        if self.thread is not None:
            self.thread.stop()
            # Kept in the ladder's total: its counter must not go back when one ends.
            self.ladder.cpu_seconds += self.thread.cpu_seconds
            self.thread = None
        for stream in self.streams.values():
            # The next start begins at a new keyframe with fresh parameters.
            stream.info.sps = stream.info.pps = b""

    def close(self) -> None:
        """The source's publisher left: stop encoding, rung streams go offline."""
        self._stop_encoding()
        self.active = []
        for stream in self.streams.values():
            stream.detach_publisher(f"ladder-{self.publisher_id}")

    def status(self) -> dict:
        return {
            "source": self.source.name,
            "renditions": [r.as_dict() for r in self.renditions],
            "encoding": [r.name for r in self.active],
            "frames": dict(self.frames),
            "cpu_seconds": round(self.thread.cpu_seconds, 3) if self.thread else 0.0,
            "skipped": self.skipped,
        }


class Ladder:
    """Every source ladder of a node: follows the hub's live sources (never renditions,
    never streams relayed from another node: those have their ladder upstream)."""

    def __init__(self, hub: StreamHub, rungs: list[Rung], grace: float = DEFAULT_GRACE) -> None:
        self.hub = hub
        self.rungs = rungs
        self.grace = grace
        self.sources: dict[str, SourceLadder] = {}
        self.cpu_seconds = 0.0
        #: Feed tasks cancelled and not finished yet (awaited at stop).
        self.ending: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())
        self._task.set_name("ladder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for name in list(self.sources):
            self._drop(name)
        if self.ending:
            await asyncio.gather(*self.ending, return_exceptions=True)

    @staticmethod
    def wants(stream: Stream) -> bool:
        publisher = stream.publisher_id or ""
        return (
            stream.live
            and SEPARATOR not in stream.name
            and not publisher.startswith(("relay-", "ladder-"))
        )

    async def _watch(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(TICK_SECONDS)

    def tick(self) -> None:
        now = time.monotonic()
        for name, entry in list(self.sources.items()):
            stream = self.hub.get(name)
            if stream is not entry.source or stream.publisher_id != entry.publisher_id:
                self._drop(name)  # publisher left or changed: plan again
        for stream in self.hub.live_streams():
            if stream.name not in self.sources and self.wants(stream):
                self.sources[stream.name] = SourceLadder(self, stream)
        for entry in list(self.sources.values()):
            try:
                entry.tick(now)
            except Exception:
                log.exception("ladder %s failed", entry.source.name)
                self._drop(entry.source.name)

    def _drop(self, name: str) -> None:
        entry = self.sources.pop(name, None)
        if entry is not None:
            entry.close()

    def encoding(self) -> list[str]:
        """Names of the renditions being encoded now."""
        return [r.name for e in self.sources.values() for r in e.active]

    def status(self) -> list[dict]:
        return [e.status() for e in self.sources.values()]

    def metrics(self) -> list:
        """Prometheus families: encoders running, frames made, encoder CPU."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        running = GaugeMetricFamily(
            "airclass_ladder_encoders", "Rendition encoders running", labels=["stream"]
        )
        frames = CounterMetricFamily(
            "airclass_ladder_frames", "Frames encoded per rendition", labels=["stream"]
        )
        cpu = CounterMetricFamily(
            "airclass_ladder_cpu_seconds", "CPU time of the ladder's decode/encode threads"
        )
        total = self.cpu_seconds
        for entry in self.sources.values():
            for r in entry.renditions:
                running.add_metric([r.name], 1 if r in entry.active else 0)
            for name, count in entry.frames.items():
                frames.add_metric([name], count)
            if entry.thread is not None:
                total += entry.thread.cpu_seconds
        cpu.add_metric([], total)
        return [running, frames, cpu]
