"""The fan-out sender: fixed-size RTP packetization, UDP GSO bursts, the aiortc internals
it relies on, and playback through a lossy, jittery link (NACK answered from the shared
history)."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import socket
import struct
import subprocess

import pytest

from airclass_media.fanout import RTP_PAYLOAD_MAX, RtpBinding, RtpTarget, StreamFanout, UdpPath
from airclass_media.h264 import FU_A, STAP_A, rtp_payloads, split_annexb
from airclass_media.hub import StreamHub
from airclass_media.packets import MediaPacket

from .support import TEST_HOST, async_http_json, async_wait_for, ffmpeg_publish


def _access_unit(*sizes: int) -> bytes:
    rng = random.Random(7)
    nals = []
    for i, size in enumerate(sizes):
        body = bytes(rng.choice(range(1, 256)) for _ in range(size - 1))  # no start codes
        nals.append(b"\x00\x00\x00\x01" + bytes([0x65 if i == len(sizes) - 1 else 0x67]) + body)
    return b"".join(nals)


def _depacketize(payloads: list[bytes]) -> list[bytes]:
    nals, fragment = [], b""
    for p in payloads:
        kind = p[0] & 0x1F
        if kind == STAP_A:
            pos = 1
            while pos < len(p):
                n = int.from_bytes(p[pos : pos + 2], "big")
                nals.append(p[pos + 2 : pos + 2 + n])
                pos += 2 + n
        elif kind == FU_A:
            if p[1] & 0x80:
                fragment = bytes([(p[0] & 0xE0) | (p[1] & 0x1F)])
            fragment += p[2:]
            if p[1] & 0x40:
                nals.append(fragment)
        else:
            nals.append(p)
    return nals


def test_fu_a_fragments_have_one_size_and_reassemble():
    au = _access_unit(25, 8, 5000, 3 * RTP_PAYLOAD_MAX)
    payloads = rtp_payloads(au, RTP_PAYLOAD_MAX)
    assert _depacketize(payloads) == split_annexb(au)
    assert payloads[0][0] & 0x1F == STAP_A  # the two small NAL units travel together
    fragments = [p for p in payloads if p[0] & 0x1F == FU_A]
    for run_end in [i for i, p in enumerate(fragments) if p[1] & 0x40]:
        assert len(fragments[run_end]) <= RTP_PAYLOAD_MAX
    assert all(len(p) == RTP_PAYLOAD_MAX for p in fragments if not p[1] & 0x40)
    assert max(len(p) for p in payloads) <= RTP_PAYLOAD_MAX


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((TEST_HOST, 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    receiver.settimeout(5)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((TEST_HOST, 0))
    sender.setblocking(False)
    return sender, receiver


@pytest.mark.parametrize("gso", [True, False])
def test_a_frame_goes_out_in_equal_size_gso_runs(gso):
    sender, receiver = _udp_pair()
    path = UdpPath(sender, receiver.getsockname())
    path.gso = gso
    frame = [b"s" * 40] + [bytes([i]) * 1216 for i in range(70)] + [b"e" * 300, b"t" * 20]
    try:
        path.send(frame)
        got = [receiver.recv(2048) for _ in frame]
    finally:
        path.close()
        receiver.close()
    assert got == frame  # every datagram, byte for byte, in order
    assert path.dropped == 0 and path.errors == 0
    if gso:
        # 40 alone (a bigger one follows); 64 equal segments; 6 + the 300-byte tail;
        # then the 20-byte one alone.
        assert path.syscalls == 4
    else:
        assert path.syscalls == len(frame)


async def test_aiortc_internals_taken_over_are_there():
    """aiortc is pinned (pyproject); this fails first when an upgrade moves what
    airclass_media.aiortc_tuning relies on."""
    from aiortc import RTCPeerConnection
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    pc = RTCPeerConnection()
    try:
        sender = pc.addTransceiver("video", direction="sendonly").sender
        for name in (
            "rtp_started",
            "rtp_exited",
            "mid",
            "rtp_header_extensions_map",
            "rtx_payload_type",
            "rtp_timestamp",
            "ntp_timestamp",
            "packet_count",
            "octet_count",
            "rtt",
            "stats",
        ):
            assert hasattr(sender, f"_RTCRtpSender__{name}"), name
        for name in (
            "_run_rtp",
            "_retransmit",
            "_send_keyframe",
            "_handle_rtcp_packet",  # REMB and receiver-report loss (take_over_rtp)
            "_ssrc",
            "_rtx_ssrc",
        ):
            assert hasattr(sender, name), name
        dtls: RTCDtlsTransport = sender.transport
        assert hasattr(dtls, "_tx_srtp")
        connection = dtls.transport._connection
        assert isinstance(connection._nominated, dict)
        # WHIP ingest (aiortc_tuning.tap_encoded_frames, media_ssrc).
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        for name in ("decoder_queue", "rtx_ssrc", "remote_streams"):
            assert hasattr(receiver, f"_RTCRtpReceiver__{name}"), name
        # The playout-delay extension is answered from aiortc's list of the ones it knows.
        from aiortc.codecs import HEADER_EXTENSIONS

        from airclass_media.aiortc_tuning import PLAYOUT_DELAY_URI

        assert any(e.uri == PLAYOUT_DELAY_URI for e in HEADER_EXTENSIONS["video"])
    finally:
        await pc.close()


@pytest.fixture
def udp_loss():
    """Drop a share of every UDP datagram in the test namespace (a real packet filter;
    this kernel has no netem, so jitter is added by the viewer itself).

    Dropped as they are received, with `lo` segmenting GSO sends: a rule where packets
    leave sees one GSO send (a frame's packets, up to 64) as one packet, so 2 % of those
    is a burst loss of whole frames, not the 2 % of datagrams meant."""
    if TEST_HOST.startswith("127.") or not shutil.which("nft") or os.geteuid() != 0:
        pytest.skip("needs scripts/run-tests.sh's private network namespace, root and nft")
    table = "airclass_loss_test"

    def apply(percent: int) -> None:
        subprocess.run(["ip", "link", "set", "dev", "lo", "gso_max_segs", "1"], check=True)
        rules = (
            f"table inet {table} {{\n chain in {{\n type filter hook input priority 0;\n"
            f" meta l4proto udp numgen random mod 100 < {percent} counter drop\n }}\n}}\n"
        )
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)

    yield apply
    subprocess.run(
        ["nft", "delete", "table", "inet", table], check=False, stderr=subprocess.DEVNULL
    )
    subprocess.run(["ip", "link", "set", "dev", "lo", "gso_max_segs", "65535"], check=False)


@pytest.fixture
def jitter(monkeypatch):
    """Delay every datagram this process receives by 0-30 ms (so some arrive reordered)."""
    import aioice.ice

    original = aioice.ice.StunProtocol.datagram_received
    rng = random.Random(3)

    def delayed(self, data, addr):
        asyncio.get_running_loop().call_later(rng.uniform(0, 0.03), original, self, data, addr)

    monkeypatch.setattr(aioice.ice.StunProtocol, "datagram_received", delayed)


async def test_lossy_jittery_link_still_decodes(node, processes, players, udp_loss, jitter):
    token = (await node.atoken("lossy", user_type="teacher", action="publish"))["token"]
    processes.append(ffmpeg_publish(node.rtmp_url("lossy", token), seconds=60))
    grant = await node.atoken("lossy")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=30, timeout=30)
    udp_loss(2)
    start = len(player.stats.video_pts)
    await player.wait_frames(video=300, timeout=40)
    pts = sorted(set(player.stats.video_pts[start:]))
    expected = (pts[-1] - pts[0]) // 3000 + 1  # 30 fps on a 90 kHz clock
    # NACKs repair single losses; a loss left unrepaired stalls aiortc's jitter buffer
    # (~0.8 s) until it asks for a keyframe. aiortc NACKs every gap at once, and the jitter
    # makes about a quarter of the packets late: those NACKs once spent the whole RTX
    # budget and left real losses unrepaired (26-frame gaps in a loaded suite); a packet
    # still NACKed a round trip later now has a share of its own. Without repair (aiortc
    # passes only complete frames, ~7 packets each here) one frame in eight would be lost.

    async def nacks_answered():
        status, body, _ = await async_http_json(
            "GET",
            f"{node.url}/api/streams/lossy/viewers",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert status == 200, body
        video = body["viewers"][0]["media"]["video"]
        return video["nacks"] > 0 and video["retransmits"] > 0 and video

    video = await async_wait_for(nacks_answered, 10, "NACKs answered from the history")
    assert video["packets"] > 0
    gaps = [(b - a) // 3000 - 1 for a, b in itertools.pairwise(pts) if b - a > 4500]
    assert len(pts) >= 0.95 * expected, (len(pts), expected, "frames missing per gap", gaps, video)
    # Per-stage latency of the media path and the NACK count, in /metrics.
    status, text, _ = await async_http_json("GET", f"{node.url}/metrics")
    counts = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("airclass_media_stage_latency_seconds_count{")
    }
    assert counts.get('stage="wire",stream="lossy"', 0) > 0, counts
    assert any(line.startswith("airclass_webrtc_nacks_total ") for line in text.splitlines())
    # The viewer's receiver reports (aiortc sends them about once a second) are summed up.
    loss_max = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('airclass_webrtc_viewer_loss_ratio{stat="max"}')
    ]
    assert loss_max and 0 <= loss_max[0] <= 1
    # The reports really were summed: the viewer's packets arrive 0-30 ms late (the jitter
    # fixture), so the worst interarrival jitter it reports is well above zero.
    jitter_max = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('airclass_webrtc_viewer_jitter_seconds{stat="max"}')
    ]
    assert jitter_max and jitter_max[0] > 0.001, jitter_max


@pytest.mark.skipif(
    TEST_HOST.startswith("127."),
    reason="Chromium gathers no loopback ICE candidates: run the suite with "
    "scripts/run-tests.sh (private network namespace with a test address)",
)
async def test_chromium_keeps_playing_through_loss(node, processes, browser, udp_loss):
    token = (await node.atoken("lossy2", user_type="teacher", action="publish"))["token"]
    processes.append(ffmpeg_publish(node.rtmp_url("lossy2", token), seconds=90))
    page = await browser.new_page()
    await page.goto(f"{node.url}/student?stream=lossy2")
    await page.wait_for_function("() => window.airclassPlayer.state === 'playing'", timeout=30_000)
    udp_loss(2)
    frames = await page.evaluate("() => window.airclassPlayer.framesDecoded()")
    await page.wait_for_function(
        f"() => window.airclassPlayer.framesDecoded() > {frames + 240}", timeout=20_000
    )
    assert await page.evaluate("() => window.airclassPlayer.state") == "playing"
    status, body, _ = await async_http_json(
        "GET",
        f"{node.url}/api/streams/lossy2/viewers",
        headers={"Authorization": f"Bearer {token}"},
    )
    media = body["viewers"][0]["media"] if status == 200 else body
    assert media["video"]["nacks"] > 0, media
    assert media["audio"]["red"] is True, media  # Chromium offers RED; it is answered


async def test_sender_reports_map_both_tracks_from_one_media_clock():
    """Lip sync: every sender report of the audio and of the video pairs its RTP time
    with the wallclock one fixed mapping of the stream's pts gives, whenever (and in
    whatever bursts) the packets happen to leave."""
    sender, receiver = _udp_pair()
    receiver.setblocking(False)
    hub = StreamHub()
    stream = hub.stream("lipsync")
    stream.attach_publisher("test")
    frame = b"\x00\x00\x00\x01\x65" + bytes(300)
    stream.publish(MediaPacket("video", frame, 0, 0, True))
    fanout = StreamFanout(stream, lambda *args: None)
    reports: dict[str, list[tuple[int, int]]] = {"video": [], "audio": []}
    targets = []
    for kind, pt in (("video", 102), ("audio", 111)):
        binding = RtpBinding(
            kind=kind,
            payload_type=pt,
            header_tail=bytes(4),
            first_byte=0x80,
            protect=lambda data: data,
            path=UdpPath(sender, receiver.getsockname()),
            report=lambda ts, ntp, *_, kind=kind: reports[kind].append((ts, ntp)),
        )
        targets.append(RtpTarget(binding))
        fanout.add(targets[-1])
    try:
        # Three seconds of media published at once (a relay catching up, say).
        for i in range(1, 90):
            stream.publish(
                MediaPacket("video", frame[:5] + bytes(100), i * 33_333, i * 33_333, False)
            )
        for i in range(150):
            stream.publish(MediaPacket("audio", bytes(60), i * 20_000, i * 20_000, False))
        await async_wait_for(
            lambda: all(len(r) >= 5 for r in reports.values()), 5, "sender reports"
        )
        offsets = [
            ntp / 2**32 - ts / (90_000 if kind == "video" else 48_000)
            for kind, pairs in reports.items()
            for ts, ntp in pairs
        ]
        assert max(offsets) - min(offsets) < 0.001, offsets
    finally:
        fanout.close()
        sender.close()
        receiver.close()


async def test_a_keyframe_leaves_paced_not_in_one_burst():
    """A 100-packet keyframe to a viewer estimated at 1 Mbit/s leaves in bursts of at most
    PACE_BURST_PACKETS at ~PACE_FACTOR x that rate (kernel receive timestamps), not at
    line rate; the loop is never blocked meanwhile."""
    from airclass_media.estimate import BandwidthEstimate
    from airclass_media.fanout import PACE_BURST_PACKETS, PACE_FACTOR

    sender, receiver = _udp_pair()
    receiver.setblocking(False)
    so_timestampns = getattr(socket, "SO_TIMESTAMPNS", 35)
    receiver.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
    hub = StreamHub()
    stream = hub.stream("paced")
    stream.attach_publisher("test")
    fanout = StreamFanout(stream, lambda *args: None)
    estimate = BandwidthEstimate()
    estimate.on_remb(1_000_000)
    binding = RtpBinding(
        kind="video",
        payload_type=102,
        header_tail=bytes(4),
        first_byte=0x80,
        protect=lambda data: data,
        path=UdpPath(sender, receiver.getsockname()),
    )
    target = RtpTarget(binding, estimate=estimate)
    fanout.add(target)
    au = _access_unit(100 * RTP_PAYLOAD_MAX - 50)
    try:
        await async_wait_for(lambda: target.backlog is None, 5, "catch-up done (empty GOP)")
        stream.publish(MediaPacket("video", au, 0, 0, True))
        await async_wait_for(lambda: target.packets >= 100, 5, "the keyframe handed over")
        await async_wait_for(lambda: not target.pending, 5, "the pacer sent it all")
        arrivals = []
        while True:
            try:
                data, ancdata, _, _ = receiver.recvmsg(2048, 64)
            except BlockingIOError:
                break
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == so_timestampns:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    arrivals.append(sec + nsec / 1e9)
    finally:
        fanout.close()
        sender.close()
        receiver.close()
    assert len(arrivals) >= 100
    spread = arrivals[-1] - arrivals[0]
    expected = 100 * RTP_PAYLOAD_MAX * 8 / (1_000_000 * PACE_FACTOR)
    assert spread >= 0.7 * expected, f"{spread * 1000:.1f} ms for a {expected * 1000:.0f} ms frame"
    # Bursts: packets less than 1 ms apart, typically PACE_BURST_PACKETS long.
    bursts, run = [], 1
    for a, b in zip(arrivals, arrivals[1:], strict=False):
        if b - a < 0.001:
            run += 1
        else:
            bursts.append(run)
            run = 1
    bursts.append(run)
    # A late timer tick on a loaded machine sends what was due (so a burst may be longer).
    assert len(bursts) >= 10 and sorted(bursts)[len(bursts) // 2] <= PACE_BURST_PACKETS, bursts


async def test_opus_goes_out_as_red_with_the_previous_packet_inside():
    """A viewer that negotiated RED (RFC 2198) gets each Opus packet with the one before
    it as a redundant block: one lost packet is rebuilt by the browser, not concealed."""
    sender, receiver = _udp_pair()
    receiver.setblocking(False)
    hub = StreamHub()
    stream = hub.stream("red")
    stream.attach_publisher("test")
    fanout = StreamFanout(stream, lambda *args: None)
    address = receiver.getsockname()
    for red_type in (None, 63):
        binding = RtpBinding(
            "audio", 111, bytes(4), 0x80, lambda d: d, UdpPath(sender, address),
            red_payload_type=red_type,
        )  # fmt: skip
        fanout.add(RtpTarget(binding))
    opus = [bytes([i]) * (40 + i) for i in range(20)]
    received: dict[int, dict[int, bytes]] = {111: {}, 63: {}}

    def receive() -> bool:
        while True:
            try:
                data = receiver.recv(2048)
            except BlockingIOError:
                return all(len(r) == len(opus) for r in received.values())
            _, b1, seq, _ = struct.unpack("!BBHI", data[:8])
            received[b1 & 0x7F][seq] = data[12:]  # the 8 header bytes + the 4-byte tail (SSRC)

    try:
        for i, payload in enumerate(opus):
            stream.publish(MediaPacket("audio", payload, i * 20_000, i * 20_000, False))
        await async_wait_for(receive, 5, "every Opus packet, plain and as RED")
    finally:
        fanout.close()
        sender.close()
        receiver.close()
    assert [received[111][s] for s in sorted(received[111])] == opus
    blocks = [received[63][s] for s in sorted(received[63])]
    assert blocks[0] == bytes([111]) + opus[0]  # nothing before it: the primary block only
    for previous, payload, block in zip(opus, opus[1:], blocks[1:], strict=False):
        header = int.from_bytes(block[:4], "big")
        assert header >> 31 == 1 and (header >> 24) & 0x7F == 111  # a redundant Opus block
        assert (header >> 10) & 0x3FFF == 960  # 20 ms before, on the 48 kHz clock
        assert header & 0x3FF == len(previous)
        assert block[4] == 111  # the primary block's header: last block, Opus
        assert block[5:] == previous + payload
