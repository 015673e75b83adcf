"""Retention (delete recordings past their age) and the free-disk guard."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import metadata

log = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class DiskStatus:
    total: int
    used: int
    free: int

    @property
    def free_mb(self) -> float:
        return self.free / (1024 * 1024)


def disk_status(path: Path) -> DiskStatus:
    """Usage of the file system holding path (the nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return DiskStatus(usage.total, usage.used, usage.free)


def low_on_disk(path: Path, min_free_mb: int) -> DiskStatus | None:
    """The disk status when free space is under the threshold, else None."""
    status = disk_status(path)
    return status if min_free_mb > 0 and status.free_mb < min_free_mb else None


def expired(doc: dict, retention_days: float, now: float | None = None) -> bool:
    """Is this finished recording older than the retention period?"""
    if retention_days <= 0 or doc.get("status") in metadata.ACTIVE_STATUSES:
        return False
    started = doc.get("started_at")
    if not isinstance(started, (int, float)):
        return False
    return (now or time.time()) - started > retention_days * DAY


def remove(directory: Path) -> None:
    """Delete a recording directory (metadata first, so a half-deleted one is not listed)."""
    (directory / metadata.META_FILE).unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)


def sweep(root: Path, retention_days: float, skip: set[str]) -> list[str]:
    """Delete expired recordings under root (except ids in skip); their ids."""
    removed = []
    now = time.time()
    for doc in metadata.scan(root):
        if doc["id"] in skip or not expired(doc, retention_days, now):
            continue
        directory = root / doc["id"]
        remove(directory)
        removed.append(doc["id"])
        age_days = (now - doc["started_at"]) / DAY
        log.info("retention: deleted recording %s (%.1f days old)", doc["id"], age_days)
    return removed
