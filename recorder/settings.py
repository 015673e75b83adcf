"""Recorder settings (filled by the web layer from the node configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RecorderSettings:
    #: Directory holding one sub-directory per recording.
    root: Path
    segment_seconds: float = 60.0
    #: Seconds between screenshots; 0 disables them.
    screenshot_interval: float = 10.0
    #: Longest time a fragment holds when keyframes are rarer (bounds crash loss).
    fragment_seconds: float = 2.0
    #: Recordings older than this are deleted; 0 keeps them forever.
    retention_days: float = 7.0
    #: Refuse to start, and stop running recordings, below this much free disk.
    min_free_disk_mb: int = 1024
    #: Streams recorded as soon as they go live ("*" for every stream).
    auto_record: tuple[str, ...] = ()
    #: A recording whose stream stays offline this long is stopped and finalized.
    offline_grace: float = 120.0
    #: Seconds between disk checks while recording.
    disk_check_seconds: float = 5.0
    #: Seconds between retention sweeps (one also runs at start-up).
    retention_check_seconds: float = 3600.0

    def auto_records(self, stream: str) -> bool:
        return "*" in self.auto_record or stream in self.auto_record
