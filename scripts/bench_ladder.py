"""Cost of the rendition ladder per source stream, and the event-loop lag it causes.

    .venv/bin/python scripts/bench_ladder.py SOURCE.flv [--realtime]
    .venv/bin/python scripts/bench_ladder.py --node [--seconds 15]

SOURCE: an FLV file with H.264 (e.g. 720p30 2.5 Mbit/s with B-frames, made by ffmpeg
-bf 3). For each case (decode alone, each rung alone, the whole ladder) it decodes and
encodes the whole file as fast as it can and prints CPU seconds per media second
(= cores at real time) from getrusage (every thread of the process: PyAV, x264).
With --realtime the whole ladder runs in its encoder thread paced at 1x while an
asyncio loop measures its own lag (p50/p99/max of a 5 ms timer's lateness); delay: a
source packet handed to the thread -> the rung packets with its pts back on the loop.

With --node it starts a real `airclass serve` (2 media workers) on 127.0.0.1, has ffmpeg
publish 720p30 2.5 Mbit/s with B-frames over RTMP, and for each rendition (then all)
reads it through the node's local relay socket as a media worker would, measuring the
CPU of the node's whole process tree from /proc (minus the same with nobody watching)
and the round trip of GET /api/health (event-loop delay included).
"""

# A benchmark, not node code: blocking process and /proc calls while nothing else runs.
# ruff: noqa: ASYNC220, ASYNC230, ASYNC240, SIM115

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airclass_media.ladder import LadderCodec, Rung, _EncoderThread, plan  # noqa: E402
from airclass_media.packets import MediaPacket  # noqa: E402


def read_packets(path: str) -> tuple[list[MediaPacket], int, int]:
    container = av.open(path)
    stream = container.streams.video[0]
    bsf = av.BitStreamFilterContext("h264_mp4toannexb", stream)
    tb = stream.time_base
    out = []
    for pkt in container.demux(stream):
        if pkt.size == 0:
            continue
        key = pkt.is_keyframe
        pts, dts = pkt.pts, pkt.dts
        for p in bsf.filter(pkt):
            us_pts, us_dts = int(pts * tb * 1_000_000), int(dts * tb * 1_000_000)
            out.append(MediaPacket("video", bytes(p), us_pts, us_dts, key))
    width, height = stream.codec_context.width, stream.codec_context.height
    container.close()
    return out, width, height


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def run_case(packets, renditions) -> tuple[float, float]:
    codec = LadderCodec()
    codec.set_renditions(renditions)
    c0, t0 = cpu(), time.perf_counter()
    for p in packets:
        codec.feed(p)
    media = (packets[-1].pts - packets[0].pts) / 1e6
    return (cpu() - c0) / media, (time.perf_counter() - t0) / media


async def realtime(packets, renditions) -> dict:
    loop = asyncio.get_running_loop()
    got = []
    put_at: dict[int, float] = {}
    delays: list[float] = []

    def deliver(made) -> None:
        now = time.perf_counter()
        got.extend(made)
        delays.extend(now - put_at[p.pts] for _name, p in made if p.pts in put_at)

    thread = _EncoderThread("bench", loop, deliver)
    thread.put(renditions)
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - t - 0.005)

    probing = asyncio.ensure_future(probe())
    c0 = cpu()
    start = time.perf_counter()
    base = packets[0].dts
    for p in packets:
        due = start + (p.dts - base) / 1e6
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        put_at[p.pts] = time.perf_counter()
        thread.put(p)
    while thread.backlog():  # noqa: ASYNC110 - a thread's queue, no event to await
        await asyncio.sleep(0.01)
    media = (packets[-1].pts - base) / 1e6
    done.set()
    await probing
    thread.stop()
    lags.sort()
    delays.sort()
    return {
        "delay_p50_ms": round(statistics.median(delays) * 1000, 1),
        "delay_p95_ms": round(delays[int(len(delays) * 0.95)] * 1000, 1),
        "cores": round((cpu() - c0) / media, 3),
        "packets_out": len(got),
        "lag_p50_ms": round(statistics.median(lags) * 1000, 2),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 2),
        "lag_max_ms": round(lags[-1] * 1000, 2),
    }


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def node_bench(seconds: float) -> None:
    import aiohttp

    from relay import framing

    http_port, rtmp_port = free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix="bench-ladder-"))
    env = {**os.environ, "AIRCLASS_JWT_SECRET": "bench-" + "x" * 40, "AIRCLASS_LADDER_GRACE": "1"}
    node = subprocess.Popen(
        [sys.executable, "-m", "airclass_web.cli", "serve", "--dev", "--host", "127.0.0.1",
         "--http-port", str(http_port), "--rtmp-port", str(rtmp_port), "--workers", "2",
         "--data-dir", str(data)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(data / "node.log", "wb"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    ffmpeg = None
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(base + "/api/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            query = "user_type=teacher&action=publish&stream=bench"
            async with http.post(f"{base}/api/token?{query}") as r:
                token = (await r.json())["token"]
            ffmpeg = subprocess.Popen(
                ["ffmpeg", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i",
                 "testsrc2=size=1280x720:rate=30", "-c:v", "libx264", "-preset", "veryfast",
                 "-bf", "3", "-g", "60", "-b:v", "2500k", "-maxrate", "2500k", "-bufsize",
                 "5000k", "-pix_fmt", "yuv420p", "-f", "flv",
                 f"rtmp://127.0.0.1:{rtmp_port}/live/bench?token={token}"],
            )  # fmt: skip
            for _ in range(200):
                async with http.get(base + "/api/streams/bench") as r:
                    status = await r.json() if r.status == 200 else {}
                if status.get("webrtc_default"):
                    break
                await asyncio.sleep(0.1)
            names = [r["name"] for r in status["renditions"]]
            children = Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()
            for child in children:
                args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                if b"--node-socket" in args:
                    sock = args[args.index(b"--node-socket") + 1].decode()

            async def measure(label: str, watch: list[str]) -> float:
                readers = []
                for name in watch:
                    conn = aiohttp.UnixConnector(path=sock)
                    session = aiohttp.ClientSession(connector=conn)
                    ws = await session.ws_connect(f"http://n/cluster/relay/{name}?kinds=video")
                    readers.append((session, ws, asyncio.ensure_future(drain(ws))))
                await asyncio.sleep(3)  # encoders start at the next source keyframe
                rtts = []
                c0, t0 = tree_cpu(node.pid), time.monotonic()
                while time.monotonic() - t0 < seconds:
                    started = time.perf_counter()
                    async with http.get(base + "/api/health") as r:
                        await r.read()
                    rtts.append(time.perf_counter() - started)
                    await asyncio.sleep(0.05)
                cores = (tree_cpu(node.pid) - c0) / (time.monotonic() - t0)
                for session, ws, task in readers:
                    task.cancel()
                    await ws.close()
                    await session.close()
                rtts.sort()
                p99 = rtts[int(len(rtts) * 0.99)] * 1000
                print(f"{label:>14}: {cores:.3f} cores (node tree), /api/health p99 {p99:.1f} ms")
                await asyncio.sleep(2)  # grace 1 s: the encoders stop
                return cores

            async def drain(ws) -> None:
                async for msg in ws:
                    framing.decode(msg.data)

            idle = await measure("nobody", [])
            for name in names:
                cores = await measure(name.split("~")[1], [name])
                print(f"{'':>14}  {cores - idle:+.3f} cores over nobody watching")
            cores = await measure("whole ladder", names)
            print(f"{'':>14}  {cores - idle:+.3f} cores over nobody watching")
    finally:
        for proc in (ffmpeg, node):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", nargs="?")
    parser.add_argument("--realtime", action="store_true")
    parser.add_argument("--node", action="store_true")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    if args.node:
        asyncio.run(node_bench(args.seconds))
        return
    packets, width, height = read_packets(args.source)
    rungs = [Rung(540, 1_200_000), Rung(360, 500_000)]
    full = plan("s", width, height, rungs, True, 2_500_000)
    if args.realtime:
        print("ladder in its thread at 1x:", asyncio.run(realtime(packets, full)))
        return
    print(f"source {width}x{height}, {len(packets)} packets")
    cases = [("decode alone", [])] + [(r.rung, [r]) for r in full] + [("whole ladder", full)]
    for label, renditions in cases:
        cores, wall = run_case(packets, renditions)
        print(f"{label:>14}: {cores:.3f} cores ({wall:.3f} s wall per media s)")


if __name__ == "__main__":
    main()
