#!/usr/bin/env python3
"""Media benchmark: one node, a copied 720p30 clip over RTMP, N light viewers, one probe.

    bash scripts/in-netns.sh .venv/bin/python scripts/bench_media.py --viewers 0 50 100 200
    (add --json for one JSON document instead of the table; --workers N is passed to
    `airclass serve` when the node has that option; --link-kbps 3000 --link-loss 2 is
    the realistic mode: every viewer reports such a link with receiver reports, REMB
    and NACKs, so adaptation, pacing and retransmission are in the cost)

- The clip (1280x720@30, ~2 Mbps H.264 High, AAC; every picture carries its frame index
  as 64 black/white blocks) is encoded ONCE by Debian ffmpeg into .cache/bench/ and then
  copied packet by packet in real time by a small PyAV RTMP publisher (no encoder runs
  while measuring). The publisher records the wall time each video frame was written to
  the RTMP socket.
- N viewers come from scripts/loadgen.py (real WHEP + ICE + DTLS-SRTP, RTP counted from
  clear headers): loss %, frames per viewer per second.
- Node CPU is read from /proc for the node's WHOLE process tree (the `airclass serve`
  process and every descendant, e.g. worker processes; the publisher, the loadgen and the
  probe are not in it), over a window while only the N load viewers are connected.
  core per viewer = (cores(N) - cores(0)) / N.
- Then one probe viewer (aiortc, decodes every frame) joins: per frame, latency = decode
  time in the probe - send time in the publisher (same clock, same machine), matched by
  the frame index read back from the picture. It covers RTMP, ingest, hub, RTP, jitter
  buffer and decode; not the teacher's encoder or a screen. Frames sent before the probe
  joined (the cached GOP it starts from) are left out of the latency figures. First frame
  = WHEP POST to first decoded picture.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
STAMP_TAG = 0xA1C1A55  # high 32 bits of every stamp: tells a real stamp from noise
CACHE = ROOT / ".cache" / "bench"


# -- the clip -----------------------------------------------------------------------------
def clip_path(size: str, fps: int, kbps: int, seconds: int) -> Path:
    return CACHE / f"clip-{size}-{fps}fps-{kbps}k-{seconds}s-high.mp4"


def make_clip(path: Path, size: str, fps: int, kbps: int, seconds: int) -> Path:
    """Encode the stamped test clip once (PyAV draws the pictures, Debian ffmpeg encodes)."""
    import av

    from airclass_media.testsource import write_stamp

    if path.exists():
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise SystemExit("ffmpeg not installed: run scripts/install-system.sh")
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in size.split("x"))
    tmp = path.with_suffix(".part.mp4")
    # fmt: off
    cmd = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size, "-r", str(fps), "-i", "-",
        "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-tune", "zerolatency",
        "-pix_fmt", "yuv420p", "-g", str(2 * fps), "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
        "-bufsize", f"{kbps}k", "-c:a", "aac", "-b:a", "96k", "-ac", "2",
        "-movflags", "+faststart", "-shortest", str(tmp),
    ]
    # fmt: on
    print(f"bench: encoding the clip once into {path} ...", file=sys.stderr, flush=True)
    encoder = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    graph = av.filter.Graph()
    src = graph.add("testsrc2", f"size={size}:rate={fps}")
    fmt = graph.add("format", "yuv420p")
    sink = graph.add("buffersink")
    src.link_to(fmt)
    fmt.link_to(sink)
    graph.configure()
    for index in range(seconds * fps):
        planes = graph.pull().to_ndarray()
        write_stamp(planes[:height], (STAMP_TAG << 32) | index)
        encoder.stdin.write(planes.tobytes())
    encoder.stdin.close()
    if encoder.wait() != 0:
        raise SystemExit("ffmpeg failed to encode the clip")
    tmp.rename(path)
    return path


# -- publisher process: copy the clip over RTMP in real time ------------------------------
def run_publisher(url: str, clip: Path) -> None:
    """Loop the clip forever; print `index wall_time` for each video frame written."""
    import av

    with av.open(str(clip)) as probe:
        fps = float(probe.streams.video[0].average_rate)
    start = time.monotonic()
    offset = 0.0  # output time (s) at which the current pass of the clip starts
    with av.open(url, "w", format="flv", timeout=10) as out:
        streams = None
        lowest = 0.0  # earliest dts in the clip (AAC priming makes it negative)
        while True:
            end = offset
            with av.open(str(clip)) as src:
                if streams is None:
                    streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
                for packet in src.demux():
                    if packet.dts is None:
                        continue
                    in_tb = packet.time_base
                    lowest = min(lowest, float(packet.dts * in_tb))
                    at = offset + float(packet.dts * in_tb)
                    end = max(end, at + float((packet.duration or 0) * in_tb))
                    wait = start + at - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)  # real-time pacing of a copied clip
                    is_video = packet.stream.type == "video"
                    index = round(float(packet.pts * in_tb) * fps) if is_video else -1
                    shift = round(offset / in_tb)
                    packet.pts += shift
                    packet.dts += shift
                    packet.stream = streams[packet.stream.index]
                    packet.time_base = in_tb
                    out.mux(packet)
                    if is_video:
                        print(index, time.time(), flush=True)
            # The next pass starts where this one ended: timestamps keep rising.
            offset = end - lowest


# -- probe process: one decoding aiortc viewer --------------------------------------------
async def run_probe(node: str, stream: str, host: str, seconds: float) -> None:
    import numpy as np
    from aiortc import RTCConfiguration, RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError

    from airclass_media.ice import restrict_host_addresses
    from airclass_media.testsource import STAMP_BLOCK, read_stamp
    from tests.whep_client import WhepPlayer

    restrict_host_addresses([host])
    grant = http("POST", f"{node}/api/token?stream={stream}&user_id=bench-probe")
    seen: list[tuple[int, float]] = []
    first: list[float] = []

    class Probe(WhepPlayer):
        async def _consume(self, track) -> None:
            with contextlib.suppress(MediaStreamError):
                await self._frames(track)

        async def _frames(self, track) -> None:
            if track.kind != "video":
                while True:
                    await track.recv()
            while True:
                frame = await track.recv()
                now = time.time()
                if not first:
                    first.append(time.monotonic() - self.stats.started_at)
                plane = frame.planes[0]
                rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                stamp = read_stamp(rows[:STAMP_BLOCK, : plane.width])
                if stamp is not None and stamp >> 32 == STAMP_TAG:
                    seen.append((stamp & 0xFFFFFFFF, now))

    player = Probe(grant["whep_url"], grant["token"])
    # aiortc's default STUN server would be looked up first (a 5 s wait with no network).
    player.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    player.stats.started_at = time.monotonic()
    started_wall = time.time()
    await player.start()
    # The probe measures the passthrough path: it sends no REMB, so it is never moved to
    # a ladder rung (whose encoder would then run in the next CPU window).
    for transceiver in player.pc.getTransceivers():
        transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator = None
    await asyncio.sleep(seconds)  # the probe's measuring window
    await player.close()
    first_frame = first[0] if first else None
    print(json.dumps({"first_frame_s": first_frame, "started": started_wall, "frames": seen}))


# -- measuring ----------------------------------------------------------------------------
def http(method: str, url: str) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        return json.loads(r.read())


def process_tree(root: int) -> list[int]:
    """root and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_of(pid: int, with_children: bool = False) -> float:
    """utime + stime (+ reaped children's) of one process in seconds; 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_MB
    except OSError:
        return 0.0


def process_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    name = " ".join(w for w in words[1:5] if not w.startswith("/")) or " ".join(words[:1])
    return name[:60]


class TreeCpu:
    """CPU of a process tree over a window: every process in it at start or end."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.t0 = time.monotonic()
        self.start = {pid: cpu_of(pid, pid == root) for pid in process_tree(root)}

    def stop(self) -> dict:
        seconds = time.monotonic() - self.t0
        pids = process_tree(self.root)
        end = {pid: cpu_of(pid, pid == self.root) for pid in pids}
        per = {
            pid: (end.get(pid, 0.0) - self.start.get(pid, 0.0)) / seconds
            for pid in set(self.start) | set(end)
            if pid in end  # a process gone since start: its time went to the root's children
        }
        return {
            "cores": round(sum(per.values()), 3),
            "rss_mb": round(sum(rss_mb(pid) for pid in pids), 1),
            "processes": [
                {"pid": pid, "name": process_name(pid), "cores": round(c, 3)}
                for pid, c in sorted(per.items(), key=lambda kv: -kv[1])
            ],
        }


class Lines:
    """Reads a child's output lines in a thread (its pipe never fills)."""

    def __init__(self, stream, on_line) -> None:
        self.thread = threading.Thread(target=self._run, args=(stream, on_line), daemon=True)
        self.thread.start()

    @staticmethod
    def _run(stream, on_line) -> None:
        with contextlib.suppress(ValueError, OSError):  # the pipe closed as the bench ends
            for line in stream:
                on_line(line)


class SendTimes:
    """Wall times the publisher wrote each frame index (all loops of the clip)."""

    def __init__(self) -> None:
        self.times: dict[int, list[float]] = {}
        self.lock = threading.Lock()

    def on_line(self, line: str) -> None:
        index, at = line.split()
        with self.lock:
            self.times.setdefault(int(index), []).append(float(at))

    def last_sent(self, index: int, before: float) -> float | None:
        """When the publisher last sent this frame index, no later than `before`."""
        with self.lock:
            sent = [t for t in self.times.get(index, ()) if t <= before]
        return max(sent) if sent else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def run_loadgen(args: argparse.Namespace, node: str, n: int, seconds: float):
    """Start scripts/loadgen.py; return (process, event waiting for 'measuring', summary)."""
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "loadgen.py"),
        node,
        args.stream,
        "--viewers",
        str(n),
        "--seconds",
        str(seconds),
        "--ice-host",
        args.host,
        "--brief",
        # The load joins as one class: it starts on the lowest rung, and gets the source
        # once it said nothing of its rate for 5-9 s (or climbs by padding probes in
        # realistic mode); the workers' relay of the rung lingers 30 s, the rung's
        # encoder 15 s more: the window measures delivery once that is over.
        "--settle",
        str(args.settle),
    ]
    if args.link_kbps:
        # Realistic mode: every viewer reports a link of this rate and loss (RR, REMB,
        # NACKs), so adaptation and retransmission are part of what is measured.
        cmd += ["--link-kbps", str(args.link_kbps), "--link-loss", str(args.link_loss)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    measuring = threading.Event()
    stderr_tail: list[str] = []

    def on_err(line: str) -> None:
        stderr_tail.append(line)
        del stderr_tail[:-20]
        if '"measuring"' in line:
            measuring.set()

    Lines(proc.stderr, on_err)
    return proc, measuring, stderr_tail


def measure(args: argparse.Namespace, node_proc: subprocess.Popen, node: str, n: int, sends):
    window = args.seconds
    loadgen = None
    if n:
        # CPU window, then the probe's window, with margin: the loadgen outlives both.
        loadgen, measuring, tail = run_loadgen(args, node, n, 2 * window + 8)
        deadline = time.monotonic() + args.settle + 30 + n * 0.5
        while not measuring.wait(0.5):
            if loadgen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("loadgen did not connect:\n" + "".join(tail))
    ladder_before = ladder_metrics(node)
    cpu = TreeCpu(node_proc.pid)
    time.sleep(window)  # the node CPU measuring window
    tree = cpu.stop()
    ladder_after = ladder_metrics(node)
    probe = subprocess.run(
        [sys.executable, __file__, "--probe", node, "--host", args.host]
        + ["--stream", args.stream, "--seconds", str(window)],
        capture_output=True,
        text=True,
        timeout=window + 60,
    )
    if probe.returncode != 0:
        raise RuntimeError("probe failed:\n" + probe.stderr[-2000:])
    probe_result = json.loads(probe.stdout.strip().splitlines()[-1])
    latencies: list[float] = []
    stale = unknown = 0
    for index, at in probe_result["frames"]:
        sent = sends.last_sent(index, at)
        if sent is None:
            unknown += 1
        elif sent < probe_result["started"]:
            stale += 1  # sent before the probe joined: the cached GOP (or a replay of it)
        else:
            latencies.append((at - sent) * 1000)
    row = {
        "viewers": n,
        "node_cores": tree["cores"],
        "node_rss_mb": tree["rss_mb"],
        "node_processes": tree["processes"],
        "latency_ms_p50": percentile(latencies, 0.5),
        "latency_ms_p95": percentile(latencies, 0.95),
        "latency_samples": len(latencies),
        "probe_frames_sent_before_join": stale,
        "probe_frames_unmatched": unknown,
        "probe_fps": round(len(probe_result["frames"]) / window, 1),
        "first_frame_s": round(probe_result["first_frame_s"], 3)
        if probe_result["first_frame_s"] is not None
        else None,
        "server_queue_delay_ms_p95": server_queue_delay(node),
        # Rendition encoders are a cost per stream, not per viewer: those that ran in the
        # window (a class that had not finished climbing from its start on the lowest
        # rung) and the cores their threads used, left out of core/viewer.
        "ladder_encoders": max(ladder_before[0], ladder_after[0]),
        "ladder_cores": round((ladder_after[1] - ladder_before[1]) / window, 3),
    }
    if loadgen is not None:
        out, _ = loadgen.communicate(timeout=2 * window + 120)
        summary = json.loads(out.strip().splitlines()[-1])
        row.update(
            viewers_connected=summary["viewers_connected"],
            loss_pct_mean=(summary["loss_pct"] or {}).get("mean"),
            loss_pct_max=(summary["loss_pct"] or {}).get("max"),
            fps_per_viewer_mean=(summary["video_fps"] or {}).get("mean"),
            fps_per_viewer_p5=(summary["video_fps"] or {}).get("p5"),
            rtp_timestamps_per_s_mean=(summary["video_timestamps_per_s"] or {}).get("mean"),
            kbps_per_viewer_mean=(summary["kbps"] or {}).get("mean"),
            connect_s_p95=(summary["connect_s"] or {}).get("p95"),
            loadgen_cores=summary["loadgen_cores"],
            loadgen_errors=summary["errors"],
        )
    return row


def ladder_metrics(node: str) -> tuple[int, float]:
    """(rendition encoders running, CPU seconds of the ladder's threads) from /metrics."""
    running, cpu = 0, 0.0
    with urllib.request.urlopen(node + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("airclass_ladder_encoders{"):
                running += int(float(line.split()[-1]))
            elif line.startswith("airclass_ladder_cpu_seconds_total "):
                cpu = float(line.split()[-1])
    return running, cpu


def server_queue_delay(node: str) -> float | None:
    """p95 of the node's own ingest -> WebRTC sender delay, from /metrics (if exported)."""
    try:
        with urllib.request.urlopen(node + "/metrics", timeout=10) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith('airclass_hub_queue_delay_quantile_seconds{quantile="0.95"}'):
                    return round(float(line.split()[-1]) * 1000, 1)
    except OSError:
        pass
    return None


def free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_node(args: argparse.Namespace, data: str) -> tuple[subprocess.Popen, str]:
    http_port, rtmp_port = free_port(args.host), free_port(args.host)
    # fmt: off
    cmd = [
        sys.executable, "-m", "airclass_web.cli", "serve", "--dev",
        "--host", args.host, "--http-port", str(http_port), "--rtmp-port", str(rtmp_port),
        "--ice-host", args.host, "--data-dir", data, "--capacity", "1000",
        "--log-level", "WARNING",
    ]
    # fmt: on
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    env = {
        **os.environ,
        "AIRCLASS_JWT_SECRET": "bench-" + os.urandom(16).hex(),
        # Every load viewer comes from this one address: lift the per-address limits.
        "AIRCLASS_IP_RATE_LIMIT": "0",
        "AIRCLASS_MAX_VIEWERS_PER_IP": "0",
    }
    node = subprocess.Popen(cmd, env=env, cwd=ROOT)
    url = f"http://{args.host}:{http_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            http("GET", url + "/api/health")
            return node, url
        except OSError:
            if node.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("node did not start") from None
            time.sleep(0.1)  # polling the node's health until it answers


def table(rows: list[dict], base: float) -> str:
    head = (
        f"{'viewers':>7} {'node cores':>10} {'core/viewer':>11} {'loss %':>7} {'fps/viewer':>10} "
        f"{'lat p50/p95 ms':>15} {'first frame':>11} {'loadgen cores':>13}"
    )
    lines = [head]
    for r in rows:
        lat = f"{r['latency_ms_p50']}/{r['latency_ms_p95']}"
        lines.append(
            f"{r['viewers']:>7} {r['node_cores']:>10} {str(r.get('cores_per_viewer', '-')):>11} "
            f"{str(r.get('loss_pct_mean', '-')):>7} {str(r.get('fps_per_viewer_mean', '-')):>10} "
            f"{lat:>15} {str(r['first_frame_s']):>11} {str(r.get('loadgen_cores', '-')):>13}"
        )
        spread = ", ".join(f"[{p['pid']}] {p['name']}: {p['cores']}" for p in r["node_processes"])
        lines.append(f"{'':>7} node processes: {spread}")
        lines.append(
            f"{'':>7} rendition encoders running: {r['ladder_encoders']}, their threads"
            f" {r['ladder_cores']} cores (in node cores, not in core/viewer)"
        )
    lines.append(f"baseline cores(0) = {base}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, nargs="+", default=[0, 50, 100, 200])
    parser.add_argument("--seconds", type=float, default=15, help="each measuring window")
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds from the load's connection to its measuring window (class start over):"
        " 60, or 90 in realistic mode (the class climbs from the lowest rung by padding"
        " probes for ~30 s, then the rung's relay and encoder linger 45 s)",
    )
    parser.add_argument("--host", default=os.environ.get("AIRCLASS_TEST_HOST", "127.0.0.1"))
    parser.add_argument("--stream", default="bench")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--kbps", type=int, default=2000)
    parser.add_argument("--clip-seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, help="pass --workers N to airclass serve")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument(
        "--link-kbps",
        type=float,
        default=0,
        help="realistic mode: each viewer sends RR/REMB/NACKs of a link of this rate",
    )
    parser.add_argument("--link-loss", type=float, default=2.0, help="that link's loss (%%)")
    parser.add_argument("--publish", nargs=2, metavar=("URL", "CLIP"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="NODE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.settle is None:
        args.settle = 90 if args.link_kbps else 60
    if args.publish:
        run_publisher(args.publish[0], Path(args.publish[1]))
        return
    if args.probe:
        asyncio.run(run_probe(args.probe, args.stream, args.host, args.seconds))
        return

    clip = make_clip(
        clip_path(args.size, args.fps, args.kbps, args.clip_seconds),
        args.size,
        args.fps,
        args.kbps,
        args.clip_seconds,
    )
    viewers = sorted(set(args.viewers) | {0})
    data = tempfile.mkdtemp(prefix="airclass-bench-")
    node, url = start_node(args, data)
    publisher = None
    try:
        grant = http(
            "POST", f"{url}/api/token?user_type=teacher&action=publish&stream={args.stream}"
        )
        publisher = subprocess.Popen(
            [sys.executable, __file__, "--publish", grant["rtmp_url"], str(clip)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        sends = SendTimes()
        Lines(publisher.stdout, sends.on_line)
        deadline = time.monotonic() + 30
        while not http("GET", f"{url}/api/streams/{args.stream}").get("width"):
            if publisher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the stream did not go live")
            time.sleep(0.1)  # polling the stream status until it is live
        rows = []
        for n in viewers:
            row = measure(args, node, url, n, sends)
            rows.append(row)
            if not args.json:
                print(
                    json.dumps({k: v for k, v in row.items() if k != "node_processes"}),
                    file=sys.stderr,
                    flush=True,
                )
        base = rows[0]["node_cores"]
        for row in rows:
            if row["viewers"]:
                delivery = row["node_cores"] - row["ladder_cores"] - base
                row["cores_per_viewer"] = round(delivery / row["viewers"], 4)
                mb = (row["node_rss_mb"] - rows[0]["node_rss_mb"]) / row["viewers"]
                row["mb_per_viewer"] = round(mb, 2)
        stream = f"{args.size}@{args.fps} {args.kbps} kbps H.264 High + AAC (copied clip)"
        if args.json:
            print(json.dumps({"stream": stream, "baseline_cores": base, "rows": rows}, indent=1))
        else:
            print(stream)
            print(table(rows, base))
    finally:
        for proc in (publisher, node):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
