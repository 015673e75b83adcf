"""Recording's web face beside recorder.RecordingManager: its app key, the signed links
of VOD pages and files, the recorder's settings and metrics from the node's config."""

from __future__ import annotations

import hashlib
import hmac
import time

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from recorder.manager import RecordingManager
from recorder.settings import RecorderSettings

from ..node import Node

RECORDER = web.AppKey("recorder", RecordingManager)


def signature(node: Node, recording_id: str, expires: int) -> str:
    key = hashlib.sha256(b"airclass-vod:" + node.config.jwt_secret.encode()).digest()
    message = f"{recording_id}:{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def signed_query(node: Node, recording_id: str, ttl: float) -> str:
    expires = int(time.time() + ttl)
    return f"exp={expires}&sig={signature(node, recording_id, expires)}"


def with_urls(node: Node, doc: dict, ttl: float) -> dict:
    """The metadata with signed URLs of the MP4, segments and screenshots."""
    rid = doc["id"]
    q = signed_query(node, rid, ttl)
    base = f"/vod/{rid}"
    doc = dict(doc)
    doc["mp4_url"] = f"{base}/file.mp4?{q}" if doc.get("mp4") else None
    doc["page_url"] = f"{base}?{q}"
    doc["segments"] = [
        s if s.get("removed") else {**s, "url": f"{base}/segments/{s['file']}?{q}"}
        for s in doc["segments"]
    ]
    doc["screenshots"] = [{**s, "url": f"{base}/shots/{s['file']}?{q}"} for s in doc["screenshots"]]
    return doc


def settings_of(node: Node) -> RecorderSettings:
    c = node.config
    return RecorderSettings(
        root=c.data_dir / "recordings",
        segment_seconds=c.record_segment_seconds,
        screenshot_interval=c.screenshot_interval,
        retention_days=c.retention_days,
        min_free_disk_mb=c.min_free_disk_mb,
        auto_record=tuple(c.auto_record),
        offline_grace=c.record_offline_grace,
    )


def metrics(manager: RecordingManager) -> list:
    stats = manager.stats()
    gauges = (
        ("airclass_recordings_active", "Recordings running", stats["active"]),
        ("airclass_recordings_finishing", "Recordings writing their MP4", stats["finishing"]),
        ("airclass_recording_disk_free_bytes", "Free disk", stats["disk_free_bytes"]),
    )
    counters = (
        ("airclass_recordings_started", "Recordings started", stats["started_total"]),
        ("airclass_recordings_failed", "Recordings that failed", stats["failed_total"]),
        (
            "airclass_recording_packets_dropped",
            "Packets a recording writer was too slow for",
            stats["dropped_packets_total"],
        ),
    )
    families: list = []
    for name, text, value in gauges:
        family = GaugeMetricFamily(name, text)
        family.add_metric([], value)
        families.append(family)
    for name, text, value in counters:
        family = CounterMetricFamily(name, text)
        family.add_metric([], value)
        families.append(family)
    return families
