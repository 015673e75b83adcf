#!/usr/bin/env python3
"""Media benchmark: one node, one publisher, N WebRTC viewers; prints one JSON line per N.

    .venv/bin/python scripts/bench_media.py [--viewers 1 10 50 100] [--seconds 15]

The publisher (airclass_media.testsource, its own process) writes the wall-clock time of
capture into every picture; a probe viewer decodes frames and reads it back, so
`latency_ms` is glass to glass: encode, RTMP, ingest, hub, RTP, jitter buffer, decode.
The other N-1 viewers receive and reassemble every frame but do not decode (this machine
cannot decode 100 x 720p); they load the server exactly like browsers do. Viewers run in
worker processes, never in the node's process. Server CPU and memory are read from
/proc for the node process only; per-viewer figures subtract the 0-viewer baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LIGHT_PER_WORKER = 25


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def http(method: str, url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return json.loads(r.read())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


# -- worker process ----------------------------------------------------------------------
class CountingDecoder:
    """Stands in for aiortc's decoder in light viewers: counts whole frames, decodes none."""

    frames = 0

    def decode(self, encoded_frame) -> list:
        CountingDecoder.frames += 1
        return []


async def run_worker(args: argparse.Namespace) -> None:
    from airclass_media.ice import restrict_host_addresses

    restrict_host_addresses([HOST])
    if args.mode == "light":
        os.nice(10)  # load generators yield the CPU to the node and the probe
        import aiortc.rtcrtpreceiver as receiver

        original = receiver.get_decoder
        receiver.get_decoder = lambda codec: (
            CountingDecoder() if codec.name == "H264" else original(codec)
        )
    from airclass_media.testsource import read_stamp
    from airclass_media.whep_client import WhepPlayer

    players = []
    for i in range(args.count):
        grant = http("POST", f"{args.node}/api/token?stream=bench&user_id=bench-{args.mode}-{i}")
        player = WhepPlayer(grant["whep_url"], grant["token"], keep_last_frame=True)
        await player.start()
        players.append(player)
    if args.mode == "probe":
        await players[0].wait_frames(video=1, timeout=20)
    print(json.dumps({"ready": True}), flush=True)
    latencies: list[float] = []
    start = time.monotonic()
    decoded0 = sum(p.stats.video_frames for p in players)
    counted0 = CountingDecoder.frames
    if args.mode == "probe":
        last_seen = None
        while time.monotonic() - start < args.seconds:
            await asyncio.sleep(0.01)
            frame = players[0].stats.last_video_frame
            if frame is None or frame is last_seen:
                continue
            last_seen = frame
            stamp = read_stamp(frame.to_ndarray(format="gray"))
            if stamp:
                latencies.append(time.time() * 1000 - stamp / 1000)
    else:
        await asyncio.sleep(args.seconds)
    first = [p.stats.first_frame_delay for p in players if p.stats.first_frame_delay is not None]
    result = {
        "mode": args.mode,
        "viewers": len(players),
        "decoded_frames": sum(p.stats.video_frames for p in players) - decoded0,
        "counted_frames": CountingDecoder.frames - counted0,
        "first_frame_s": first,
        "latencies_ms": latencies,
        "seconds": round(time.monotonic() - start, 2),
    }
    for player in players:
        await player.close()
    print(json.dumps(result), flush=True)


# -- orchestrator ------------------------------------------------------------------------
def start_worker(node_url: str, mode: str, count: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--worker",
            "--node",
            node_url,
            "--mode",
            mode,
            "--count",
            str(count),
            "--seconds",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_ready(worker: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    line = worker.stdout.readline()
    if not line or time.monotonic() > deadline:
        raise RuntimeError("viewer worker failed to start")


def measure(node_pid: int, node_url: str, n: int, seconds: float, fps: int) -> dict:
    light = max(0, n - 1)
    workers = [
        start_worker(node_url, "light", min(LIGHT_PER_WORKER, light - i), seconds + 2)
        for i in range(0, light, LIGHT_PER_WORKER)
    ]
    for worker in workers:
        wait_ready(worker, 120)
    probe = start_worker(node_url, "probe", 1, seconds)
    wait_ready(probe, 60)
    cpu0, t0 = cpu_seconds(node_pid), time.monotonic()
    rss = rss_mb(node_pid)
    probe_result = json.loads(probe.stdout.readline())
    cores = (cpu_seconds(node_pid) - cpu0) / (time.monotonic() - t0)
    hub_delay = server_queue_delay(node_url)
    light_results = [json.loads(w.stdout.readline()) for w in workers]
    for proc in [probe, *workers]:
        proc.wait(60)
    expected = fps * probe_result["seconds"]
    light_frames = sum(r["counted_frames"] for r in light_results)
    light_expected = sum(fps * r["seconds"] * r["viewers"] for r in light_results)
    return {
        "viewers": n,
        "cores": round(cores, 3),
        "rss_mb": round(rss, 1),
        "latency_ms_p50": percentile(probe_result["latencies_ms"], 0.5),
        "latency_ms_p95": percentile(probe_result["latencies_ms"], 0.95),
        "latency_samples": len(probe_result["latencies_ms"]),
        "server_queue_delay_ms_p95": hub_delay,
        "first_frame_s": round(probe_result["first_frame_s"][0], 3)
        if probe_result["first_frame_s"]
        else None,
        "probe_frames": probe_result["decoded_frames"],
        "probe_frames_expected": int(expected),
        "light_frames_lost_pct": round(100 * (1 - light_frames / light_expected), 2)
        if light_expected
        else None,
    }


def server_queue_delay(node_url: str) -> float | None:
    """p95 of the node's own ingest -> WebRTC sender delay, from /metrics."""
    with urllib.request.urlopen(node_url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith('airclass_hub_queue_delay_quantile_seconds{quantile="0.95"}'):
                return round(float(line.split()[-1]) * 1000, 1)
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=2_000_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--node", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(run_worker(args))
        return

    http_port, rtmp_port = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="airclass-bench-")
    env = {**os.environ, "AIRCLASS_JWT_SECRET": "bench-" + os.urandom(16).hex()}
    node = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airclass_web.cli",
            "serve",
            "--dev",
            "--host",
            HOST,
            "--http-port",
            str(http_port),
            "--rtmp-port",
            str(rtmp_port),
            "--ice-host",
            HOST,
            "--data-dir",
            data,
            "--capacity",
            "1000",
            "--log-level",
            "WARNING",
        ],
        env=env,
        cwd=ROOT,
    )
    node_url = f"http://{HOST}:{http_port}"
    publisher = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http("GET", node_url + "/api/health")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        grant = http("POST", f"{node_url}/api/token?user_type=teacher&action=publish&stream=bench")
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airclass_media.testsource",
                grant["rtmp_url"],
                "--stamp-time",
                "--preset",
                "veryfast",
                "--size",
                args.size,
                "--fps",
                str(args.fps),
                "--bitrate",
                str(args.bitrate),
            ],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        while not http("GET", f"{node_url}/api/streams/bench").get("width"):
            time.sleep(0.1)
        cpu0, t0, rss0 = cpu_seconds(node.pid), time.monotonic(), rss_mb(node.pid)
        time.sleep(5)  # baseline window: publisher only, no viewer
        base_cores = (cpu_seconds(node.pid) - cpu0) / (time.monotonic() - t0)
        print(
            json.dumps(
                {
                    "viewers": 0,
                    "cores": round(base_cores, 3),
                    "rss_mb": round(rss0, 1),
                    "stream": f"{args.size}@{args.fps} {args.bitrate // 1000} kbps",
                }
            ),
            flush=True,
        )
        for n in args.viewers:
            row = measure(node.pid, node_url, n, args.seconds, args.fps)
            row["cores_per_viewer"] = round((row["cores"] - base_cores) / n, 4)
            row["mb_per_viewer"] = round((row["rss_mb"] - rss0) / n, 2)
            print(json.dumps(row), flush=True)
    finally:
        for proc in (publisher, node):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
