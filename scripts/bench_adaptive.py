#!/usr/bin/env python3
"""Adaptive delivery as a student sees it: Chromium behind a shaped link (a benchmark).

Starts a node on one end of a tc-shaped veth link (tests/netshape.py), an ffmpeg RTMP
publisher at 720p30 2.5 Mbit/s (`--bframes`: 3 B-frames and -g 120, as OBS sends), and
headless Chromium in the viewer namespace running a plain RTCPeerConnection WHEP client
(tests/chromium_viewer.py: no page code of ours). Chromium's own `inbound-rtp` getStats
are read every second; per phase it prints fps, freezes and frozen seconds, the inter-frame
delay's standard deviation, frame height (and its course), audio concealed %, NACK/PLI
counts and retransmitted bytes as a share of video bytes.

Scenarios (`--scenario`, repeatable; default all):
  bframes    unshaped, a source without B-frames, then one with (20 s each)
  1mbps      20 Mbit/s 10 s, 1 Mbit/s 30 s, 20 Mbit/s 20 s; time back to 720p
  400kbps    the same with 400 kbit/s
  loss       clean 10 s, 5 % random loss and 40 ms ± 40 ms delay (normal, in order)
             60 s, clean 10 s; the delay needs netem or `--emulated-link`
  joinstorm  60 viewers join within 1 s through one 50 Mbit/s link: 3 Chromium viewers,
             the rest scripts/loadgen.py (aiortc, counts RTP, reports a REMB of its
             share of the link); time to first frame
  lipsync    a source that flashes white and beeps at the same instant every 2 s: beep
             onset (AnalyserNode) minus flash display (requestVideoFrameCallback) in
             Chromium, unshaped and at 1 Mbit/s
  join1mbps  a viewer that joins on a 1 Mbit/s link (40 s), then unshaped (20 s)
  joinloss   a viewer that joins on the loss scenario's link (60 s), then clean (20 s)
  move       the viewers' address changes three times under their sockets (a NAT that
             rebinds, a phone's new network): how long the picture stands still for the
             student page (ICE restart, else a new session) and a plain WHEP client

Run as root; it re-executes itself in a private network namespace (scripts/in-netns.sh):

    .venv/bin/python scripts/bench_adaptive.py [--scenario 1mbps] [--json out.json]

Figures measured on this 2-core machine (shared with other work) are in
docs/adaptive-bench.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCENARIOS = (
    "bframes", "1mbps", "400kbps", "loss", "joinstorm", "lipsync", "join1mbps", "joinloss",
    "move",
)  # fmt: skip
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


#: Every 2 s the whole picture turns white for 0.1 s and a 1 kHz beep sounds, together.
FLASH = "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,2),0.1)'"
BEEP = "aevalsrc='0.8*sin(2*PI*1000*t)*lt(mod(t,2),0.1)':s=48000"


def publisher(
    url: str, seconds: float, bframes: bool, preset: str, flash: bool = False
) -> subprocess.Popen:
    """ffmpeg: testsrc2 720p30 + a tone (or flashes and beeps), H.264 2.5 Mbit/s + AAC
    over RTMP, in real time."""
    video = (
        ["-bf", "3", "-g", "120"] if bframes else ["-tune", "zerolatency", "-bf", "0", "-g", "60"]
    )
    picture = f"testsrc2=size=1280x720:rate=30:duration={seconds}"
    sound = f"sine=frequency=440:sample_rate=48000:duration={seconds}"
    if flash:
        picture, sound = f"{picture},{FLASH}", f"{BEEP}:d={seconds}"
    args = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", picture, "-f", "lavfi", "-i", sound,
        "-c:v", "libx264", "-preset", preset, *video, "-pix_fmt", "yuv420p",
        "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k",
        "-c:a", "aac", "-b:a", "96k", "-f", "flv", url,
    ]  # fmt: skip
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


@dataclass
class Phase:
    label: str
    seconds: float
    shape: object  # tests.netshape.Shape


class Bench:
    """One node on a shaped link, one Chromium in the viewer namespace."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        from tests.netshape import LinkNode, ShapedLink

        self.args = args
        self.tmp = tmp
        self.link = ShapedLink(emulated=args.emulated_link).open()
        self.node = LinkNode(self.link, tmp, check_log=False).start()
        self.publishers: list[subprocess.Popen] = []
        self.browser = None
        self._pw = None
        self.streams = 0

    async def start_browser(self) -> None:
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        exe = self.link.chromium_executable(self.tmp)
        self.browser = await self._pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)

    async def close(self) -> None:
        if self.browser is not None:
            await self.browser.close()
        if self._pw is not None:
            await self._pw.stop()
        for proc in self.publishers:
            proc.terminate()
            proc.wait(10)
        self.node.stop()
        self.link.close()
        problems = self.node.log_problems()
        if problems:
            print(f"!! node log shows {len(problems)} tracebacks, first:\n{problems[0]}")

    async def live_stream(self, bframes: bool, seconds: float, flash: bool = False) -> str:
        """A new stream published for `seconds`, live (and its ladder planned)."""
        from tests.support import async_http_json, async_wait_for

        for proc in self.publishers:
            proc.terminate()
        self.streams += 1
        name = f"bench{self.streams}"
        token = (await self.node.atoken(name, user_type="teacher", action="publish"))["token"]
        self.publishers.append(
            publisher(
                self.node.rtmp_url(name, token), seconds + 30, bframes, self.args.preset, flash
            )
        )

        async def live():
            status, body, _ = await async_http_json("GET", f"{self.node.url}/api/streams/{name}")
            return status == 200 and body.get("width") and body

        await async_wait_for(live, 30, f"{name} live")
        return name

    async def viewer_page(self, stream: str):
        from tests.chromium_viewer import open_viewer

        page = await self.browser.new_page()
        await page.goto(f"{self.node.url}/api/health")
        token = (await self.node.atoken(stream))["token"]
        await open_viewer(page, f"{self.node.url}/live/{stream}/whep", token)
        return page

    async def first_frame(self, page) -> None:
        from tests.chromium_viewer import read_stats
        from tests.support import async_wait_for

        async def decoding():
            return (await read_stats(page))[0].video.get("framesDecoded", 0) > 10

        await async_wait_for(decoding, 30, "Chromium decoding", interval=0.2)

    async def run_phases(self, page, phases: list[Phase]) -> list[tuple[str, list]]:
        """Sample every second through each phase; [(label, samples)]."""
        from tests.chromium_viewer import read_stats

        out = []
        for phase in phases:
            self.link.set(phase.shape)
            samples = [(await read_stats(page))[0]]
            end = samples[0].at + phase.seconds
            while time.monotonic() < end:
                await asyncio.sleep(min(1.0, max(end - time.monotonic(), 0.01)))
                samples.append((await read_stats(page))[0])
            out.append((phase.label, samples))
        return out


# -- reporting ---------------------------------------------------------------------------
HEADER = (
    "| phase | fps | freezes | frozen s | ifd sd ms | height | video kbit/s | audio concealed % "
    "| NACK | PLI | rtx % |\n|---|---|---|---|---|---|---|---|---|---|---|"
)


def row(label: str, a, b) -> str:
    from tests.chromium_viewer import window_figures

    f = window_figures(a, b)
    return (
        f"| {label} | {f['fps']:.1f} | {f['freezes']:.0f} | {f['frozen_s']:.1f} "
        f"| {f['ifd_sd_ms']:.0f} | {f['height']:.0f} | {f['video_kbps']:.0f} "
        f"| {f['concealed_pct']:.1f} | {f['nacks']:.0f} | {f['plis']:.0f} | {f['rtx_pct']:.1f} |"
    )


def heights(samples: list, every: int = 2) -> str:
    return " ".join(f"{s.video.get('frameHeight', 0):.0f}" for s in samples[::every])


def recovered(samples: list) -> float | None:
    """Seconds from the phase's start to the first second decoded at 720p and >= 25 fps."""
    for a, b in zip(samples, samples[1:], strict=False):
        frames = b.video.get("framesDecoded", 0) - a.video.get("framesDecoded", 0)
        if b.video.get("frameHeight", 0) >= 720 and frames / max(b.at - a.at, 1e-6) >= 25:
            return a.at - samples[0].at
    return None


def report_phases(title: str, phases: list[tuple[str, list]], settle: float = 10.0) -> str:
    lines = [f"### {title}", "", HEADER]
    for label, samples in phases:
        lines.append(row(label, samples[0], samples[-1]))
        if len(samples) > settle + 5:
            after = next(s for s in samples if s.at - samples[0].at >= settle)
            lines.append(row(f"{label}, after {settle:.0f} s", after, samples[-1]))
    lines.append("")
    start = phases[0][1][0].at
    for label, samples in phases:
        lines.append(f"- height every 2 s, {label}: {heights(samples)}")
    last_label, last = phases[-1]
    back = recovered(last)
    back_text = f"{back:.1f} s" if back is not None else "not within the phase"
    lines.append(
        f"- back to 720p at >= 25 fps after the link recovered ({last_label}): {back_text}"
    )
    lines.append("- (Chromium counts a freeze, and its seconds, when it ends)")
    lines.append(f"- ({time.monotonic() - start:.0f} s measured)")
    return "\n".join(lines) + "\n"


# -- scenarios ---------------------------------------------------------------------------
async def scenario_bframes(bench: Bench) -> str:
    from tests.netshape import Shape

    lines = ["### bframes (unshaped, 20 s after the first frames)", "", HEADER]
    for bframes in (False, True):
        stream = await bench.live_stream(bframes, 60)
        page = await bench.viewer_page(stream)
        await bench.first_frame(page)
        phases = await bench.run_phases(page, [Phase("x", 20, Shape())])
        samples = phases[0][1]
        label = "3 B-frames, -g 120" if bframes else "no B-frames"
        lines.append(row(label, samples[0], samples[-1]))
        await page.close()
    return "\n".join(lines) + "\n"


async def scenario_rate(bench: Bench, kbit: float, title: str) -> str:
    from tests.netshape import Shape

    weak_s = bench.args.weak_seconds
    stream = await bench.live_stream(bench.args.bframes, 70 + weak_s)
    page = await bench.viewer_page(stream)
    await bench.first_frame(page)
    fast = Shape(rate_kbit=20_000)
    low = Shape(rate_kbit=kbit)
    phases = [Phase("20 Mbit/s", 10, fast), Phase(low.describe(), weak_s, low)]
    phases.append(Phase("20 Mbit/s again", 20, fast))
    result = await bench.run_phases(page, phases)
    await page.close()
    bench.link.set(Shape())
    return report_phases(title, result)


#: The loss goal's link: 5 % random loss, 40 ms ± 40 ms delay.
LOSSY = {"loss_pct": 5, "delay_ms": 40, "jitter_ms": 40}


async def scenario_loss(bench: Bench) -> str:
    from tests.netshape import Shape

    stream = await bench.live_stream(bench.args.bframes, 110)
    page = await bench.viewer_page(stream)
    await bench.first_frame(page)
    lossy = Shape(**LOSSY)
    try:
        bench.link.set(lossy)
    except RuntimeError as exc:  # no sch_netem in this kernel
        await page.close()
        return f"### loss\n\nnot run: {exc} (`--emulated-link` carries the link in user space)\n"
    phases = [Phase("clean", 10, Shape()), Phase(lossy.describe(), 60, lossy)]
    phases.append(Phase("clean again", 10, Shape()))
    result = await bench.run_phases(page, phases)
    await page.close()
    bench.link.set(Shape())
    return report_phases("loss", result)


async def scenario_join_weak(bench: Bench, shape, seconds: float = 40) -> str:
    """A student who joins on a weak link: the link is shaped before the page opens."""
    from tests.netshape import Shape

    stream = await bench.live_stream(bench.args.bframes, seconds + 30)
    bench.link.set(shape)
    page = await bench.viewer_page(stream)
    phases = [Phase(f"joined at {shape.describe()}", seconds, shape)]
    phases.append(Phase("link back to unshaped", 20, Shape()))
    result = await bench.run_phases(page, phases)
    if bench.args.verbose:
        print_seconds(result)
    await page.close()
    bench.link.set(Shape())
    return report_phases(f"join at {shape.describe()}", result)


def print_seconds(phases: list[tuple[str, list]]) -> None:
    """Each second of each phase: what Chromium received and decoded."""
    from tests.chromium_viewer import window_figures

    for label, samples in phases:
        print(f"-- {label}: s, height, fps, video kbit/s, video loss %, NACK, PLI, concealed %")
        for i, (a, b) in enumerate(zip(samples, samples[1:], strict=False)):
            f = window_figures(a, b)
            print(
                f"{i:3d} {f['height']:5.0f} {f['fps']:5.1f} {f['video_kbps']:6.0f} "
                f"{f['video_loss_pct']:5.1f} {f['nacks']:4.0f} {f['plis']:3.0f} "
                f"{f['concealed_pct']:5.1f}"
            )


#: The join storm's one shared link (kbit/s), as a school access point's uplink.
LINK_SHARE_KBIT = 50_000


async def scenario_joinstorm(bench: Bench, viewers: int = 60, chromium: int = 3) -> str:
    from tests.chromium_viewer import read_stats, window_figures
    from tests.netshape import Shape

    stream = await bench.live_stream(bench.args.bframes, 90)
    link_kbit = bench.args.storm_link_kbit
    bench.link.set(Shape(rate_kbit=link_kbit or None))
    pages = [await bench.browser.new_page() for _ in range(chromium)]
    for page in pages:
        await page.goto(f"{bench.node.url}/api/health")
    loadgen = bench.link.viewer_command(
        [sys.executable, str(ROOT / "scripts/loadgen.py"), bench.node.url, stream,
         "--viewers", str(viewers - chromium), "--concurrency", str(viewers),
         "--dev", "--ice-host", bench.link.viewer_addr, "--settle", "1",
         "--seconds", "15", "--brief",
         # Each loadgen viewer plays a browser that got its share of the link (REMB,
         # receiver reports), so the crowd adapts as a class of browsers would.
         "--link-kbps", str((link_kbit or LINK_SHARE_KBIT) // viewers), "--link-loss", "0"]
    )  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *loadgen, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    from tests.chromium_viewer import open_viewer

    whep = f"{bench.node.url}/live/{stream}/whep"
    tokens = [(await bench.node.atoken(stream))["token"] for _ in pages]
    await asyncio.gather(*(open_viewer(p, whep, t) for p, t in zip(pages, tokens, strict=True)))
    first = [(await read_stats(p))[0] for p in pages]
    out, _ = await proc.communicate()
    last = [(await read_stats(p))[0] for p in pages]
    summary = json.loads(out) if out.strip() else {}
    lines = [
        f"### joinstorm ({viewers} viewers within 1 s, one 50 Mbit/s link)",
        "",
        "| Chromium viewer | first frame ms | fps | freezes | frozen s | rtx % of video bytes "
        "| NACK | PLI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, (a, b) in enumerate(zip(first, last, strict=True)):
        f = window_figures(a, b)
        ff = b.first_frame_ms
        lines.append(
            f"| {i} | {ff if ff is None else round(ff)} | {f['fps']:.1f} | {f['freezes']:.0f} "
            f"| {f['frozen_s']:.1f} | {f['rtx_pct']:.1f} | {f['nacks']:.0f} | {f['plis']:.0f} |"
        )
    lines.append("")

    def spread(key: str) -> str:
        p = summary.get(key) or {}
        return f"{key} p50 {p.get('p50')} p95 {p.get('p95')} max {p.get('max')}"

    keys = ("first_frame_s", "connect_s", "video_fps", "loss_pct", "kbps")
    lines.append(
        f"- loadgen (aiortc, REMB of a {LINK_SHARE_KBIT // viewers} kbit/s share, no NACK/PLI): "
        f"{summary.get('viewers_connected')} of "
        f"{viewers - chromium} connected; " + "; ".join(spread(k) for k in keys)
    )
    lines.append(
        f"- loadgen process: connect phase {summary.get('connect_phase_s')} s wall, "
        f"{summary.get('loadgen_connect_cpu_s')} s CPU; {summary.get('loadgen_cores')} cores "
        "while measuring"
    )
    lines.append(f"- loadgen errors: {summary.get('errors')}")
    for page in pages:
        await page.close()
    bench.link.set(Shape())
    return "\n".join(lines) + "\n"


def _median(values: list[float]) -> str:
    return f"{values[len(values) // 2]:.0f}" if values else "-"


def _spread(values: list[float]) -> str:
    """Median (min..max) of sorted values."""
    return f"{_median(values)} ({values[0]:.0f}..{values[-1]:.0f})" if values else "-"


async def scenario_lipsync(bench: Bench, seconds: float = 30) -> str:
    """Flash and beep at the same instant at the source: beep onset minus flash display
    time in Chromium, unshaped and at 1 Mbit/s; how long video and audio waited in
    Chromium's jitter buffers meanwhile (its A/V sync delays the earlier of the two)."""
    from tests.chromium_viewer import lipsync_offsets, read_stats, start_lipsync, window_figures
    from tests.netshape import Shape

    lines = [
        "### lipsync (audio minus video, ms; positive: audio late)",
        "",
        "Beep onset minus flash display, the beep found in an AnalyserNode (WebAudio) or"
        " where the track hands audio to its sinks (MediaStreamTrackProcessor); Chromium's"
        " own offset: estimatedPlayoutTimestamp of the video minus the audio's, every 100 ms.",
        "",
        "| link | pairs | WebAudio median (min..max) | track median (min..max) "
        "| Chromium median (samples) | height | fps | video buffer ms | audio buffer ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    stream = await bench.live_stream(bench.args.bframes, 2 * seconds + 30, flash=True)
    for shape in (Shape(), Shape(rate_kbit=1000)):
        bench.link.set(shape)
        page = await bench.viewer_page(stream)
        await bench.first_frame(page)
        state = await start_lipsync(page)
        first = (await read_stats(page))[0]
        await asyncio.sleep(seconds)  # the measurement window
        figures = window_figures(first, (await read_stats(page))[0])
        offsets = await lipsync_offsets(page)
        lines.append(
            f"| {shape.describe()} | {len(offsets['webaudio'])} (AudioContext {state})"
            f" | {_spread(offsets['webaudio'])} | {_spread(offsets['track'])}"
            f" | {_median(offsets['chromium'])} ({len(offsets['chromium'])})"
            f" | {figures['height']:.0f} | {figures['fps']:.1f} | {figures['video_buffer_ms']:.0f}"
            f" | {figures['audio_buffer_ms']:.0f} |"
        )
        await page.close()
    bench.link.set(Shape())
    return "\n".join(lines) + "\n"


async def scenario_move(bench: Bench, moves: int = 3, between: float = 12) -> str:
    """The viewer namespace's address changes `moves` times (its sockets stay: the new
    address is what the node sees, as behind a NAT that rebinds or a phone's new network).
    Two viewers watch through it: the student page (which restarts ICE when its path goes
    silent) and a plain RTCPeerConnection WHEP client (no recovery of its own). Per move:
    the longest time without a new frame in the 15 s after it, and the student page's
    new sessions and ICE restarts. Last, every UDP socket open is cut off (the path
    dies; HTTP and new sockets still work)."""
    from tests.chromium_viewer import read_stats

    stream = await bench.live_stream(bench.args.bframes, (moves + 1) * (between + 20) + 20)
    student = await bench.browser.new_page()
    await student.goto(f"{bench.node.url}/student?stream={stream}")
    await student.wait_for_function(
        "() => window.airclassPlayer.state === 'playing'", timeout=30_000
    )
    plain = await bench.viewer_page(stream)
    await bench.first_frame(plain)
    counters = (
        "({f: window.airclassPlayer.framesDecoded(), r: window.airclassPlayer.reconnects,"
        " i: window.airclassPlayer.iceRestarts || 0})"
    )

    async def frames() -> tuple[int, int]:
        # A new session's video element may count from 0 again: any change is a frame.
        page_frames = (await student.evaluate(counters))["f"]
        return page_frames, (await read_stats(plain))[0].video.get("framesDecoded", 0)

    lines = [
        "### move (the viewer's address changes under its sockets)",
        "",
        "| change | student page: picture stood still s | new sessions | ICE restarts "
        "| plain WHEP client: picture stood still s |",
        "|---|---|---|---|---|",
    ]
    events = [f"address {n}" for n in range(1, moves + 1)] + ["UDP sockets cut"]
    for event in events:
        await asyncio.sleep(between)  # playing undisturbed before the change
        before = await student.evaluate(counters)
        moved = time.monotonic()
        if event.startswith("address"):
            bench.link.move_viewer()
        else:  # the path dies (Wi-Fi gone): only new sockets get through
            bench.link.cut_viewer_udp()
        last, changed, gaps = await frames(), [moved, moved], [0.0, 0.0]
        while time.monotonic() - moved < 15:
            now_frames, now = await frames(), time.monotonic()
            for i in range(2):
                if now_frames[i] != last[i]:
                    gaps[i] = max(gaps[i], now - changed[i])
                    changed[i] = now
            last = now_frames
            await asyncio.sleep(0.05)
        gaps = [max(gap, time.monotonic() - at) for gap, at in zip(gaps, changed, strict=True)]
        after = await student.evaluate(counters)
        lines.append(
            f"| {event} | {gaps[0]:.2f} | {after['r'] - before['r']} | {after['i'] - before['i']} "
            f"| {gaps[1]:.2f} |"
        )
    await student.close()
    await plain.close()
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace, reports: list[dict]) -> None:
    from tests.netshape import Shape

    with tempfile.TemporaryDirectory(prefix="bench-adaptive-") as tmp:
        bench = Bench(args, Path(tmp))
        try:
            await bench.start_browser()
            print(f"node {bench.node.url}, viewer {bench.link.viewer_addr}", flush=True)
            for name in args.scenario or SCENARIOS:
                if name == "bframes":
                    text = await scenario_bframes(bench)
                elif name == "1mbps":
                    text = await scenario_rate(bench, 1000, "1mbps")
                elif name == "400kbps":
                    text = await scenario_rate(bench, 400, "400kbps")
                elif name == "loss":
                    text = await scenario_loss(bench)
                elif name == "lipsync":
                    text = await scenario_lipsync(bench)
                elif name == "join1mbps":
                    text = await scenario_join_weak(bench, Shape(rate_kbit=1000))
                elif name == "joinloss":
                    text = await scenario_join_weak(bench, Shape(**LOSSY), 60)
                elif name == "move":
                    text = await scenario_move(bench)
                else:
                    text = await scenario_joinstorm(bench)
                print(text, flush=True)
                reports.append({"scenario": name, "report": text})
        finally:
            await bench.close()
            print(f"load average: {os.getloadavg()}")
            if args.node_log:
                shutil.copyfile(bench.node.log_path, args.node_log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", action="append", choices=SCENARIOS)
    parser.add_argument("--bframes", action="store_true", help="publish with 3 B-frames, -g 120")
    parser.add_argument(
        "--weak-seconds", type=int, default=30, help="1mbps/400kbps: how long the link is weak"
    )
    parser.add_argument("--preset", default="ultrafast", help="publisher's x264 preset")
    parser.add_argument(
        "--storm-link-kbit",
        type=int,
        default=LINK_SHARE_KBIT,
        help="joinstorm: the shared link's rate (0: unshaped; the crowd's share stays 1/60 "
        "of 50 Mbit/s)",
    )
    parser.add_argument(
        "--emulated-link",
        action="store_true",
        help="carry the link in user space (tests/linkemu.py: delay and jitter without "
        "sch_netem; for one viewer's rates, not a crowd's)",
    )
    parser.add_argument("--json", help="write the reports to this file")
    parser.add_argument("--node-log", help="copy the node's log (rung switches) to this file")
    parser.add_argument("--verbose", action="store_true", help="print every second's figures")
    args = parser.parse_args()
    if os.environ.get("AIRCLASS_IN_NETNS") != "1":
        script = str(ROOT / "scripts/in-netns.sh")
        os.execv("/bin/bash", ["bash", script, sys.executable, *sys.argv])
    reports: list[dict] = []
    try:
        asyncio.run(run(args, reports))
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
