#!/usr/bin/env python3
"""Light WHEP load generator: N viewers that negotiate for real and count RTP in the clear.

    .venv/bin/python scripts/loadgen.py http://10.77.0.1:8000 STREAM --viewers 200 \
        --seconds 20 --dev --ice-host 10.77.0.1

Each viewer is a real aiortc peer connection: WHEP POST, ICE, DTLS-SRTP handshake. After
that, RTP is NOT handed to aiortc: SRTP leaves the 12-byte RTP header in clear, so a hook
on aioice's `StunProtocol.datagram_received` takes every datagram whose first byte is
128..191 and whose second byte is not 192..223 (RTCP) and counts it per SSRC: packets,
bytes, sequence gaps (loss, with wrap-around and reordering) and marker bits (one per
video frame). No decryption, no depacketizing, no decoding, no NACK or PLI; STUN, DTLS and
RTCP still go to aioice/aiortc, so consent checks and receiver reports keep the session
alive. With --link-kbps / --link-loss each viewer also plays a browser behind a link of
that rate and loss, once a second: a receiver report with the fraction lost (measured,
at least the simulated share), a REMB as a browser's estimator would send it (it drops
when more arrives than the link carries or packets are lost, else climbs: see
`browser_remb`) and NACKs for the simulated share of the last second's video packets (so
a benchmark measures what adaptation, retransmission and its budgets cost the node). The client
loop runs on uvloop. A JSON summary goes to stdout (viewers connected,
per-viewer loss %, frames/s, kbit/s, connect time, and the generator's own CPU);
progress events (JSON lines) go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import aioice.ice  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtp import (  # noqa: E402
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)

RTP_HEADER = struct.Struct("!BBHII")


@dataclass
class SsrcCounter:
    """Counts of one RTP stream, RFC 3550 style: loss = expected - received."""

    kind: str
    packets: int = 0
    bytes: int = 0
    markers: int = 0
    timestamps: int = 0  # how many times the RTP timestamp moved on (in-order packets)
    last_ts: int = -1
    base_seq: int = -1
    max_seq: int = 0
    cycles: int = 0
    reordered: int = 0

    def add(self, seq: int, ts: int, size: int, marker: bool) -> None:
        self.packets += 1
        self.bytes += size
        if marker:
            self.markers += 1
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            self.last_ts, self.timestamps = ts, 1
            return
        delta = (seq - self.max_seq) & 0xFFFF
        if delta == 0:
            return  # duplicate
        if delta < 0x8000:
            if seq < self.max_seq:
                self.cycles += 0x10000  # wrapped past 65535
            self.max_seq = seq
            if ts != self.last_ts:
                self.last_ts = ts
                self.timestamps += 1
        else:
            self.reordered += 1  # late packet: counted as received, not as a new maximum

    @property
    def expected(self) -> int:
        return 0 if self.base_seq < 0 else self.cycles + self.max_seq - self.base_seq + 1

    def snapshot(self) -> tuple[int, int, int, int, int]:
        return self.packets, self.bytes, self.markers, self.expected, self.timestamps


@dataclass
class Viewer:
    """One WHEP session and what its RTP counters saw."""

    index: int
    pc: RTCPeerConnection | None = None
    location: str | None = None
    pt_kinds: dict[int, str] = field(default_factory=dict)
    ssrcs: dict[int, SsrcCounter] = field(default_factory=dict)
    started: float = 0.0
    connected_at: float | None = None
    first_rtp_at: float | None = None
    first_frame_at: float | None = None
    error: str | None = None

    def on_rtp(self, data: bytes) -> None:
        b0, b1, seq, ts, ssrc = RTP_HEADER.unpack_from(data)
        counter = self.ssrcs.get(ssrc)
        if counter is None:
            kind = self.pt_kinds.get(b1 & 0x7F, "other")
            counter = self.ssrcs[ssrc] = SsrcCounter(kind)
        marker = b1 & 0x80 != 0
        counter.add(seq, ts, len(data), marker)
        if self.first_rtp_at is None:
            self.first_rtp_at = time.monotonic()
        if marker and self.first_frame_at is None and counter.kind == "video":
            self.first_frame_at = time.monotonic()

    def snapshot(self) -> dict[int, tuple[int, int, int, int, int]]:
        return {ssrc: c.snapshot() for ssrc, c in self.ssrcs.items()}


#: aioice Connection -> the viewer whose RTP arrives on it.
_VIEWERS_BY_CONNECTION: dict[object, Viewer] = {}
_original_datagram_received = aioice.ice.StunProtocol.datagram_received


def _datagram_received(self, data: bytes, addr) -> None:
    if len(data) >= 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
        viewer = _VIEWERS_BY_CONNECTION.get(self.receiver)
        if viewer is not None:
            viewer.on_rtp(data)
            return
    _original_datagram_received(self, data, addr)


def install_rtp_counter() -> None:
    """Route clear RTP headers to the counters (process-wide, before any connection)."""
    aioice.ice.StunProtocol.datagram_received = _datagram_received


def payload_kinds(sdp: str) -> dict[int, str]:
    """Payload type -> 'video' / 'audio' / 'rtx' from an SDP answer's rtpmap lines."""
    kinds: dict[int, str] = {}
    media = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            media = line[2:].split(" ", 1)[0]
        match = re.match(r"a=rtpmap:(\d+) ([^/]+)/", line)
        if match:
            name = match.group(2).lower()
            kinds[int(match.group(1))] = "rtx" if name == "rtx" else media
    return kinds


def offer_red(sdp: str) -> str:
    """The offer with RED of Opus in its audio section, as Chromium offers it (the node
    then sends each Opus packet with the previous one inside)."""
    opus = re.search(r"a=rtpmap:(\d+) opus/48000", sdp, re.IGNORECASE)
    if opus is None:
        return sdp
    pt, red = opus.group(1), "63"
    lines = sdp.split("\r\n")
    for i, line in enumerate(lines):
        if line.startswith("m=audio "):
            lines[i] = f"{line} {red}"
        elif line.startswith(f"a=rtpmap:{pt} "):
            lines.insert(i + 1, f"a=rtpmap:{red} red/48000/2\r\na=fmtp:{red} {pt}/{pt}")
    return "\r\n".join(lines)


async def get_grant(http: aiohttp.ClientSession, node: str, stream: str, user: str) -> dict:
    url = f"{node}/api/token?stream={quote(stream)}&user_id={quote(user)}"
    async with http.post(url) as resp:
        body = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"/api/token: {resp.status} {body}")
        return body


async def connect(
    viewer: Viewer, http: aiohttp.ClientSession, args: argparse.Namespace, timeout: float
) -> None:
    """WHEP POST, then wait until ICE + DTLS are connected."""
    viewer.started = time.monotonic()
    if args.token:
        token, whep_url = args.token, f"{args.node}/live/{quote(args.stream)}/whep"
    else:
        grant = await get_grant(http, args.node, args.stream, f"loadgen-{viewer.index}")
        token, whep_url = grant["token"], grant["whep_url"]
    # No ICE servers: aiortc's default STUN server would be looked up (5 s timeout here).
    pc = viewer.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected":
            viewer.connected_at = time.monotonic()
            connected.set()
        elif pc.connectionState == "failed":
            connected.set()

    for kind in ("video", "audio"):
        transceiver = pc.addTransceiver(kind, direction="recvonly")
        ice = transceiver.receiver.transport.transport
        _VIEWERS_BY_CONNECTION[ice._connection] = viewer
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    if args.link_kbps:  # realistic mode: a browser's offer, RED for Opus included
        offer = offer_red(offer)
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with http.post(whep_url, data=offer, headers=headers) as resp:
        answer = await resp.text()
        if resp.status != 201:
            raise RuntimeError(f"WHEP POST {resp.status}: {answer[:200]}")
        viewer.location = str(resp.url.join(aiohttp.client.URL(resp.headers["Location"])))
    viewer.pt_kinds = payload_kinds(answer)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.wait_for(connected.wait(), timeout)
    if viewer.connected_at is None:
        raise RuntimeError("ICE/DTLS failed")


#: A browser's receive-side estimator (REMB) on over-use: 0.85 x what arrives; without
#: it the estimate grows 8 % a second, up to 1.5 x what arrives.
OVERUSE_FACTOR = 0.85
GROWTH_PER_S = 1.08
ABOVE_RECEIVED = 1.5


def browser_remb(remb: float | None, received_bps: float, share_bps: float, lost: float) -> float:
    """The REMB a browser behind a link of `share_bps` sends after a second in which
    `received_bps` arrived and `lost` of the video was lost: its queue grows (over-use)
    when more arrives than the link carries, or packets are lost; otherwise it climbs."""
    if received_bps > share_bps or lost > 0.02:
        return max(50_000.0, OVERUSE_FACTOR * min(received_bps, share_bps))
    climbed = (remb or received_bps) * GROWTH_PER_S
    return max(50_000.0, min(climbed, ABOVE_RECEIVED * received_bps))


async def send_feedback(viewer: Viewer, args: argparse.Namespace) -> None:
    """Once a second, what a browser behind the simulated link sends about the video:
    receiver report (the loss measured, at least --link-loss), REMB (`browser_remb`: it
    backs off when the link is full, as a class of browsers sharing one would), NACKs
    for the simulated share of the packets (not for what was really lost)."""
    rng = random.Random(viewer.index)
    await asyncio.sleep(rng.random())  # viewers' RTCP spread over the second
    receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")
    loss = args.link_loss / 100
    lost_total, last_seq, remb = 0, None, None
    last_at, last_bytes, last_counts = time.monotonic(), 0, (0, 0)
    while viewer.pc.connectionState == "connected":
        video = [(ssrc, c) for ssrc, c in viewer.ssrcs.items() if c.kind == "video"]
        sender_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
        now = time.monotonic()
        if video and sender_ssrc is not None:
            ssrc, counter = video[0]
            total = sum(c.bytes for c in viewer.ssrcs.values())
            received_bps = 8 * (total - last_bytes) / max(now - last_at, 0.1)
            expected = counter.expected - last_counts[0]
            measured = 1 - (counter.packets - last_counts[1]) / expected if expected > 0 else 0.0
            last_at, last_bytes, last_counts = now, total, (counter.expected, counter.packets)
            fraction = max(loss, measured, 0.0)
            remb = browser_remb(remb, received_bps, args.link_kbps * 1000, measured)
            newest = counter.max_seq & 0xFFFF
            span = 0 if last_seq is None else (newest - last_seq) & 0xFFFF
            last_seq = newest
            lost = [(newest - rng.randrange(span)) & 0xFFFF for _ in range(int(span * loss))]
            lost_total += len(lost)
            packets = [
                RtcpRrPacket(
                    ssrc=sender_ssrc,
                    reports=[
                        RtcpReceiverInfo(
                            ssrc=ssrc,
                            fraction_lost=min(int(fraction * 256), 255),
                            packets_lost=lost_total,
                            highest_sequence=counter.cycles + counter.max_seq,
                            jitter=0,
                            lsr=0,
                            dlsr=0,
                        )
                    ],
                ),
                RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP,
                    ssrc=sender_ssrc,
                    media_ssrc=0,
                    fci=pack_remb_fci(int(remb), [ssrc]),
                ),
            ]
            if lost:
                nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=sender_ssrc, media_ssrc=ssrc)
                # Ascending, not across the wrap (aiortc's NACK writer wants that).
                nack.lost = sorted(set(s for s in lost if s <= newest))
                packets.append(nack)
            for packet in packets:
                with contextlib.suppress(ConnectionError):
                    await receiver._send_rtcp(packet)
        await asyncio.sleep(1.0)


async def close(viewer: Viewer, http: aiohttp.ClientSession) -> None:
    if viewer.location:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with http.delete(viewer.location):
                pass
    if viewer.pc is not None:
        with contextlib.suppress(Exception):
            await viewer.pc.close()


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 3)

    return {
        "mean": round(sum(ordered) / len(ordered), 3),
        "min": round(ordered[0], 3),
        "p5": q(0.05),
        "p50": q(0.5),
        "p95": q(0.95),
        "max": round(ordered[-1], 3),
    }


def viewer_window(viewer: Viewer, before: dict, seconds: float) -> dict:
    """Loss, frame rate and bit rate of one viewer over the measuring window."""
    lost = expected = 0
    frames = stamps = bits = 0
    audio_packets = 0
    for ssrc, counter in viewer.ssrcs.items():
        p0, b0, m0, e0, t0 = before.get(ssrc, (0, 0, 0, 0, 0))
        p1, b1, m1, e1, t1 = counter.snapshot()
        if counter.kind in ("video", "audio"):
            expected += e1 - e0
            lost += max(0, (e1 - e0) - (p1 - p0))
        bits += 8 * (b1 - b0)
        if counter.kind == "video":
            frames += m1 - m0
            stamps += t1 - t0
        elif counter.kind == "audio":
            audio_packets += p1 - p0
    return {
        "viewer": viewer.index,
        "connect_s": round(viewer.connected_at - viewer.started, 3),
        "first_frame_s": round(viewer.first_frame_at - viewer.started, 3)
        if viewer.first_frame_at
        else None,
        "loss_pct": round(100 * lost / expected, 3) if expected else None,
        "video_fps": round(frames / seconds, 2),  # marker bits: one per access unit
        "video_timestamps_per_s": round(stamps / seconds, 2),  # cross-check of video_fps
        "audio_pps": round(audio_packets / seconds, 1),
        "kbps": round(bits / seconds / 1000, 1),
    }


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def event(**fields) -> None:
    print(json.dumps(fields), file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict:
    if args.ice_host:
        from airclass_media.ice import restrict_host_addresses

        restrict_host_addresses(args.ice_host)
    install_rtp_counter()
    viewers = [Viewer(i) for i in range(args.viewers)]
    limit = asyncio.Semaphore(args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    cpu_start, t_start = cpu_seconds(), time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as http:
        feedback = []

        async def one(viewer: Viewer) -> None:
            async with limit:
                try:
                    await connect(viewer, http, args, args.connect_timeout)
                except Exception as exc:  # noqa: BLE001 - reported per viewer
                    viewer.error = f"{type(exc).__name__}: {exc}"[:300]
                    return
            if args.link_kbps:  # from the start, as a browser's RTCP
                feedback.append(asyncio.ensure_future(send_feedback(viewer, args)))

        await asyncio.gather(*(one(v) for v in viewers))
        connected = [v for v in viewers if v.error is None]
        connect_wall = time.monotonic() - t_start
        connect_cpu = cpu_seconds() - cpu_start
        # Each viewer starts with the cached GOP sent at once: measure after that burst.
        await asyncio.sleep(args.settle)
        event(event="measuring", connected=len(connected), seconds=args.seconds)
        before = {v.index: v.snapshot() for v in connected}
        cpu0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.seconds)  # the measuring window itself
        window = time.monotonic() - t0
        cores = (cpu_seconds() - cpu0) / window
        rows = [viewer_window(v, before[v.index], window) for v in connected]
        still = sum(1 for v in connected if v.pc.connectionState == "connected")
        event(event="closing")
        for task in feedback:
            task.cancel()
        await asyncio.gather(*(close(v, http) for v in viewers))
    _VIEWERS_BY_CONNECTION.clear()
    errors: dict[str, int] = {}
    for v in viewers:
        if v.error:
            errors[v.error] = errors.get(v.error, 0) + 1
    return {
        "node": args.node,
        "stream": args.stream,
        "viewers_requested": args.viewers,
        "viewers_connected": len(connected),
        "viewers_still_connected": still,
        "errors": errors,
        "seconds": round(window, 2),
        "connect_phase_s": round(connect_wall, 2),
        "loadgen_cores": round(cores, 3),
        "loadgen_cores_per_viewer": round(cores / len(connected), 5) if connected else None,
        "loadgen_connect_cpu_s": round(connect_cpu, 2),
        "connect_s": percentiles([r["connect_s"] for r in rows]),
        "first_frame_s": percentiles([r["first_frame_s"] for r in rows if r["first_frame_s"]]),
        "loss_pct": percentiles([r["loss_pct"] for r in rows if r["loss_pct"] is not None]),
        "video_fps": percentiles([r["video_fps"] for r in rows]),
        "video_timestamps_per_s": percentiles([r["video_timestamps_per_s"] for r in rows]),
        "kbps": percentiles([r["kbps"] for r in rows]),
        "viewers_without_video": sum(1 for r in rows if r["video_fps"] == 0),
        "per_viewer": rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("node", help="node base URL, e.g. http://10.77.0.1:8000")
    parser.add_argument("stream")
    parser.add_argument("--viewers", "-n", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=15, help="measuring window")
    parser.add_argument(
        "--settle", type=float, default=2, help="seconds between connecting and measuring"
    )
    parser.add_argument("--token", help="read token; otherwise one per viewer from /api/token")
    parser.add_argument(
        "--dev", action="store_true", help="node runs --dev: tokens from /api/token (default)"
    )
    parser.add_argument("--ice-host", action="append", default=[], help="client ICE address")
    parser.add_argument("--concurrency", type=int, default=8, help="negotiations at once")
    parser.add_argument("--connect-timeout", type=float, default=30)
    parser.add_argument("--nice", type=int, default=0, help="lower the generator's priority")
    parser.add_argument("--brief", action="store_true", help="leave out the per-viewer rows")
    parser.add_argument(
        "--link-kbps",
        type=float,
        default=0,
        help="simulated link: REMB, RR and NACKs (kbit/s); the offer has RED, as a browser's",
    )
    parser.add_argument("--link-loss", type=float, default=0, help="simulated link loss (%%)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import uvloop

    args = parse_args(argv)
    args.node = args.node.rstrip("/")
    if args.nice:
        os.nice(args.nice)
    summary = uvloop.run(run(args))
    if args.brief:
        summary.pop("per_viewer")
    print(json.dumps(summary, indent=None if args.brief else 1))


if __name__ == "__main__":
    main()
