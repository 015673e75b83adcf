"""Media metrics: of one egress (in-process or inside a worker), and summed over workers."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    SummaryMetricFamily,
)

from airclass_media.webrtc import LatencyStats, WebRtcEgress

QUANTILES = (0.5, 0.95, 0.99)
#: Buckets (bit/s) of the viewers' bandwidth estimates (airclass_media.estimate).
ESTIMATE_BUCKETS = (150e3, 300e3, 500e3, 800e3, 1.2e6, 2e6, 3e6, 5e6, 10e6)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


#: Receiver-report figures summed up over viewers: (report key, metric, unit scale).
REPORT_FIGURES = (
    ("fraction_lost", "airclass_webrtc_viewer_loss_ratio", 1.0),
    ("jitter_ms", "airclass_webrtc_viewer_jitter_seconds", 0.001),
    ("rtt_ms", "airclass_webrtc_viewer_rtt_seconds", 0.001),
)


def _report_summary(reports: list[dict]) -> dict:
    """Sum, count and max of each figure over the viewers that reported it."""
    out = {}
    for key, _, scale in REPORT_FIGURES:
        values = [r[key] * scale for r in reports if key in r]
        out[key] = {"sum": sum(values), "count": len(values), "max": max(values, default=0.0)}
    return out


def _report_families(snapshots: list[dict]) -> list:
    """Mean and worst of the viewers' RTCP receiver reports (video), over every worker."""
    families = []
    for key, name, _ in REPORT_FIGURES:
        family = GaugeMetricFamily(
            name, f"Viewers' RTCP receiver reports, video ({key}): mean and max", labels=["stat"]
        )
        parts = [s["receiver_reports"][key] for s in snapshots if "receiver_reports" in s]
        count = sum(p["count"] for p in parts)
        family.add_metric(["mean"], sum(p["sum"] for p in parts) / count if count else 0.0)
        family.add_metric(["max"], max((p["max"] for p in parts), default=0.0))
        families.append(family)
    return families


def _stage(stats: LatencyStats) -> dict:
    return {"buckets": list(stats.bucket_counts), "sum": stats.sum, "count": stats.count}


def egress_snapshot(egress: WebRtcEgress, feeds: dict[str, LatencyStats] | None = None) -> dict:
    """The egress's counters as plain JSON (a worker sends this to the node every second).

    `stages` holds per-stream latency histograms of the media path: "feed" (the node
    received the packet -> this worker received it, local relay) and "wire" (received
    here -> its RTP sent to every viewer of this process)."""
    delay = egress.queue_delay
    stages = {"wire": {name: _stage(s) for name, s in egress.wire_delay.items()}}
    if feeds:
        stages["feed"] = {name: _stage(s) for name, s in feeds.items()}
    return {
        "viewers": egress.viewer_count,
        "sessions_opened": egress.sessions_opened,
        "keyframe_replays": egress.keyframe_replays,
        "nacks": egress.nacks,
        "stages": stages,
        "receiver_reports": _report_summary(egress.receiver_reports()),
        "estimates": egress.estimates(),
        "rung_switches": egress.adaptation.rung_switches,
        "crowd_starts": egress.adaptation.crowd_starts,
        "ice_restarts": egress.ice_restarts,
        "path_moves": egress.path_moves,
        "silences": egress.silences,
        "padding_probes": dict(egress.adaptation.padding_probes),
        "queue_delay_count": delay.count,
        "queue_delay_sum": delay.sum,
        "queue_delay": {str(q): delay.percentile(q) for q in QUANTILES},
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat.rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def _families(snapshots: Iterable[dict]) -> list:
    """The node-wide media families, from one or several egress snapshots."""
    snapshots = list(snapshots)
    viewers = GaugeMetricFamily("airclass_webrtc_viewers", "WebRTC viewer sessions")
    viewers.add_metric([], sum(s["viewers"] for s in snapshots))
    opened = CounterMetricFamily("airclass_webrtc_sessions_opened", "WHEP sessions opened")
    opened.add_metric([], sum(s["sessions_opened"] for s in snapshots))
    replays = CounterMetricFamily(
        "airclass_webrtc_keyframe_replays",
        "Cached GOPs replayed to viewers that lost the picture (PLI/FIR)",
    )
    replays.add_metric([], sum(s["keyframe_replays"] for s in snapshots))
    delay = SummaryMetricFamily(
        "airclass_hub_queue_delay_seconds",
        "Ingest to hand-over to the WebRTC sender (recent packets)",
    )
    delay.add_metric(
        [],
        count_value=sum(s["queue_delay_count"] for s in snapshots),
        sum_value=sum(s.get("queue_delay_sum", 0.0) for s in snapshots),
    )
    quantiles = GaugeMetricFamily(
        "airclass_hub_queue_delay_quantile_seconds",
        "Quantiles of ingest to sender hand-over delay (recent packets; worst worker)",
        labels=["quantile"],
    )
    for q in QUANTILES:
        worst = max((s["queue_delay"][str(q)] for s in snapshots), default=0.0)
        quantiles.add_metric([str(q)], worst)
    nacks = CounterMetricFamily(
        "airclass_webrtc_nacks", "Packets viewers reported lost (NACK), answered from history"
    )
    nacks.add_metric([], sum(s.get("nacks", 0) for s in snapshots))
    switches = CounterMetricFamily(
        "airclass_webrtc_rung_switches", "Viewers moved to another rung or to audio only"
    )
    switches.add_metric([], sum(s.get("rung_switches", 0) for s in snapshots))
    crowd = CounterMetricFamily(
        "airclass_webrtc_crowd_starts",
        "Viewers that joined with a crowd (a class pressing play) and started on the lowest rung",
    )
    crowd.add_metric([], sum(s.get("crowd_starts", 0) for s in snapshots))
    restarts = CounterMetricFamily(
        "airclass_webrtc_ice_restarts", "ICE restarts of viewer sessions (PATCH, RFC 9725)"
    )
    restarts.add_metric([], sum(s.get("ice_restarts", 0) for s in snapshots))
    moves = CounterMetricFamily(
        "airclass_webrtc_path_moves",
        "Viewer RTP streams moved to a new ICE pair (after a restart or a NAT rebinding)",
    )
    moves.add_metric([], sum(s.get("path_moves", 0) for s in snapshots))
    silences = CounterMetricFamily(
        "airclass_webrtc_silent_viewers",
        "Viewers whose media was held because nothing was heard from them (a closed tab)",
    )
    silences.add_metric([], sum(s.get("silences", 0) for s in snapshots))
    probes = CounterMetricFamily(
        "airclass_webrtc_padding_probes",
        "Padding probes of a viewer's link before a switch up, by result",
        labels=["result"],
    )
    for result in ("passed", "failed"):
        total = sum(s.get("padding_probes", {}).get(result, 0) for s in snapshots)
        probes.add_metric([result], total)
    return [
        viewers,
        opened,
        replays,
        delay,
        quantiles,
        nacks,
        switches,
        crowd,
        probes,
        restarts,
        moves,
        silences,
        _stage_family(snapshots),
        *_report_families(snapshots),
        _estimate_family(snapshots),
    ]


def _estimate_family(snapshots: list[dict]) -> HistogramMetricFamily:
    """The viewers' current bandwidth estimates (REMB + loss), over every worker."""
    family = HistogramMetricFamily(
        "airclass_webrtc_viewer_estimate_bits_per_second",
        "Each viewer's current bandwidth estimate (REMB and receiver-report loss)",
    )
    values = [v for s in snapshots for v in s.get("estimates", [])]
    counts = [sum(1 for v in values if v <= bound) for bound in ESTIMATE_BUCKETS]
    buckets = [(str(int(b)), c) for b, c in zip(ESTIMATE_BUCKETS, counts, strict=True)]
    family.add_metric([], [*buckets, ("+Inf", len(values))], sum_value=sum(values))
    return family


def _stage_family(snapshots: list[dict]) -> HistogramMetricFamily:
    """Per-stream, per-stage latency of the media path, summed over workers."""
    family = HistogramMetricFamily(
        "airclass_media_stage_latency_seconds",
        "Media path latency per stream and stage: feed = node received -> worker received "
        "(local relay), wire = received by the sending process -> RTP sent to its viewers",
        labels=["stream", "stage"],
    )
    totals: dict[tuple[str, str], dict] = {}
    for snapshot in snapshots:
        for stage, streams in snapshot.get("stages", {}).items():
            for stream, hist in streams.items():
                total = totals.setdefault(
                    (stream, stage), {"buckets": [0] * len(hist["buckets"]), "sum": 0.0}
                )
                total["buckets"] = [
                    a + b for a, b in zip(total["buckets"], hist["buckets"], strict=True)
                ]
                total["sum"] += hist["sum"]
    bounds = [*(str(b) for b in LatencyStats.BUCKETS), "+Inf"]
    for (stream, stage), total in sorted(totals.items()):
        cumulative = list(itertools.accumulate(total["buckets"]))
        family.add_metric(
            [stream, stage], list(zip(bounds, cumulative, strict=True)), sum_value=total["sum"]
        )
    return family


def egress_families(egress: WebRtcEgress) -> list:
    """Media families of the egress in this process (`--workers 1`)."""
    return _families([egress_snapshot(egress)])


def pool_families(workers: list[tuple[str, dict, float, int, bool]]) -> list:
    """Summed families plus per-worker ones, labelled `worker`.

    Each worker is (label, snapshot, cpu seconds, restarts, up). Counters of a worker
    that restarted continue from its predecessors' totals (the snapshot says so).
    """
    families = _families(snapshot for _, snapshot, _, _, _ in workers)
    per = {
        "viewers": GaugeMetricFamily(
            "airclass_worker_viewers", "Viewer sessions per media worker", labels=["worker"]
        ),
        "sessions_opened": CounterMetricFamily(
            "airclass_worker_sessions_opened", "WHEP sessions opened per worker", labels=["worker"]
        ),
        "keyframe_replays": CounterMetricFamily(
            "airclass_worker_keyframe_replays", "Keyframe replays per worker", labels=["worker"]
        ),
    }
    delay = GaugeMetricFamily(
        "airclass_worker_queue_delay_quantile_seconds",
        "Ingest to sender hand-over delay per worker (recent packets)",
        labels=["worker", "quantile"],
    )
    cpu = CounterMetricFamily(
        "airclass_worker_cpu_seconds",
        "CPU seconds (user + system) of the ingest process and of each media worker",
        labels=["worker"],
    )
    cpu.add_metric(["ingest"], process_cpu_seconds(os.getpid()))
    restarts = CounterMetricFamily(
        "airclass_worker_restarts", "Media worker restarts", labels=["worker"]
    )
    up = GaugeMetricFamily(
        "airclass_worker_up", "1 when the media worker serves", labels=["worker"]
    )
    for label, snapshot, cpu_seconds, restart_count, is_up in workers:
        for key, family in per.items():
            family.add_metric([label], snapshot[key])
        for q in QUANTILES:
            delay.add_metric([label, str(q)], snapshot["queue_delay"][str(q)])
        cpu.add_metric([label], cpu_seconds)
        restarts.add_metric([label], restart_count)
        up.add_metric([label], 1 if is_up else 0)
    return [*families, *per.values(), delay, cpu, restarts, up]
