"""Cost of the rendition ladder per source stream, and the event-loop lag it causes.

    .venv/bin/python scripts/bench_ladder.py SOURCE.flv [--realtime]

SOURCE: an FLV file with H.264 (e.g. 720p30 2.5 Mbit/s with B-frames, made by ffmpeg
-bf 3). For each case (decode alone, each rung alone, the whole ladder) it decodes and
encodes the whole file as fast as it can and prints CPU seconds per media second
(= cores at real time) from getrusage (every thread of the process: PyAV, x264).
With --realtime the whole ladder runs in its encoder thread paced at 1x while an
asyncio loop measures its own lag (p50/p99/max of a 5 ms timer's lateness).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
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
    thread = _EncoderThread("bench", loop, got.extend)
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
        thread.put(p)
    while thread.backlog():  # noqa: ASYNC110 - a thread's queue, no event to await
        await asyncio.sleep(0.01)
    media = (packets[-1].pts - base) / 1e6
    done.set()
    await probing
    thread.stop()
    lags.sort()
    return {
        "cores": round((cpu() - c0) / media, 3),
        "packets_out": len(got),
        "lag_p50_ms": round(statistics.median(lags) * 1000, 2),
        "lag_p99_ms": round(lags[int(len(lags) * 0.99)] * 1000, 2),
        "lag_max_ms": round(lags[-1] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--realtime", action="store_true")
    args = parser.parse_args()
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
