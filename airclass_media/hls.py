"""HLS fallback without re-encoding: Low-Latency HLS with fMP4 (CMAF) parts, in memory.

For viewers WebRTC cannot reach. Per stream a `HlsSegmenter` subscribes to the hub
("video": H.264 Annex-B access units; "aac": the teacher's AAC frames as received) and
cuts the stream into segments that start at keyframes, each made of parts of at most
`part_target` seconds. Every part is one `moof`+`mdat` fragment carrying both tracks;
a segment is its parts back to back. The samples are the publisher's bytes: Annex-B
start codes become 4-byte lengths, SPS/PPS go into the init segment's `avcC` (a new
init segment, behind EXT-X-DISCONTINUITY, when they change: a publisher reconnect).

Memory stays bounded: the last `KEEP_SEGMENTS` complete segments and the one being cut
(a segment is closed after MAX_SEGMENT_SECONDS even without a keyframe). Nothing is
written to disk.

Players without LL-HLS (ffmpeg, VLC) need a complete segment in the first playlist they
get: a segmenter starts from the hub's cached GOP, so its first segment is complete at the
source's next keyframe, and `ready` holds only once one is. EXT-X-TARGETDURATION is fixed
for the stream's lifetime (RFC 8216: it must not change): it is the first complete
segment's duration rounded up, and later segments are cut at that length even without a
keyframe. A blocking reload (`_HLS_msn`/`_HLS_part`) asks `reload_status`: 400 for a
request beyond the Advance Part Limit, 503 when it is not satisfied in three target
durations (RFC 8216bis 6.2.5.2). `multivariant_playlist` lists the ladder's renditions
(airclass_media.ladder) with BANDWIDTH, RESOLUTION and CODECS.

`HlsOrigin` holds a node's segmenters, made on a stream's first request and dropped when
nobody asked for a while, and counts distinct recent clients as viewers.
Knows nothing of HTTP: callers get playlists as text and parts as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .h264 import NAL_AUD, NAL_PPS, NAL_SPS, H264Error, parse_sps, split_annexb
from .hub import Stream, Subscription, SubscriptionClosed
from .packets import MediaPacket, StreamInfo

log = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90_000
AAC_FRAME = 1024
#: Complete segments kept for the playlist (the one being cut comes on top).
KEEP_SEGMENTS = 4
#: Segments shorter than this continue past a keyframe (seconds).
MIN_SEGMENT_SECONDS = 1.0
#: A segment is closed after this even without a keyframe (bounded memory); once the
#: target duration is known, after that.
MAX_SEGMENT_SECONDS = 10.0
#: Leeway when rounding the first segment's duration up to the target duration (s).
TARGET_SLACK = 0.05
#: Parts are listed in the playlist for the newest this many segments.
PART_SEGMENTS = 3
#: Subscriber queue: video at 60 fps and AAC at 48 kHz for ~4 s.
QUEUE_PACKETS = 600
#: A segmenter nobody asked anything of for this long is dropped (seconds).
IDLE_SECONDS = 30.0
#: A playlist client counts as a viewer for this long after its last request (seconds).
VIEWER_WINDOW = 10.0
KEYFRAME_FLAGS = 0x02000000  # sample_depends_on=2: an I-frame
DELTA_FLAGS = 0x01010000  # sample_depends_on=1, sample_is_non_sync_sample=1


# -- fMP4 boxes --------------------------------------------------------------------------
def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


@dataclass(frozen=True, slots=True)
class TrackParams:
    """What an init segment describes; a change needs a new one."""

    sps: bytes
    pps: bytes
    aac_config: bytes
    sample_rate: int
    channels: int

    @property
    def has_audio(self) -> bool:
        return bool(self.aac_config) and self.sample_rate > 0


@dataclass(slots=True)
class Sample:
    dts: int  # track timescale
    data: bytes
    duration: int = 0
    cts: int = 0
    keyframe: bool = True


def _ticks(us: int) -> int:
    """Microseconds on the stream timeline as 90 kHz video ticks."""
    return us * VIDEO_TIMESCALE // 1_000_000


def _avcc(sample: bytes) -> bytes:
    """An Annex-B access unit as length-prefixed NAL units, without AUD/SPS/PPS."""
    out = []
    for nal in split_annexb(sample):
        if nal[0] & 0x1F not in (NAL_AUD, NAL_SPS, NAL_PPS):
            out.append(struct.pack(">I", len(nal)) + nal)
    return b"".join(out)


def _descriptor(tag: int, body: bytes) -> bytes:
    return bytes([tag, 0x80, 0x80, 0x80, len(body)]) + body


def init_segment(params: TrackParams) -> bytes:
    """ftyp + moov of a stream with one H.264 track (id 1) and maybe one AAC track (id 2)."""
    sps_info = parse_sps(params.sps)
    width, height = sps_info.width, sps_info.height
    avcc = box(
        b"avcC",
        bytes([1, params.sps[1], params.sps[2], params.sps[3], 0xFF, 0xE1]),
        struct.pack(">H", len(params.sps)),
        params.sps,
        b"\x01",
        struct.pack(">H", len(params.pps)),
        params.pps,
    )
    avc1 = box(
        b"avc1",
        bytes(6),
        struct.pack(">H", 1),
        bytes(16),
        struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1),
        bytes(32),
        struct.pack(">Hh", 0x18, -1),
        avcc,
    )
    tracks = [_trak(1, b"vide", VIDEO_TIMESCALE, avc1, width, height)]
    if params.has_audio:
        esds = full_box(
            b"esds",
            0,
            0,
            _descriptor(
                3,
                struct.pack(">HB", 2, 0)
                + _descriptor(
                    4,
                    bytes([0x40, 0x15, 0, 0, 0])
                    + struct.pack(">II", 0, 0)
                    + _descriptor(5, params.aac_config),
                )
                + _descriptor(6, b"\x02"),
            ),
        )
        mp4a = box(
            b"mp4a",
            bytes(6),
            struct.pack(">H", 1),
            bytes(8),
            struct.pack(">HHHHI", params.channels or 2, 16, 0, 0, params.sample_rate << 16),
            esds,
        )
        tracks.append(_trak(2, b"soun", params.sample_rate, mp4a, 0, 0))
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100),
        bytes(10),
        MATRIX,
        bytes(24),
        struct.pack(">I", len(tracks) + 1),
    )
    trex = [
        full_box(b"trex", 0, 0, struct.pack(">IIIII", i + 1, 1, 0, 0, 0))
        for i in range(len(tracks))
    ]
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcisommp41avc1")
    return ftyp + box(b"moov", mvhd, *tracks, box(b"mvex", *trex))


def _trak(track_id: int, handler: bytes, timescale: int, entry: bytes, w: int, h: int) -> bytes:
    tkhd = full_box(
        b"tkhd",
        0,
        3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, track_id, 0, 0),
        bytes(8),
        struct.pack(">hhhH", 0, 0, 0x100 if handler == b"soun" else 0, 0),
        MATRIX,
        struct.pack(">II", w << 16, h << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, 0x55C4, 0))
    name = b"AIRClass video\x00" if handler == b"vide" else b"AIRClass audio\x00"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I4s", 0, handler), bytes(12), name)
    if handler == b"vide":
        header = full_box(b"vmhd", 0, 1, bytes(8))
    else:
        header = full_box(b"smhd", 0, 0, bytes(4))
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
        full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", header, dinf, stbl)))


def fragment(sequence: int, video: list[Sample], audio: list[Sample]) -> bytes:
    """moof + mdat of one part: the video samples (track 1), then the audio (track 2)."""
    tracks = [(1, video, True), (2, audio, False)]
    tracks = [(tid, samples, is_video) for tid, samples, is_video in tracks if samples]

    def traf(track_id: int, samples: list[Sample], is_video: bool, data_offset: int) -> bytes:
        if is_video:
            flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800
            rows = b"".join(
                struct.pack(
                    ">IIIi",
                    s.duration,
                    len(s.data),
                    KEYFRAME_FLAGS if s.keyframe else DELTA_FLAGS,
                    s.cts,
                )
                for s in samples
            )
        else:
            flags = 0x000001 | 0x000100 | 0x000200
            rows = b"".join(struct.pack(">II", s.duration, len(s.data)) for s in samples)
        return box(
            b"traf",
            full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track_id)),  # default-base-is-moof
            full_box(b"tfdt", 1, 0, struct.pack(">Q", max(samples[0].dts, 0))),
            full_box(b"trun", 1, flags, struct.pack(">Ii", len(samples), data_offset), rows),
        )

    # Build once with zero offsets to learn the moof size, then with the real ones.
    mfhd = full_box(b"mfhd", 0, 0, struct.pack(">I", sequence))
    moof_size = len(box(b"moof", mfhd, *(traf(t, s, v, 0) for t, s, v in tracks)))
    offsets, position = [], moof_size + 8
    for _tid, samples, _v in tracks:
        offsets.append(position)
        position += sum(len(s.data) for s in samples)
    moof = box(
        b"moof", mfhd, *(traf(t, s, v, o) for (t, s, v), o in zip(tracks, offsets, strict=True))
    )
    mdat = box(b"mdat", *(s.data for _t, samples, _v in tracks for s in samples))
    return moof + mdat


# -- segments and playlist --------------------------------------------------------------
@dataclass(slots=True)
class Part:
    data: bytes
    duration: float
    independent: bool


@dataclass(slots=True)
class Segment:
    msn: int
    init_id: int
    discontinuity: bool
    parts: list[Part] = field(default_factory=list)
    complete: bool = False

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    @property
    def size(self) -> int:
        return sum(len(p.data) for p in self.parts)

    def data(self) -> bytes:
        return b"".join(p.data for p in self.parts)


class HlsSegmenter:
    """Cuts one hub stream into LL-HLS segments and parts, kept in memory."""

    def __init__(self, stream: Stream, part_target: float = 0.5) -> None:
        self.stream = stream
        self.part_target = part_target
        self.segments: list[Segment] = []
        self.inits: dict[int, bytes] = {}
        self.discontinuity_sequence = 0
        self.parts_made = 0
        self.last_used = time.monotonic()
        self._params: TrackParams | None = None
        self._init_id = 0
        self._sequence = 0
        self._pending: MediaPacket | None = None  # newest video packet: duration unknown
        self._video: list[Sample] = []
        self._audio: list[MediaPacket] = []
        self._audio_next: int | None = None  # next AAC sample time, audio timescale
        #: EXT-X-TARGETDURATION, fixed by the first complete segment (None before it).
        self.target_duration: int | None = None
        self._changed = asyncio.Event()
        self._subscription: Subscription | None = None
        self._task: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        # The cached GOP first: the first segment is complete at the next keyframe.
        self._subscription = self.stream.subscribe(
            ("video", "aac"), max_packets=QUEUE_PACKETS, with_gop=True, label="hls"
        )
        self._task = asyncio.ensure_future(self._run())
        self._task.set_name(f"hls-{self.stream.name}")

    async def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._wake()

    async def _run(self) -> None:
        sub = self._subscription
        assert sub is not None
        resyncs = sub.resyncs
        try:
            while True:
                packet = await sub.get()
                if sub.resyncs != resyncs:  # we fell behind: the hub resumed at a keyframe
                    resyncs = sub.resyncs
                    self._pending, self._video, self._audio = None, [], []
                    self._close_segment()
                self.push(packet)
        except SubscriptionClosed:
            pass

    # -- cutting ---------------------------------------------------------------------
    def push(self, packet: MediaPacket) -> None:
        """One hub packet ("video" or "aac"), in arrival order."""
        if packet.kind == "aac":
            if self._params is not None and self._params.has_audio:
                self._audio.append(packet)
                if len(self._audio) > QUEUE_PACKETS:  # video stopped: keep memory bounded
                    del self._audio[: len(self._audio) - QUEUE_PACKETS]
            return
        if packet.kind != "video":
            return
        pending = self._pending
        open_segment = bool(self.segments) and not self.segments[-1].complete
        if pending is not None and open_segment:
            duration = _ticks(packet.dts) - _ticks(pending.dts)
            self._add_video(pending, max(duration, 1), cut_at=packet)
        elif packet.keyframe:
            self._video = []
            self._start_segment(packet)
        else:
            return  # wait for a keyframe
        self._pending = packet

    def _add_video(self, packet: MediaPacket, duration: int, cut_at: MediaPacket) -> None:
        data = _avcc(packet.data)
        if data:
            self._video.append(
                Sample(
                    dts=_ticks(packet.dts),
                    data=data,
                    duration=duration,
                    cts=_ticks(packet.pts) - _ticks(packet.dts),
                    keyframe=packet.keyframe,
                )
            )
        part_ticks = sum(s.duration for s in self._video)
        segment = self.segments[-1] if self.segments else None
        seg_seconds = (segment.duration if segment else 0) + part_ticks / VIDEO_TIMESCALE
        if cut_at.keyframe and seg_seconds >= MIN_SEGMENT_SECONDS:
            self._flush_part(cut_at)
            self._start_segment(cut_at)
            return
        if seg_seconds >= self._longest_allowed:
            self._flush_part(cut_at)
            self._close_segment()
            self._open_segment(discontinuity=False)
            return
        # Cut before the next frame would make the part longer than the target.
        next_ticks = part_ticks + duration
        if next_ticks > self.part_target * VIDEO_TIMESCALE:
            self._flush_part(cut_at)

    @property
    def _longest_allowed(self) -> float:
        """A segment is cut at this length even without a keyframe (seconds)."""
        if self.target_duration is None:
            return MAX_SEGMENT_SECONDS
        return float(self.target_duration)

    def _start_segment(self, keyframe: MediaPacket) -> None:
        """A keyframe starts a segment; new parameters start a new init segment."""
        self._close_segment()
        params = self._params_of(keyframe)
        discontinuity = False
        if params is not None and params != self._params:
            discontinuity = self._params is not None
            try:
                init = init_segment(params)
            except (H264Error, IndexError, ValueError) as exc:
                log.warning("hls %s: cannot describe the stream: %s", self.stream.name, exc)
                return
            self._params = params
            self._init_id += 1
            self.inits[self._init_id] = init
            self._audio_next = None
        if self._params is None:
            return
        self._open_segment(discontinuity)

    def _params_of(self, keyframe: MediaPacket) -> TrackParams | None:
        sps = pps = b""
        for nal in split_annexb(keyframe.data):
            kind = nal[0] & 0x1F
            if kind == NAL_SPS and not sps:
                sps = nal
            elif kind == NAL_PPS and not pps:
                pps = nal
        if not sps or not pps:
            sps, pps = self.stream.info.sps, self.stream.info.pps
        if not sps or not pps:
            return self._params
        info = self.stream.info
        return TrackParams(sps, pps, info.aac_config, info.audio_sample_rate, info.audio_channels)

    def _open_segment(self, discontinuity: bool) -> None:
        msn = self.segments[-1].msn + 1 if self.segments else 0
        self.segments.append(Segment(msn, self._init_id, discontinuity))

    def _close_segment(self) -> None:
        if not self.segments or self.segments[-1].complete:
            return
        segment = self.segments[-1]
        if not segment.parts:
            self.segments.pop()  # nothing in it: forget it
            return
        segment.complete = True
        if self.target_duration is None:
            self.target_duration = max(1, math.ceil(segment.duration - TARGET_SLACK))
        while sum(1 for s in self.segments if s.complete) > KEEP_SEGMENTS:
            gone = self.segments.pop(0)
            if self.segments and self.segments[0].discontinuity:
                self.discontinuity_sequence += 1
            if not any(s.init_id == gone.init_id for s in self.segments):
                self.inits.pop(gone.init_id, None)
        self._wake()

    def _flush_part(self, cut_at: MediaPacket) -> None:
        """The video samples gathered, and the AAC frames before `cut_at`, as one part."""
        if not self._video or not self.segments or self.segments[-1].complete:
            self._video = []
            return
        audio = self._audio_samples(cut_at.dts)
        self._sequence += 1
        data = fragment(self._sequence, self._video, audio)
        duration = sum(s.duration for s in self._video) / VIDEO_TIMESCALE
        self.segments[-1].parts.append(Part(data, duration, self._video[0].keyframe))
        self._video = []
        self.parts_made += 1
        self._wake()

    def _audio_samples(self, before_us: int) -> list[Sample]:
        params = self._params
        if params is None or not params.has_audio:
            self._audio = []
            return []
        rate = params.sample_rate
        take = [p for p in self._audio if p.dts < before_us]
        self._audio = self._audio[len(take) :]
        samples = []
        for packet in take:
            actual = packet.dts * rate // 1_000_000
            expected = self._audio_next
            # Continuous sample clock; jump only on a real gap (RTMP has ms timestamps).
            jump = expected is None or abs(actual - expected) > 2 * AAC_FRAME
            start = actual if jump else expected
            if samples:
                samples[-1].duration = max(start - samples[-1].dts, 1)
            samples.append(Sample(dts=start, data=packet.data, duration=AAC_FRAME))
            self._audio_next = start + AAC_FRAME
        return samples

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- reading ---------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """A playlist can be served: it has a complete segment (every player can start)."""
        return any(s.complete for s in self.segments)

    @property
    def advance_part_limit(self) -> int:
        """How many parts past the newest a blocking reload may ask (RFC 8216bis)."""
        if self.part_target < 1:
            return math.floor(3 / self.part_target)
        return 3

    def too_far(self, msn: int, part: int | None) -> bool:
        """Is a blocking reload for (msn, part) beyond what the server may wait for?
        Beyond the newest complete segment + 2, or more parts past the newest part than
        the Advance Part Limit."""
        if not self.segments:
            return False
        last = self.segments[-1]
        newest_complete = last.msn if last.complete else last.msn - 1
        if msn > newest_complete + 2:
            return True
        if part is None:
            return False
        with_parts = [seg for seg in self.segments if seg.parts]
        if not with_parts:
            return part + 1 > self.advance_part_limit
        newest = with_parts[-1]
        if msn > newest.msn:
            ahead = part + 1  # at least: the rest of the newest segment comes first
        elif msn == newest.msn:
            ahead = part - (len(newest.parts) - 1)
        else:
            ahead = 0
        return ahead > self.advance_part_limit

    @property
    def reload_timeout(self) -> float:
        """How long a blocking reload may be held (three target durations)."""
        return 3.0 * (self.target_duration or MAX_SEGMENT_SECONDS)

    async def reload_status(self, msn: int, part: int | None) -> int:
        """A blocking playlist reload: 200 once (msn, part) is in the playlist, 400 when
        it is too far ahead to wait for, 503 when it did not come in time."""
        if self.too_far(msn, part):
            return 400
        if await self.wait(lambda: self.has(msn, part), self.reload_timeout):
            return 200
        return 503

    def has(self, msn: int, part: int | None) -> bool:
        """Does the playlist contain segment msn (complete), or its part `part`?"""
        for segment in self.segments:
            if segment.msn == msn:
                return segment.complete if part is None else len(segment.parts) > part
        return bool(self.segments) and self.segments[-1].msn > msn

    async def wait(self, predicate, timeout: float) -> bool:
        """Wait until predicate() holds (re-checked at each new part); False on timeout."""
        self.last_used = time.monotonic()
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._task is not None and self._task.done()):
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return True

    def part(self, msn: int, index: int) -> bytes | None:
        self.last_used = time.monotonic()
        for segment in self.segments:
            if segment.msn == msn and index < len(segment.parts):
                return segment.parts[index].data
        return None

    def segment(self, msn: int) -> bytes | None:
        self.last_used = time.monotonic()
        for segment in self.segments:
            if segment.msn == msn and segment.complete:
                return segment.data()
        return None

    def next_part(self) -> tuple[int, int] | None:
        """(msn, part index) of the part being cut now (the preload hint)."""
        if not self.segments:
            return None
        last = self.segments[-1]
        return (last.msn + 1, 0) if last.complete else (last.msn, len(last.parts))

    @property
    def memory_bytes(self) -> int:
        return sum(s.size for s in self.segments) + sum(len(i) for i in self.inits.values())

    def playlist(self, query: str = "") -> str:
        """The media playlist; `query` ("?token=...") is appended to every URI."""
        self.last_used = time.monotonic()
        target = self.target_duration or math.ceil(MAX_SEGMENT_SECONDS)
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:9",
            f"#EXT-X-TARGETDURATION:{target}",
            f"#EXT-X-PART-INF:PART-TARGET={self.part_target:.3f}",
            f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * self.part_target:.3f}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.segments[0].msn if self.segments else 0}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
        ]
        init_id = None
        with_parts = {s.msn for s in self.segments[-PART_SEGMENTS:]}
        for i, segment in enumerate(self.segments):
            if i and segment.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if segment.init_id != init_id:
                init_id = segment.init_id
                lines.append(f'#EXT-X-MAP:URI="init{init_id}.mp4{query}"')
            if segment.msn in with_parts:
                for n, part in enumerate(segment.parts):
                    lines.append(
                        f"#EXT-X-PART:DURATION={part.duration:.5f},"
                        f'URI="part{segment.msn}.{n}.m4s{query}"'
                        + (",INDEPENDENT=YES" if part.independent else "")
                    )
            if segment.complete:
                lines.append(f"#EXTINF:{segment.duration:.5f},")
                lines.append(f"seg{segment.msn}.m4s{query}")
        hint = self.next_part()
        if hint is not None:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part{hint[0]}.{hint[1]}.m4s{query}"')
        return "\n".join(lines) + "\n"


#: The source's measured bit rate is used once it published this long (seconds).
RATE_SECONDS = 5.0
#: CODECS of a rung whose SPS is not known yet (it encodes only while watched): High, 3.1.
RUNG_CODEC = "avc1.64001f"


def codecs_of(sps: bytes, audio: bool) -> str:
    """The CODECS attribute of a variant: avc1.PPCCLL from the SPS, mp4a.40.2 (AAC-LC)."""
    video = f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}" if len(sps) >= 4 else RUNG_CODEC
    return f"{video},mp4a.40.2" if audio else video


def _measured_bitrate(stream: Stream) -> int:
    """The publisher's mean bit rate since it started (audio included), 0 if unknown."""
    since = stream.publisher_since
    if not since or time.time() - since < RATE_SECONDS:
        return 0
    return int(8 * stream.bytes_in / (time.time() - since))


def multivariant_playlist(
    stream: Stream, rung_info: Callable[[str], StreamInfo | None], query: str = ""
) -> str | None:
    """The multivariant playlist of a stream and its ladder renditions (None before the
    stream's codec parameters are known; the source alone when it has no rungs).

    The source is the first variant (`index.m3u8`: its own media playlist); each rung is
    `../NAME~RUNG/index.m3u8`, the rendition's hub stream (airclass_media.ladder), whose
    StreamInfo `rung_info` gives when it exists. Every variant has BANDWIDTH (bit/s:
    the source's measured rate, a rung's encoder target, plus audio and container),
    RESOLUTION and CODECS (from the SPS; a rung not encoding yet gets RUNG_CODEC)."""
    info = stream.info
    if not info.sps:
        return None
    rungs = [r for r in info.renditions if r.get("width") and r.get("height") and r.get("name")]
    audio = bool(info.aac_config)
    overhead = 128_000 if audio else 32_000
    top = max((int(r.get("bitrate", 0)) for r in rungs), default=1_000_000)
    # Never below the top rung's: players rank variants by BANDWIDTH.
    source_rate = max(_measured_bitrate(stream), int(1.25 * top) + overhead)
    variants = [(source_rate, info.width, info.height, codecs_of(info.sps, audio), "index.m3u8")]
    for rung in rungs:
        own = rung_info(rung["name"])
        sps = own.sps if own is not None else b""
        variants.append(
            (
                int(rung.get("bitrate", 0)) + overhead,
                int(rung["width"]),
                int(rung["height"]),
                codecs_of(sps, audio),
                f"../{rung['name']}/index.m3u8",
            )
        )
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for bandwidth, width, height, codecs, uri in variants:
        lines.append(
            f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},RESOLUTION={width}x{height},CODECS="{codecs}"'
        )
        lines.append(uri + query)
    return "\n".join(lines) + "\n"


class HlsOrigin:
    """The HLS segmenters of a node, made on demand, and who watches them."""

    def __init__(self, part_target: float = 0.5) -> None:
        self.part_target = part_target
        self.segmenters: dict[str, HlsSegmenter] = {}
        self._viewers: dict[str, dict[str, float]] = {}
        self.requests = 0
        self._reaper: asyncio.Task | None = None

    async def start(self) -> None:
        self._reaper = asyncio.ensure_future(self._drop_idle())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for segmenter in list(self.segmenters.values()):
            await segmenter.close()
        self.segmenters.clear()

    def segmenter(self, stream: Stream) -> HlsSegmenter:
        """The stream's segmenter, started if it did not run."""
        self.requests += 1
        segmenter = self.segmenters.get(stream.name)
        if segmenter is None or segmenter.stream is not stream:
            segmenter = HlsSegmenter(stream, self.part_target)
            segmenter.start()
            self.segmenters[stream.name] = segmenter
        return segmenter

    def get(self, name: str) -> HlsSegmenter | None:
        self.requests += 1
        return self.segmenters.get(name)

    def seen(self, stream: str, client: str) -> None:
        """A playlist request from `client` (any stable key: user and address)."""
        clients = self._viewers.setdefault(stream, {})
        if len(clients) > 100_000:
            clients.clear()
        clients[client] = time.monotonic()

    def viewers_of(self, stream: str) -> int:
        horizon = time.monotonic() - VIEWER_WINDOW
        clients = self._viewers.get(stream, {})
        for client in [c for c, t in clients.items() if t < horizon]:
            del clients[client]
        return len(clients)

    def viewer_counts(self) -> dict[str, int]:
        return {name: self.viewers_of(name) for name in list(self._viewers)}

    async def _drop_idle(self) -> None:
        while True:
            await asyncio.sleep(5)
            now = time.monotonic()
            for name, segmenter in list(self.segmenters.items()):
                if now - segmenter.last_used > IDLE_SECONDS:
                    del self.segmenters[name]
                    await segmenter.close()
                    log.info("hls %s: no client for %.0f s, stopped", name, IDLE_SECONDS)
            for name in [n for n, c in self._viewers.items() if not self.viewers_of(n)]:
                del self._viewers[name]
