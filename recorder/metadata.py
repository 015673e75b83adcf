"""Recording metadata: one JSON document per recording, beside its files.

The JSON file is the source of truth for what is on disk; the node's store keeps a copy
for other services. Layout of a recording directory::

    <root>/<recording id>/recording.json   metadata (this module)
                          seg-00000.mp4    fragmented MP4 segments
                          recording.mp4    single MP4 (moov first), written on stop
                          shots/*.jpg      screenshots, named by recording time in ms
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import time
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

META_FILE = "recording.json"
FINAL_FILE = "recording.mp4"
RECORDING_ID = re.compile(r"^[A-Za-z0-9_-]{1,120}\Z")  # \Z: "$" accepts a trailing newline
SEGMENT_FILE = re.compile(r"^seg-\d{5}\.mp4\Z")
SHOT_FILE = re.compile(r"^\d{9}\.jpg\Z")


class Status(StrEnum):
    """A recording's status, as stored in its metadata."""

    RECORDING = "recording"
    STOPPING = "stopping"
    FINALIZING = "finalizing"
    COMPLETE = "complete"
    FAILED = "failed"


#: recording -> stopping -> finalizing -> complete, or failed from any active status. A
#: crash leaves recording/stopping/finalizing; recovery at start-up finishes them, so an
#: active status may also go straight to complete.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.RECORDING: frozenset(
        {Status.STOPPING, Status.FINALIZING, Status.COMPLETE, Status.FAILED}
    ),
    Status.STOPPING: frozenset({Status.FINALIZING, Status.COMPLETE, Status.FAILED}),
    Status.FINALIZING: frozenset({Status.COMPLETE, Status.FAILED}),
    Status.COMPLETE: frozenset(),
    Status.FAILED: frozenset(),
}
ACTIVE_STATUSES = (Status.RECORDING, Status.STOPPING, Status.FINALIZING)


def set_status(doc: dict, status: Status) -> None:
    """Move the recording to `status` (ValueError for a transition the table forbids)."""
    current = Status(doc["status"])
    if status not in TRANSITIONS[current]:
        raise ValueError(f"recording {doc.get('id')}: {current} cannot become {status}")
    doc["status"] = status.value


def new_recording_id(stream: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now or time.time()))
    return f"{stream}-{stamp}-{secrets.token_hex(3)}"


def new_document(
    recording_id: str,
    stream: str,
    session_id: str,
    *,
    node_id: str,
    reason: str,
    segment_seconds: float,
    screenshot_interval: float,
    part: int = 1,
    continues: str | None = None,
) -> dict:
    """A new recording's metadata. `part` > 1 with `continues` (the previous part's id):
    the class went on after its origin node died, recorded on another node."""
    now = time.time()
    return {
        "id": recording_id,
        "stream": stream,
        "session_id": session_id,
        "part": part,
        "continues": continues,
        "node_id": node_id,
        "status": Status.RECORDING.value,
        "reason": reason,
        "started_at": now,
        "ended_at": None,
        "duration": 0.0,
        "size": 0,
        "segment_seconds": segment_seconds,
        "screenshot_interval": screenshot_interval,
        "video": None,
        "audio": None,
        "segments": [],
        "screenshots": [],
        "mp4": None,
        "mp4_size": 0,
        "stop_reason": None,
        "error": None,
        "reconnects": 0,
        "dropped_packets": 0,
        "recovered": False,
    }


def read(directory: Path) -> dict | None:
    """The recording's metadata, None when missing or unreadable."""
    try:
        doc = json.loads((directory / META_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("unreadable recording metadata in %s: %s", directory, exc)
        return None
    return doc if isinstance(doc, dict) and doc.get("id") else None


def write(directory: Path, doc: dict) -> None:
    """Replace the metadata file atomically (never a half-written JSON after a crash)."""
    tmp = directory / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, directory / META_FILE)


def scan(root: Path) -> list[dict]:
    """Metadata of every recording under root, newest first."""
    docs = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.is_dir() and RECORDING_ID.match(entry.name):
            doc = read(entry)
            if doc is not None:
                docs.append(doc)
    docs.sort(key=lambda d: d.get("started_at") or 0, reverse=True)
    return docs


def directory_size(directory: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def drop_segments(directory: Path, doc: dict) -> None:
    """Delete the segment files once the final MP4 holds them (one copy on disk, not
    two); their entries stay in the metadata, marked ``removed``."""
    for entry in doc.get("segments", []):
        with contextlib.suppress(FileNotFoundError):
            (directory / entry["file"]).unlink()
        entry["removed"] = True
        entry["size"] = 0
