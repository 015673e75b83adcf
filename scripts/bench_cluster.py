#!/usr/bin/env python
"""Benchmark the main -> sub relay: hop latency, WHEP first-frame time, relay CPU.

Starts redis-server, a main and one sub node (real processes on 127.0.0.1) and an ffmpeg
publisher on the main, then measures in one run:
- relay hop: main received -> sub received, from the wall-clock stamp in each frame;
- WHEP first-frame time of aiortc viewers on the main (standalone path) vs on the sub;
- CPU of the relay per stream: main and sub process CPU with a relay and no viewers,
  minus the same processes before any relay existed (read from /proc/<pid>/stat).
Prints one JSON object per line.

    .venv/bin/python scripts/bench_cluster.py [--size 1280x720] [--window 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airclass_media.ice import restrict_host_addresses  # noqa: E402
from tests.support import (  # noqa: E402
    TEST_HOST,
    NodeProcess,
    RedisServer,
    ffmpeg_publish,
    http_json,
    stop_process,
    wait_for,
)
from tests.whep_client import WhepPlayer  # noqa: E402

SECRET = "bench-cluster-secret-0123456789abcdef"
STREAM = "bench"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def cpu_window(nodes: dict[str, NodeProcess], seconds: float) -> dict[str, float]:
    """Percent of one core used by each node over the window."""
    before = {name: cpu_seconds(n.proc.pid) for name, n in nodes.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    return {
        name: 100 * (cpu_seconds(n.proc.pid) - before[name]) / elapsed for name, n in nodes.items()
    }


def relay_status(sub: NodeProcess) -> dict:
    return http_json("GET", f"{sub.url}/cluster/relays")[1]["pulling"][0]


async def first_frame(whep_url: str, token: str) -> float:
    player = WhepPlayer(whep_url, token)
    try:
        await player.start()
        stats = await player.wait_frames(video=1, timeout=20)
        return stats.first_frame_delay
    finally:
        await player.close()


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


async def run(args: argparse.Namespace, tmp: Path) -> None:
    restrict_host_addresses([TEST_HOST])
    env = {"AIRCLASS_CLUSTER_SECRET": SECRET}
    redis = RedisServer(tmp).start()
    main = sub = publisher = None
    try:
        main = NodeProcess(tmp, "--role", "main", "--redis-url", redis.url, env=env, name="main")
        main.start()
        sub = NodeProcess(
            tmp, "--role", "sub", "--main-url", main.url, "--redis-url", redis.url,
            env=env, name="sub",
        ).start()  # fmt: skip
        nodes = {"main": main, "sub": sub}
        teacher = main.token(STREAM, user_type="teacher", action="publish")["token"]
        publisher = ffmpeg_publish(
            main.rtmp_url(STREAM, teacher), seconds=3600, size=args.size, rate=args.fps
        )
        wait_for(
            lambda: http_json("GET", f"{main.url}/api/streams/{STREAM}")[1].get("width"),
            20,
            "stream live",
        )
        await asyncio.sleep(2)  # let the encoder reach its steady rate
        baseline = await cpu_window(nodes, args.window)

        grant = main.token(STREAM, user_id="bench-viewer")
        assert grant["whep_url"].startswith(sub.url), grant
        main_whep = f"{main.url}/live/{STREAM}/whep"
        cold = await first_frame(grant["whep_url"], grant["token"])  # starts the relay
        on_main, on_sub = [], []
        for _ in range(args.repeat):
            on_main.append(await first_frame(main_whep, grant["token"]))
            on_sub.append(await first_frame(grant["whep_url"], grant["token"]))
        emit(
            metric="whep_first_frame_s",
            main_median=round(statistics.median(on_main), 3),
            sub_median=round(statistics.median(on_sub), 3),
            sub_cold_start=round(cold, 3),
            main=[round(x, 3) for x in on_main],
            sub=[round(x, 3) for x in on_sub],
        )

        # Relay with no viewers (it lingers 30 s after the last one): its CPU alone.
        bytes_before = relay_status(sub)["bytes"]
        relayed = await cpu_window(nodes, args.window)
        status = relay_status(sub)
        emit(
            metric="relay_hop_ms",
            p50=status["hop_p50_ms"],
            p95=status["hop_p95_ms"],
            packets=status["packets"],
            note="main received -> sub received, wall clock, same host",
        )
        emit(
            metric="relay_cpu_core_pct",
            stream=f"{args.size}@{args.fps}",
            sub_relay=round(relayed["sub"] - baseline["sub"], 2),
            main_relay=round(relayed["main"] - baseline["main"], 2),
            sub_total=round(relayed["sub"], 2),
            main_total=round(relayed["main"], 2),
            sub_idle=round(baseline["sub"], 2),
            main_without_relay=round(baseline["main"], 2),
            relayed_mbps=round((status["bytes"] - bytes_before) * 8 / 1e6 / args.window, 2),
            window_s=args.window,
        )
    finally:
        stop_process(publisher)
        for node in (sub, main):
            if node is not None:
                node.stop()
        redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--window", type=float, default=10.0, help="CPU window (s)")
    parser.add_argument("--repeat", type=int, default=5, help="first-frame samples per node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        asyncio.run(run(args, Path(tmp)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
