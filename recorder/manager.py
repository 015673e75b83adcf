"""Recording manager: starts/stops recordings on hub streams, auto-record, disk guard,
retention, crash recovery and the metadata copy in the store. Knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from airclass_media.hub import Stream, StreamHub, Subscription, SubscriptionClosed

from . import metadata, retention
from .finalize import build_mp4_isolated, probe_segment
from .recorder import Recording
from .settings import RecorderSettings

log = logging.getLogger(__name__)

#: Hub queue of the recorder: it only hands packets to its thread, so it keeps up easily.
SUBSCRIPTION_MAX_PACKETS = 1000
#: How long a stop request waits for the final MP4 before answering "finalizing".
STOP_WAIT_SECONDS = 5.0
#: How long a node shutdown waits for recordings to finish their MP4.
SHUTDOWN_WAIT_SECONDS = 10.0


class Handoff(Protocol):
    """Where a node announces the recording it makes of a stream, so that the node that
    takes the stream over when this one dies records the next part of the same class."""

    async def previous(self, stream: str) -> dict | None:
        """{node_id, recording_id, session_id, part} of a recording cut off, or None."""

    async def announce(self, doc: dict) -> None: ...

    async def withdraw(self, doc: dict) -> None: ...


class RecordingError(Exception):
    """A request the manager refuses. code: not_found, conflict, not_live, disk_low."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class RecordingManager:
    """All recordings of a node. Runs on the event loop; each recording has a thread."""

    def __init__(
        self,
        hub: StreamHub,
        settings: RecorderSettings,
        *,
        node_id: str = "",
        store: Any = None,
        handoff: Callable[[], Handoff | None] = lambda: None,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.root = settings.root
        self.node_id = node_id
        #: The node's store (airclass_web.store.Store) or None when there is none.
        self._store = store
        #: Returns where a stream's recording is announced in a cluster, so that the
        #: next origin continues it (airclass_web.cluster.recordings), or None.
        self._handoff = handoff
        self._active: dict[str, Recording] = {}  # by stream
        self._finishing: dict[str, Recording] = {}  # by id: stopped, MP4 being built
        self._pumps: dict[str, tuple[asyncio.Task, Subscription]] = {}  # by id
        self._starting: set[str] = set()
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self.recovered: list[str] = []
        self.started_total = 0
        self.failed_total = 0
        self._dropped_finished = 0

    # -- service ----------------------------------------------------------------------
    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn(self._recover_all(), "recorder-recover")
        self._spawn(self._retention_loop(), "recorder-retention")
        self._spawn(self._disk_guard_loop(), "recorder-disk-guard")
        log.info(
            "recorder: %s (segments %gs, screenshots every %gs, retention %g days, "
            "min free %d MB, auto-record %s)",
            self.root,
            self.settings.segment_seconds,
            self.settings.screenshot_interval,
            self.settings.retention_days,
            self.settings.min_free_disk_mb,
            ",".join(self.settings.auto_record) or "off",
        )

    async def stop(self) -> None:
        for handle in self._offline_timers.values():
            handle.cancel()
        self._offline_timers.clear()
        for rec in list(self._active.values()):
            self._end(rec, "shutdown")
        pending = [r.done for r in self._finishing.values() if r.done is not None]
        if pending:
            done, not_done = await asyncio.wait(pending, timeout=SHUTDOWN_WAIT_SECONDS)
            if not_done:
                log.warning("recorder: %d recordings finish at next start", len(not_done))
        saves = [t for t in self._tasks if t.get_name().startswith("recorder-store-")]
        if saves:
            await asyncio.wait(saves, timeout=5)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("recorder task %s crashed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    # -- start / stop -----------------------------------------------------------------
    async def start_recording(
        self,
        stream_name: str,
        session_id: str = "",
        reason: str = "manual",
        *,
        part: int = 1,
        continues: str | None = None,
    ) -> dict:
        """Start recording a live stream; its metadata. Raises RecordingError."""
        stream = self.hub.get(stream_name)
        current = self._active.get(stream_name)
        if current is not None or stream_name in self._starting:
            raise RecordingError(
                "conflict",
                f"stream {stream_name} is already being recorded",
                recording_id=current.id if current else None,
            )
        low = retention.low_on_disk(self.root, self.settings.min_free_disk_mb)
        if low is not None:
            log.error(
                "ALERT recorder: refusing to record %s: %.0f MB free, minimum %d MB",
                stream_name,
                low.free_mb,
                self.settings.min_free_disk_mb,
            )
            raise RecordingError(
                "disk_low",
                f"not enough free disk: {low.free_mb:.0f} MB free, "
                f"{self.settings.min_free_disk_mb} MB required",
                free_mb=round(low.free_mb),
            )
        if stream is None or not stream.live:
            raise RecordingError("not_live", f"stream {stream_name} is not live")
        self._starting.add(stream_name)
        try:
            if not session_id:
                session_id = await self._active_session_of(stream_name)
            if not stream.live:
                raise RecordingError("not_live", f"stream {stream_name} is not live")
            rec = self._begin(stream, session_id, reason, part, continues)
        finally:
            self._starting.discard(stream_name)
        doc = rec.snapshot()
        await self._store_save(doc)
        handoff = self._handoff()
        if handoff is not None:
            await handoff.announce(doc)
        return doc

    def _begin(
        self, stream: Stream, session_id: str, reason: str, part: int, continues: str | None
    ) -> Recording:
        rec_id = metadata.new_recording_id(stream.name)
        doc = metadata.new_document(
            rec_id,
            stream.name,
            session_id,
            node_id=self.node_id,
            reason=reason,
            segment_seconds=self.settings.segment_seconds,
            screenshot_interval=self.settings.screenshot_interval,
            part=part,
            continues=continues,
        )
        sub = stream.subscribe(
            ["video", "aac"],
            max_packets=SUBSCRIPTION_MAX_PACKETS,
            with_gop=True,
            label=f"recorder-{rec_id}",
        )
        # "Now" on the stream timeline: the newest cached frame. Recording starts at the
        # cached keyframe before it (so the file starts decodable); the MP4 trims to here.
        start_us = sub.backlog[-1].dts if sub.backlog else None
        rec = Recording(
            doc, self.root / rec_id, self.settings, start_us=start_us, on_done=self._done
        )
        try:
            rec.start()
        except Exception:
            sub.close()
            raise
        self._active[stream.name] = rec
        self.started_total += 1
        pump = self._spawn(self._pump(rec, sub), f"recorder-pump-{rec_id}")
        self._pumps[rec.id] = (pump, sub)
        log.info(
            "recording %s started (%s, session %s, part %d)",
            rec_id,
            reason,
            session_id or "-",
            part,
        )
        return rec

    async def _pump(self, rec: Recording, sub: Subscription) -> None:
        """Hub subscription -> recording thread."""
        stream = sub.stream
        backlog, sub.backlog = sub.backlog, []
        for packet in backlog:
            info = stream.info
            rec.feed(packet, (info.aac_config, info.audio_sample_rate, info.audio_channels))
        try:
            while True:
                packet = await sub.get()
                info = stream.info
                rec.feed(packet, (info.aac_config, info.audio_sample_rate, info.audio_channels))
        except SubscriptionClosed:
            pass

    async def stop_recording(
        self,
        *,
        stream: str | None = None,
        recording_id: str | None = None,
        reason: str = "manual",
        wait: float = STOP_WAIT_SECONDS,
    ) -> dict:
        """Stop a recording (by stream or id); its metadata once the MP4 is written, or
        with status "finalizing" when that takes longer than `wait` seconds."""
        rec = self._find_running(stream, recording_id)
        if rec is None:
            what = f"stream {stream}" if stream else f"recording {recording_id}"
            if recording_id and (self._finishing.get(recording_id) or await self.get(recording_id)):
                raise RecordingError("conflict", f"{what} is not running")
            raise RecordingError("not_found", f"no running recording for {what}")
        self._end(rec, reason)
        assert rec.done is not None
        try:
            return await asyncio.wait_for(asyncio.shield(rec.done), wait)
        except TimeoutError:
            return rec.snapshot()

    def _find_running(self, stream: str | None, recording_id: str | None) -> Recording | None:
        if stream:
            rec = self._active.get(stream)
            return rec if rec and (not recording_id or rec.id == recording_id) else None
        for rec in self._active.values():
            if rec.id == recording_id:
                return rec
        return None

    def _end(self, rec: Recording, reason: str) -> None:
        """Detach the recording from the hub and let its thread finish the files."""
        if self._active.get(rec.stream) is rec:
            del self._active[rec.stream]
        timer = self._offline_timers.pop(rec.stream, None)
        if timer is not None:
            timer.cancel()
        pump = self._pumps.pop(rec.id, None)
        if pump is not None:
            task, sub = pump
            sub.close()
            task.cancel()
        if not (rec.done is not None and rec.done.done()):
            self._finishing[rec.id] = rec
        rec.request_stop(reason)
        log.info("recording %s stopping (%s)", rec.id, reason)
        handoff = self._handoff()
        if handoff is not None and reason != "shutdown":  # cut off: the next origin goes on
            self._spawn(handoff.withdraw(rec.snapshot()), f"recorder-withdraw-{rec.id}")

    def _done(self, rec: Recording) -> None:
        """The recording's thread has finished (stopped, or failed on its own)."""
        if self._active.get(rec.stream) is rec:
            self._end(rec, "error")
        self._finishing.pop(rec.id, None)
        assert rec.done is not None
        doc = rec.done.result()
        self._dropped_finished += rec.dropped
        if doc.get("status") == metadata.Status.FAILED:
            self.failed_total += 1
        self._spawn(self._store_save(doc), f"recorder-store-{rec.id}")

    # -- hub events ---------------------------------------------------------------------
    def on_stream_event(self, event: str, stream: Stream) -> None:
        """Hub listener: auto-record on "live", stop after a long "offline"."""
        name = stream.name
        if (stream.publisher_id or "").startswith("relay-"):
            return  # relayed from the stream's origin node, which records it
        rec = self._active.get(name)
        if event == "live":
            timer = self._offline_timers.pop(name, None)
            if timer is not None:
                timer.cancel()
            if rec is not None:
                rec.note_reconnect()
                log.info("recording %s continues: %s is live again", rec.id, name)
            elif name not in self._starting and (
                self.settings.auto_records(name) or self._handoff() is not None
            ):
                self._spawn(self._auto_start(name), f"recorder-auto-{name}")
        elif event == "offline" and rec is not None:
            loop = asyncio.get_running_loop()
            grace = self.settings.offline_grace
            self._offline_timers[name] = loop.call_later(grace, self._offline_expired, name)
            log.info(
                "recording %s: %s offline; stopping in %g s unless it returns", rec.id, name, grace
            )

    async def _auto_start(self, name: str) -> None:
        """A stream went live here: continue its recording cut off on another node (the
        origin moved), or start one when the stream is auto-recorded."""
        handoff = self._handoff()
        previous = await handoff.previous(name) if handoff is not None else None
        try:
            if previous is not None:
                log.info(
                    "recording of %s continues from %s (node %s) as part %d",
                    name,
                    previous["recording_id"],
                    previous["node_id"],
                    int(previous["part"]) + 1,
                )
                await self.start_recording(
                    name,
                    str(previous["session_id"]),
                    reason="continued",
                    part=int(previous["part"]) + 1,
                    continues=str(previous["recording_id"]),
                )
            elif self.settings.auto_records(name):
                await self.start_recording(name, reason="auto")
        except RecordingError as exc:
            log.warning("recording of %s not started: %s", name, exc.message)

    def _offline_expired(self, name: str) -> None:
        self._offline_timers.pop(name, None)
        rec = self._active.get(name)
        if rec is not None:
            self._end(rec, "offline")

    # -- queries ------------------------------------------------------------------------
    def running(self) -> list[dict]:
        recs = [*self._active.values(), *self._finishing.values()]
        return [r.snapshot() for r in recs]

    def status(self) -> dict:
        s = self.settings
        return {
            "recordings": self.running(),
            "settings": {
                "segment_seconds": s.segment_seconds,
                "screenshot_interval": s.screenshot_interval,
                "retention_days": s.retention_days,
                "min_free_disk_mb": s.min_free_disk_mb,
                "auto_record": list(s.auto_record),
                "offline_grace": s.offline_grace,
            },
        }

    def stats(self) -> dict:
        """Counters for monitoring."""
        running = [*self._active.values(), *self._finishing.values()]
        return {
            "active": len(self._active),
            "finishing": len(self._finishing),
            "started_total": self.started_total,
            "failed_total": self.failed_total,
            "dropped_packets_total": self._dropped_finished + sum(r.dropped for r in running),
            "disk_free_bytes": retention.disk_status(self.root).free,
        }

    def _live_doc(self, recording_id: str) -> dict | None:
        for rec in [*self._active.values(), *self._finishing.values()]:
            if rec.id == recording_id:
                return rec.snapshot()
        return None

    async def list(self, stream: str | None = None) -> list[dict]:
        """Every recording on disk (running ones with live figures), newest first."""
        docs = await asyncio.to_thread(metadata.scan, self.root)
        docs = [self._live_doc(d["id"]) or d for d in docs]
        if stream:
            docs = [d for d in docs if d.get("stream") == stream]
        return docs

    async def get(self, recording_id: str) -> dict | None:
        if not metadata.RECORDING_ID.match(recording_id):
            return None
        live = self._live_doc(recording_id)
        if live is not None:
            return live
        return await asyncio.to_thread(metadata.read, self.root / recording_id)

    def directory(self, recording_id: str) -> Path | None:
        """The recording's directory when the id is well-formed and exists."""
        if not metadata.RECORDING_ID.match(recording_id):
            return None
        path = self.root / recording_id
        return path if path.is_dir() else None

    async def delete(self, recording_id: str) -> None:
        if self._live_doc(recording_id) is not None:
            raise RecordingError("conflict", "stop the recording before deleting it")
        directory = self.directory(recording_id)
        if directory is None:
            raise RecordingError("not_found", f"unknown recording {recording_id}")
        await asyncio.to_thread(retention.remove, directory)
        await self._store_delete(recording_id)
        log.info("recording %s deleted", recording_id)

    async def storage(self) -> dict:
        def measure() -> dict:
            docs = metadata.scan(self.root)
            used = sum(metadata.directory_size(self.root / d["id"]) for d in docs)
            return {"count": len(docs), "bytes": used}

        recs = await asyncio.to_thread(measure)
        disk = retention.disk_status(self.root)
        return {
            "path": str(self.root),
            "recordings": recs["count"],
            "recordings_bytes": recs["bytes"],
            "disk_total_bytes": disk.total,
            "disk_used_bytes": disk.used,
            "disk_free_bytes": disk.free,
            "min_free_disk_mb": self.settings.min_free_disk_mb,
            "low_disk": disk.free_mb < self.settings.min_free_disk_mb,
            "retention_days": self.settings.retention_days,
            "recording_now": len(self._active),
        }

    # -- background jobs ------------------------------------------------------------------
    async def _disk_guard_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.disk_check_seconds)
            if not self._active:
                continue
            low = retention.low_on_disk(self.root, self.settings.min_free_disk_mb)
            if low is None:
                continue
            log.error(
                "ALERT recorder: free disk %.0f MB under %d MB: stopping %d recordings",
                low.free_mb,
                self.settings.min_free_disk_mb,
                len(self._active),
            )
            for rec in list(self._active.values()):
                self._end(rec, "disk_low")

    async def _retention_loop(self) -> None:
        while True:
            await self.sweep()
            await asyncio.sleep(self.settings.retention_check_seconds)

    async def sweep(self) -> list[str]:
        """Delete recordings past retention (files and store copies); their ids."""
        if self.settings.retention_days <= 0:
            return []
        busy = {r.id for r in [*self._active.values(), *self._finishing.values()]}
        removed = await asyncio.to_thread(
            retention.sweep, self.root, self.settings.retention_days, busy
        )
        for rec_id in removed:
            await self._store_delete(rec_id)
        store = self._store
        if store is not None:
            # Store copies whose files are gone and which are past retention.
            with contextlib.suppress(Exception):
                for doc in await store.list_recordings(limit=10_000):
                    expired = retention.expired(doc, self.settings.retention_days)
                    if expired and self.directory(doc["id"]) is None:
                        await store.delete_recording(doc["id"])
                        removed.append(doc["id"])
        return removed

    async def _recover_all(self) -> None:
        """Finish recordings left unfinished by a crash: trim their last segment to its
        last complete fragment and build the single MP4."""
        docs = await asyncio.to_thread(metadata.scan, self.root)
        for doc in docs:
            if doc.get("status") not in metadata.ACTIVE_STATUSES:
                continue
            if self._live_doc(doc["id"]) is not None:
                continue
            log.warning("recording %s was interrupted (%s); recovering", doc["id"], doc["status"])
            fixed = await asyncio.to_thread(recover, self.root / doc["id"], doc)
            self.recovered.append(doc["id"])
            await self._store_save(fixed)

    # -- store ------------------------------------------------------------------------------
    async def _active_session_of(self, stream: str) -> str:
        store = self._store
        if store is None:
            return ""
        try:
            found = await store.find(
                "sessions",
                {"stream": stream, "status": "active"},
                order_by="started_at",
                descending=True,
                limit=1,
            )
        except Exception as exc:  # noqa: BLE001 - the session id is optional
            log.debug("no session lookup for %s: %s", stream, exc)
            return ""
        return str(found[0]["id"]) if found else ""

    async def _store_save(self, doc: dict) -> None:
        store = self._store
        if store is None:
            return
        try:
            await store.save_recording(doc)
        except Exception as exc:  # noqa: BLE001 - the JSON beside the files is authoritative
            log.warning("recording %s: store update failed: %s", doc.get("id"), exc)

    async def _store_delete(self, recording_id: str) -> None:
        store = self._store
        if store is None:
            return
        try:
            await store.delete_recording(recording_id)
        except Exception as exc:  # noqa: BLE001
            log.warning("recording %s: store delete failed: %s", recording_id, exc)


def recover(directory: Path, doc: dict) -> dict:
    """Make an interrupted recording's metadata match its files and build its MP4.

    Runs in a worker thread.
    """
    segments = []
    for entry in doc.get("segments", []):
        path = directory / entry["file"]
        probe = probe_segment(path) if path.exists() else None
        if probe is None:
            log.warning("recovery %s: %s holds no playable video", doc["id"], entry["file"])
            continue
        if not entry.get("complete"):
            entry["truncated"] = True
        entry.update(
            duration=round(probe.duration_us / 1e6, 3),
            size=path.stat().st_size,
            complete=True,
            video_packets=probe.video_packets,
            audio_packets=probe.audio_packets,
        )
        segments.append(entry)
    doc["segments"] = segments
    doc["recovered"] = True
    doc["stop_reason"] = doc.get("stop_reason") or "interrupted"
    if not doc.get("ended_at"):
        mtimes = [(directory / s["file"]).stat().st_mtime for s in segments]
        doc["ended_at"] = max(mtimes) if mtimes else doc.get("started_at")
    if segments:
        last = segments[-1]
        doc["duration"] = round(max(0.0, last["start_us"] / 1e6 + last["duration"]), 3)
    try:
        if not segments:
            raise ValueError("no playable segment")
        result = build_mp4_isolated(directory, segments, metadata.FINAL_FILE)
        doc.update(mp4=metadata.FINAL_FILE, mp4_size=result["size"], duration=result["duration"])
        metadata.set_status(doc, metadata.Status.COMPLETE)
        metadata.drop_segments(directory, doc)
    except Exception as exc:  # noqa: BLE001 - keep what is playable, report the rest
        log.error("recovery %s: final MP4 failed: %s", doc["id"], exc)
        if doc["status"] in metadata.ACTIVE_STATUSES:
            metadata.set_status(doc, metadata.Status.FAILED)
        doc["error"] = f"recovery: {exc}"
    doc["size"] = (
        sum(s.get("size", 0) for s in segments)
        + sum(s.get("size", 0) for s in doc.get("screenshots", []))
        + (doc.get("mp4_size") or 0)
    )
    metadata.write(directory, doc)
    log.info("recording %s recovered: %s, %.1f s", doc["id"], doc["status"], doc["duration"])
    return doc
