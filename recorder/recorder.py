"""One recording: a worker thread fed by a bounded queue muxes segments and screenshots.

The event loop only calls `feed` (never blocks: a full queue drops packets until the next
keyframe) and `request_stop`. Everything slow - PyAV muxing, keyframe decodes, JPEG
encodes, the final remux, metadata writes - happens on the recording's own thread.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from airclass_media.packets import MediaPacket

from . import metadata
from .finalize import build_mp4_isolated
from .screenshots import Screenshotter
from .segments import AudioParams, SegmentWriter, VideoParams, video_params
from .settings import RecorderSettings

log = logging.getLogger(__name__)

#: Worker queue bound: ~20 s of 30 fps video with AAC audio.
QUEUE_MAX = 1500

#: (AudioSpecificConfig, sample rate, channels) of the stream when the packet was fed.
AudioInfo = tuple[bytes, int, int]


class Recording:
    """Records one stream into ``directory`` until stopped."""

    def __init__(
        self,
        doc: dict,
        directory: Path,
        settings: RecorderSettings,
        *,
        start_us: int | None,
        on_done: Callable[[Recording], None] | None = None,
    ) -> None:
        self.id: str = doc["id"]
        self.stream: str = doc["stream"]
        self.directory = directory
        self.settings = settings
        self.on_done = on_done
        self._doc = doc
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[MediaPacket, AudioInfo] | None] = queue.Queue(QUEUE_MAX)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rec-{self.id}", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.done: asyncio.Future[dict] | None = None
        # Loop-thread state.
        self._resyncing = False
        self.dropped = 0
        # Worker-thread state.
        self._start_us = start_us
        self._segment: SegmentWriter | None = None
        self._roll_pending = False
        self._shots = Screenshotter(directory, settings.screenshot_interval)
        self._end_us: int | None = None
        self._segment_us = int(settings.segment_seconds * 1_000_000)
        self._fragment_us = int(settings.fragment_seconds * 1_000_000)
        self.mux_seconds = 0.0
        self.finalize_seconds = 0.0

    # -- event loop side ------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.done = self._loop.create_future()
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            metadata.write(self.directory, self._doc)
        self._thread.start()

    def feed(self, packet: MediaPacket, audio: AudioInfo) -> None:
        """Hand a packet to the worker; never blocks."""
        if self._resyncing:
            if not (packet.kind == "video" and packet.keyframe):
                self.dropped += 1
                return
            self._resyncing = False
        try:
            self._queue.put_nowait((packet, audio))
        except queue.Full:
            self._resyncing = True
            self.dropped += 1
            log.warning("recording %s: writer behind, dropping until next keyframe", self.id)

    def request_stop(self, reason: str) -> None:
        with self._lock:
            if self._doc["status"] == metadata.Status.RECORDING:
                metadata.set_status(self._doc, metadata.Status.STOPPING)
                self._doc["stop_reason"] = reason
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the worker sees the event when the queue drains

    def note_reconnect(self) -> None:
        with self._lock:
            self._doc["reconnects"] += 1

    def snapshot(self) -> dict:
        """A copy of the metadata with live figures (duration, size so far)."""
        with self._lock:
            doc = copy.deepcopy(self._doc)
            segment = self._segment
        if segment is not None and doc["segments"]:
            doc["segments"][-1]["size"] = segment.size()
            doc["segments"][-1]["duration"] = round(segment.duration_us / 1e6, 3)
        doc["size"] = (
            sum(s.get("size", 0) for s in doc["segments"])
            + sum(s.get("size", 0) for s in doc["screenshots"])
            + (doc.get("mp4_size") or 0)
        )
        doc["dropped_packets"] = self.dropped
        end_us, start_us = self._end_us, self._start_us
        recording = doc["status"] == metadata.Status.RECORDING
        if recording and end_us is not None and start_us is not None:
            doc["duration"] = round(max(0, end_us - start_us) / 1e6, 3)
        return doc

    # -- worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=1.0)
                except queue.Empty:
                    if self._stop.is_set():
                        break
                    continue
                if item is None:
                    if self._queue.empty():
                        break
                    continue
                started = time.perf_counter()
                try:
                    self._handle(*item)
                except Exception as exc:
                    log.exception("recording %s: writing failed", self.id)
                    with self._lock:
                        self._doc["error"] = f"write failed: {exc}"
                        self._doc["stop_reason"] = self._doc["stop_reason"] or "error"
                    break
                self.mux_seconds += time.perf_counter() - started
            self._close_segment()
            self._finalize()
        except Exception as exc:
            log.exception("recording %s failed", self.id)
            with self._lock:
                if self._doc["status"] in metadata.ACTIVE_STATUSES:
                    metadata.set_status(self._doc, metadata.Status.FAILED)
                self._doc["error"] = str(exc)
        finally:
            self._stop.set()
            snapshot = self.snapshot()
            if self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._finished, snapshot)
                except RuntimeError:
                    pass  # loop closed (process exiting)

    def _finished(self, snapshot: dict) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(snapshot)
        if self.on_done is not None:
            self.on_done(self)

    def _handle(self, packet: MediaPacket, audio: AudioInfo) -> None:
        if packet.kind == "video":
            if packet.keyframe:
                self._on_keyframe(packet, audio)
            if self._segment is not None:
                self._segment.write(packet)
                self._end_us = max(self._end_us or 0, self._segment.end_us)
        elif packet.kind == "aac":
            segment = self._segment
            if segment is None or packet.pts < segment.base_us:
                return
            config = audio[0]
            if segment.audio is None or config != segment.audio.config:
                if config:
                    self._roll_pending = True  # audio appeared or changed: new segment
                return
            segment.write(packet)

    def _on_keyframe(self, packet: MediaPacket, audio: AudioInfo) -> None:
        if self._start_us is None:
            self._start_us = packet.dts
        segment = self._segment
        params = video_params(packet.data)
        if params is None and segment is None:
            return  # cannot start a file without SPS/PPS
        config, rate, channels = audio
        new_audio = AudioParams(config, rate, channels) if config and rate else None
        if (
            segment is None
            or self._roll_pending
            or (params is not None and params != segment.video)
            or (new_audio is not None and new_audio != segment.audio)
            or packet.dts - segment.base_us >= self._segment_us
        ):
            if new_audio is None and segment is not None:
                new_audio = segment.audio
            self._roll(packet.dts, params or segment.video, new_audio)
        t = (packet.pts - self._start_us) / 1_000_000
        if self._shots.due(t):
            shot = self._shots.capture(packet.data, t, time.time())
            if shot is not None:
                with self._lock:
                    self._doc["screenshots"].append(shot)
                self._save()

    def _roll(self, base_us: int, video: VideoParams, audio: AudioParams | None) -> None:
        self._close_segment()
        self._roll_pending = False
        with self._lock:
            index = len(self._doc["segments"])
            name = f"seg-{index:05d}.mp4"
            entry = {
                "file": name,
                "index": index,
                "start_us": base_us - self._start_us,
                "start": round((base_us - self._start_us) / 1e6, 3),
                "duration": 0.0,
                "size": 0,
                "complete": False,
                "width": video.width,
                "height": video.height,
                "audio": audio is not None,
            }
            self._doc["segments"].append(entry)
            self._doc["start_us"] = self._start_us
            if self._doc["video"] is None:
                self._doc["video"] = {
                    "codec": "h264",
                    "profile": video.profile,
                    "width": video.width,
                    "height": video.height,
                    "sps": video.sps.hex(),
                }
            if self._doc["audio"] is None and audio is not None:
                self._doc["audio"] = {
                    "codec": "aac",
                    "sample_rate": audio.sample_rate,
                    "channels": audio.channels,
                    "config": audio.config.hex(),
                }
        # Entry first, then the file: after a crash every file on disk is listed.
        self._save()
        self._segment = SegmentWriter(
            self.directory / name, video, audio, base_us, fragment_us=self._fragment_us
        )
        log.info(
            "recording %s: segment %s (%dx%d, audio %s)",
            self.id,
            name,
            video.width,
            video.height,
            "yes" if audio else "no",
        )

    def _close_segment(self) -> None:
        segment = self._segment
        if segment is None:
            return
        self._segment = None
        segment.close()
        with self._lock:
            entry = self._doc["segments"][-1]
            entry["duration"] = round(segment.duration_us / 1e6, 3)
            entry["size"] = segment.size()
            entry["complete"] = True
            entry["video_packets"] = segment.video_packets
            entry["audio_packets"] = segment.audio_packets
        self._save()

    def _finalize(self) -> None:
        with self._lock:
            metadata.set_status(self._doc, metadata.Status.FINALIZING)
            self._doc["ended_at"] = time.time()
            if self._end_us is not None and self._start_us is not None:
                self._doc["duration"] = round(max(0, self._end_us - self._start_us) / 1e6, 3)
            segments = list(self._doc["segments"])
        self._save()
        started = time.perf_counter()
        if not segments:
            with self._lock:
                metadata.set_status(self._doc, metadata.Status.FAILED)
                self._doc["error"] = self._doc["error"] or "no video was received"
            self._save()
            return
        try:
            result = build_mp4_isolated(self.directory, segments, metadata.FINAL_FILE)
        except Exception as exc:
            log.exception("recording %s: building the MP4 failed", self.id)
            with self._lock:
                metadata.set_status(self._doc, metadata.Status.FAILED)
                self._doc["error"] = f"final MP4: {exc}"
            self._save()
            return
        self.finalize_seconds = time.perf_counter() - started
        with self._lock:
            self._doc["mp4"] = metadata.FINAL_FILE
            self._doc["mp4_size"] = result["size"]
            self._doc["duration"] = result["duration"]
            metadata.set_status(self._doc, metadata.Status.COMPLETE)
            metadata.drop_segments(self.directory, self._doc)
        self._save()
        log.info(
            "recording %s complete: %.1f s, %d segments, %d screenshots, mux %.2f s CPU-ish, "
            "screenshots %.2f s, final MP4 %.2f s",
            self.id,
            result["duration"],
            len(segments),
            len(self._doc["screenshots"]),
            self.mux_seconds,
            self._shots.seconds_spent,
            self.finalize_seconds,
        )

    def _save(self) -> None:
        doc = self.snapshot()
        try:
            metadata.write(self.directory, doc)
        except OSError as exc:
            log.error("recording %s: cannot write metadata: %s", self.id, exc)
