"""Glass-to-glass latency of the HLS fallback (a benchmark, not a test).

Starts a node (--hls-part-seconds, default 1), publishes bench_media's stamped 720p clip
over RTMP in real time, and follows the Low-Latency HLS stream as a player does: it joins
at the newest part, asks for each next part as soon as the playlist announces it (the node
answers a preload-hinted part when it is cut), decodes every frame and reads the stamp
the publisher wrote into the picture. Printed per frame: arrival = decoded at the client
minus sent by the publisher (same clock). A player shows frames after its hold-back
buffer on top; hls.js in low-latency mode keeps PART-HOLD-BACK (3 parts) behind the live
edge, which the "player" line adds as an estimate.

    .venv/bin/python scripts/bench_hls.py [--part 1.0] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_media  # noqa: E402  (the clip, the publisher and its send times)

HOST = "127.0.0.1"


async def follow(url: str, token: str, seconds: float, sends, part: float) -> list[float]:
    import aiohttp
    import av
    import numpy as np

    from airclass_media.testsource import STAMP_BLOCK, read_stamp

    q = f"?token={token}"
    latencies: list[float] = []
    async with aiohttp.ClientSession() as http:
        text = ""
        for _ in range(100):
            async with http.get(f"{url}/index.m3u8{q}") as resp:
                text = await resp.text()
            if resp.status == 200 and "#EXT-X-PART:" in text:
                break
            await asyncio.sleep(0.3)
        parts = re.findall(r'URI="part(\d+)\.(\d+)\.m4s', text)
        init_id = re.findall(r"init(\d+)\.mp4", text)[-1]
        async with http.get(f"{url}/init{init_id}.mp4{q}") as resp:
            init = await resp.read()
        # Start at the newest independent part, as a player joining the live edge does.
        independent = re.findall(r'URI="part(\d+)\.(\d+)\.m4s[^"]*",INDEPENDENT=YES', text)
        msn, idx = (int(v) for v in (independent or parts)[-1])
        decoder = None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            async with http.get(f"{url}/part{msn}.{idx}.m4s{q}") as resp:
                if resp.status == 404:
                    msn, idx = msn + 1, 0  # that segment ended: the next one's first part
                    async with http.get(f"{url}/part{msn}.{idx}.m4s{q}") as again:
                        if again.status != 200:
                            await asyncio.sleep(0.05)
                            continue
                        data = await again.read()
                else:
                    data = await resp.read()
            idx += 1
            with av.open(__import__("io").BytesIO(init + data)) as container:
                stream = container.streams.video[0]
                if decoder is None:
                    decoder = av.CodecContext.create("h264", "r")
                    decoder.extradata = stream.codec_context.extradata
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    for frame in decoder.decode(packet):
                        now = time.time()
                        luma = frame.to_ndarray(format="gray")
                        stamp = read_stamp(np.ascontiguousarray(luma[:STAMP_BLOCK]))
                        if stamp is None or stamp >> 32 != bench_media.STAMP_TAG:
                            continue
                        sent = sends.last_sent(stamp & 0xFFFFFFFF, now)
                        if sent is not None:
                            latencies.append(now - sent)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=float, default=1.0, help="LL-HLS part seconds")
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    clip = bench_media.make_clip(bench_media.clip_path("1280x720", 30, 2000, 20), "1280x720",
                                 30, 2000, 20)  # fmt: skip
    http_port, rtmp_port = bench_media.free_port(HOST), bench_media.free_port(HOST)
    data = tempfile.mkdtemp(prefix="bench-hls-")
    env = {**__import__("os").environ, "AIRCLASS_JWT_SECRET": "bench-" + "x" * 40}
    node = subprocess.Popen(
        [sys.executable, "-m", "airclass_web.cli", "serve", "--dev", "--host", HOST,
         "--http-port", str(http_port), "--rtmp-port", str(rtmp_port), "--workers", "1",
         "--data-dir", data, "--hls-part-seconds", str(args.part), "--log-level", "WARNING"],
        env=env, cwd=ROOT,
    )  # fmt: skip
    base = f"http://{HOST}:{http_port}"
    publisher = None
    try:
        for _ in range(100):
            try:
                bench_media.http("GET", base + "/api/health")
                break
            except OSError:
                time.sleep(0.2)
        teacher = bench_media.http(
            "POST", f"{base}/api/token?user_type=teacher&action=publish&stream=bench"
        )
        publisher = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "bench_media.py"), "--publish",
             f"rtmp://{HOST}:{rtmp_port}/live/bench?token={teacher['token']}", str(clip)],
            stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        sends = bench_media.SendTimes()
        bench_media.Lines(publisher.stdout, sends.on_line)
        viewer = bench_media.http("POST", f"{base}/api/token?stream=bench")
        latencies = asyncio.run(
            follow(f"{base}/live/bench", viewer["token"], args.seconds, sends, args.part)
        )
    finally:
        for proc in (publisher, node):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    p50, p95 = (bench_media.percentile(latencies, q) for q in (0.5, 0.95))
    if p50 is None:
        raise SystemExit("no stamped frame decoded")
    hold = 3 * args.part
    print(f"HLS parts {args.part:.2f} s, {len(latencies)} frames")
    print(f"arrival (decoded at the client): p50 {p50:.3f} s, p95 {p95:.3f} s")
    print(f"player estimate (+ hold-back beyond the newest part, {hold - args.part:.1f} s): "
          f"p50 {p50 + hold - args.part:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
