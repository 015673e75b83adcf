"""Adaptive delivery in the fan-out (issue 16): audio never waits on video, the
retransmission and keyframe-replay budgets, and a viewer's rung following its
bandwidth estimate (REMB), down to audio only.

The viewer is aiortc (a real WHEP session to a real node fed by ffmpeg over RTMP); its
RTCP feedback (REMB, NACK, PLI) is sent by the test through aiortc's own receiver, with
aiortc's REMB estimator switched off so the test decides what the node is told.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections import deque

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from airclass_media import fanout as fanout_module
from airclass_media.estimate import BandwidthEstimate
from airclass_media.fanout import (
    FANOUT_QUEUE_PACKETS,
    KEYFRAME_REPLAY_INTERVAL,
    RTX_LOST_SHARE,
    RTX_SHARE,
    Fanout,
    RtpBinding,
    RtpTarget,
    StreamFanout,
    UdpPath,
)
from airclass_media.hub import StreamHub
from airclass_media.packets import MediaPacket

from .support import TEST_HOST, async_http_json, async_wait_for, ffmpeg_publish


class Feedback:
    """The test's hand on a WHEP player's video RTCP: the media SSRC and newest
    sequence number seen, and REMB / NACK / PLI sent as the browser would."""

    def __init__(self, player) -> None:
        video = next(t for t in player.pc.getTransceivers() if t.kind == "video")
        self.receiver = video.receiver
        # The test, not aiortc's estimator, says what the viewer can carry.
        self.receiver._RTCRtpReceiver__remote_bitrate_estimator = None
        self.ssrc: int | None = None
        self.highest: int | None = None
        handle = self.receiver._handle_rtp_packet

        async def seen(packet, arrival_time_ms: int) -> None:
            if self.ssrc is None:
                self.ssrc = packet.ssrc
            seq = packet.sequence_number
            newer = self.highest is None or (seq - self.highest) & 0xFFFF < 0x8000
            if packet.ssrc == self.ssrc and newer:
                self.highest = seq
            await handle(packet, arrival_time_ms=arrival_time_ms)

        self.receiver._handle_rtp_packet = seen

    @property
    def rtcp_ssrc(self) -> int:
        return self.receiver._RTCRtpReceiver__rtcp_ssrc

    async def remb(self, bitrate: int) -> None:
        await self.receiver._send_rtcp(
            RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP,
                ssrc=self.rtcp_ssrc,
                media_ssrc=0,
                fci=pack_remb_fci(bitrate, [self.ssrc]),
            )
        )

    async def nack(self, lost: list[int]) -> None:
        await self.receiver._send_rtcp_nack(self.ssrc, lost)

    async def pli(self) -> None:
        await self.receiver._send_rtcp_pli(self.ssrc)


async def viewer_status(node, name: str, token: str) -> dict:
    status, body, _ = await async_http_json(
        "GET",
        f"{node.url}/api/streams/{name}/viewers",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200, body
    assert len(body["viewers"]) == 1, body
    return body["viewers"][0]


async def watch(node, processes, players, name: str, bitrate: str = "1500k", extra=()):
    """Publish `name` (720p30 + AAC) and open one aiortc viewer that decodes frames."""
    token = (await node.atoken(name, user_type="teacher", action="publish"))["token"]
    processes.append(
        ffmpeg_publish(node.rtmp_url(name, token), seconds=120, extra=["-b:v", bitrate, *extra])
    )
    grant = await node.atoken(name)
    player = await players(grant["whep_url"], grant["token"])
    feedback = Feedback(player)
    await player.wait_frames(video=30, audio=20, timeout=30)
    assert feedback.ssrc is not None and feedback.highest is not None
    return token, player, feedback


async def keep_sending(what, seconds: float, every: float = 0.1) -> None:
    """Call `what()` every `every` seconds for `seconds` (RTCP as a browser sends it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await what()
        await asyncio.sleep(every)


# -- audio never waits on video (fan-out level, real hub and UDP) -----------------------
def _video(index: int, keyframe: bool) -> MediaPacket:
    return MediaPacket(
        kind="video",
        pts=index * 33_333,
        dts=index * 33_333,
        data=b"\x00\x00\x00\x01" + bytes([0x65 if keyframe else 0x41]) + bytes(200),
        keyframe=keyframe,
    )


def _audio(index: int) -> MediaPacket:
    return MediaPacket(
        kind="audio", pts=index * 20_000, dts=index * 20_000, data=bytes(80), keyframe=False
    )


def _live_stream(name: str):
    """A hub stream with a publisher and its first keyframe."""
    stream = StreamHub().stream(name)
    stream.attach_publisher("test")
    stream.publish(_video(0, True))
    return stream


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """(sender, receiver): non-blocking UDP sockets on the test address."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((TEST_HOST, 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((TEST_HOST, 0))
    sender.setblocking(False)
    return sender, receiver


def _plain_binding(
    kind: str, payload_type: int, sender: socket.socket, receiver: socket.socket
) -> RtpBinding:
    """An RTP stream from `sender` to `receiver` without SRTP (fan-out level tests)."""
    return RtpBinding(
        kind=kind,
        payload_type=payload_type,
        header_tail=(1234).to_bytes(4, "big"),
        first_byte=0x80,
        protect=lambda data: data,
        path=UdpPath(sender, receiver.getsockname()),
    )


async def test_audio_keeps_flowing_when_the_video_queue_overflows():
    """A burst of video the fan-out cannot keep up with overflows its video queue (which
    then waits for a keyframe); the audio that came with it still reaches the viewer."""
    sender, receiver = _udp_pair()
    hub = StreamHub()
    stream = hub.stream("overflow")
    stream.attach_publisher("test")
    stream.publish(_video(0, True))
    fanout = StreamFanout(stream, lambda *args: None)
    binding = _plain_binding("audio", 111, sender, receiver)
    target = RtpTarget(binding)
    fanout.add(target)
    try:
        # The event loop is busy elsewhere: more video than the queue holds, with audio.
        for i in range(1, FANOUT_QUEUE_PACKETS + 100):
            stream.publish(_video(i, False))
            if i % 3 == 0:
                stream.publish(_audio(i // 3))
        sent = (FANOUT_QUEUE_PACKETS + 99) // 3
        await async_wait_for(lambda: target.packets >= sent, 5, f"{sent} audio packets sent")
        got = 0
        while True:
            try:
                receiver.recv(2048)
            except BlockingIOError:
                break
            got += 1
        assert got == sent
    finally:
        fanout.close()
        binding.path.close()
        receiver.close()


# -- budgets ------------------------------------------------------------------------------
async def test_nack_flood_is_answered_within_the_rtx_budget(node, processes, players):
    """A viewer NACKs its whole history in every RTCP packet: each packet is resent at
    most once per round trip, and RTX bytes stay within RTX_SHARE of its estimate, plus
    RTX_LOST_SHARE for packets NACKed again a round trip later (all of them, here)."""
    token, player, feedback = await watch(node, processes, players, "nackflood")
    remb = 3_000_000
    await feedback.remb(remb)
    before = (await viewer_status(node, "nackflood", token))["media"]["video"]
    started = time.monotonic()

    async def flood() -> None:
        await feedback.remb(remb)
        newest = feedback.highest
        # Ascending, without crossing 0 (aiortc's NACK writer wants that).
        await feedback.nack(list(range(max(newest - 999, 0), newest)))

    await keep_sending(flood, 4.0, every=0.02)
    elapsed = time.monotonic() - started
    after = (await viewer_status(node, "nackflood", token))["media"]["video"]
    assert after["nacks"] - before["nacks"] > 20_000, "the flood reached the node"
    resent = after["retransmits"] - before["retransmits"]
    assert resent > 0, "NACKs within the budget are still answered"
    # Bytes: the payloads resent (at most RTP_PAYLOAD_MAX each) within one window's slack.
    budget = (RTX_SHARE + RTX_LOST_SHARE) * remb / 8 * (elapsed + 1)
    octets = after.get("rtx_octets", resent * 1200) - before.get("rtx_octets", 0)
    assert octets <= budget, f"{octets} RTX bytes in {elapsed:.1f} s, budget {budget:.0f}"
    assert after["rtx_over_budget"] > 0 and after["rtx_repeats_ignored"] > 0
    await player.wait_frames(video=30, timeout=20)  # and the picture goes on


async def test_pli_storm_replays_the_gop_once_per_interval(node, processes, players):
    """PLI every 50 ms: the cached GOP is replayed at most once per
    KEYFRAME_REPLAY_INTERVAL, the requests in between are ignored."""
    token, player, feedback = await watch(node, processes, players, "plistorm")
    before = (await viewer_status(node, "plistorm", token))["media"]["video"]
    started = time.monotonic()
    await keep_sending(feedback.pli, 6.5, every=0.05)
    elapsed = time.monotonic() - started
    after = (await viewer_status(node, "plistorm", token))["media"]["video"]
    replays = after["keyframe_replays"] - before["keyframe_replays"]
    allowed = int(elapsed / KEYFRAME_REPLAY_INTERVAL) + 1
    assert 1 <= replays <= allowed, f"{replays} GOP replays in {elapsed:.1f} s (<= {allowed})"
    assert after["keyframe_requests_ignored"] > 50
    await player.wait_frames(video=30, timeout=20)


# -- the viewer's rung follows its estimate -----------------------------------------------
async def test_low_remb_moves_the_viewer_down_the_ladder_then_to_audio_only(
    node, processes, players
):
    """REMB 700 kbit/s: the viewer moves from the 720p source to the 360p rung (500
    kbit/s; 540p needs 1200) at a keyframe and decodes 640x360 frames; the listing
    says so. REMB 100 kbit/s: video is held, audio keeps coming."""
    token, player, feedback = await watch(node, processes, players, "adapt", bitrate="2500k")
    assert player.stats.height == 720

    async def rung() -> str:
        return (await viewer_status(node, "adapt", token)).get("rung")

    async def tell(bitrate: int) -> None:
        await feedback.remb(bitrate)

    sender = asyncio.ensure_future(keep_sending(lambda: tell(700_000), 60, every=0.25))
    try:
        await async_wait_for(
            lambda: _equals(rung(), "adapt~360p"), 20, "the viewer on the 360p rung"
        )
        await async_wait_for(lambda: player.stats.height == 360, 10, "360p frames decoded")
        status = await viewer_status(node, "adapt", token)
        assert status["estimate_kbps"] <= 700, status
        # The estimate, as a Prometheus histogram: this one viewer under 800 kbit/s.
        text = (await async_http_json("GET", f"{node.url}/metrics"))[1]
        name = "airclass_webrtc_viewer_estimate_bits_per_second_bucket"
        assert f'{name}{{le="800000"}} 1.0' in text, text
        assert f'{name}{{le="500000"}} 0.0' in text, text
        await player.wait_frames(video=60, audio=50, timeout=20)
        assert player.stats.height == 360
        # One continuous RTP stream for the viewer across the switch: time never goes
        # back (the rung's keyframe lags the source; the switch waits for the same pts).
        pts = player.stats.video_pts
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    finally:
        sender.cancel()
    sender = asyncio.ensure_future(keep_sending(lambda: tell(100_000), 60, every=0.25))
    try:
        await async_wait_for(lambda: _equals(rung(), "audio-only"), 10, "audio only")
        await player.wait_frames(video=0, audio=25, timeout=10)  # what was in flight
        video = player.stats.video_frames
        await player.wait_frames(video=0, audio=100, timeout=10)
        assert player.stats.video_frames == video, "video is held, audio goes on"
    finally:
        sender.cancel()


async def test_viewer_of_a_long_gop_source_moves_to_a_rung_within_its_key_interval(
    node, processes, players
):
    """A publisher with a keyframe every 20 s: a viewer whose estimate falls gets the
    360p rung at the rung's next keyframe (every RUNG_KEY_INTERVAL_US between the
    source's), not at the source's next one: within 8 s, time never going back."""
    token, player, feedback = await watch(
        node, processes, players, "longgop", bitrate="2500k", extra=["-g", "600"]
    )
    sender = asyncio.ensure_future(keep_sending(lambda: feedback.remb(700_000), 30, every=0.25))
    try:
        await async_wait_for(lambda: player.stats.height == 360, 8, "360p frames decoded")
        await player.wait_frames(video=30, timeout=10)
        assert player.stats.height == 360
        assert (await viewer_status(node, "longgop", token))["rung"] == "longgop~360p"
        pts = player.stats.video_pts
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
    finally:
        sender.cancel()


async def _equals(coro, value) -> bool:
    return (await coro) == value


async def test_sequence_numbers_stay_contiguous_when_paced_video_is_dropped():
    """A paced viewer goes audio only, then back to video at a keyframe: the packets that
    waited for the pacer are dropped, and the ones that follow take their sequence
    numbers. A gap would be counted lost by the browser and NACKed, and the adaptation
    would read it as a link that cannot carry video (it did: probes failed at 81 %)."""
    sender, receiver = _udp_pair()
    stream = _live_stream("gapless")
    fanout = Fanout()
    binding = _plain_binding("video", 102, sender, receiver)
    target = RtpTarget(binding, estimate=BandwidthEstimate(start_bps=100_000))
    fanout.add(stream, target)
    big = b"\x00\x00\x00\x01\x41" + bytes(12_000)  # 10 packets: 8 now, 2 for the pacer
    try:
        await async_wait_for(lambda: target.backlog is None, 5, "the catch-up sent")
        stream.publish(MediaPacket("video", big, 33_333, 33_333, False))
        await async_wait_for(lambda: target.pending_packets > 0, 5, "packets at the pacer")
        fanout.pause(target)  # audio only: what waits is dropped
        fanout.switch(target, stream)  # video again at the next keyframe
        stream.publish(_video(2, True))
        await async_wait_for(lambda: target.switches >= 1, 5, "video again")
        stream.publish(_video(3, False))
        await async_wait_for(lambda: target.last_pts == 3 * 33_333, 5, "the next frame sent")
        seqs = []
        while True:
            try:
                seqs.append(struct.unpack("!H", receiver.recv(2048)[2:4])[0])
            except BlockingIOError:
                break
    finally:
        fanout.remove(target)
        binding.path.close()
        receiver.close()
    assert len(seqs) >= 1 + 8 + 2, seqs  # the first keyframe, the burst, the next two
    first = seqs[0]
    assert [(s - first) & 0xFFFF for s in seqs] == list(range(len(seqs))), seqs


# -- padding probes --------------------------------------------------------------------
def _drain(receiver: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(receiver.recv(2048))
        except BlockingIOError:
            return out


async def test_padding_is_rtx_padding_only_and_stops_at_a_remb_drop_or_a_nack():
    """A padding probe sends RTP padding-only packets on the RTX stream (P bit, RTX
    payload type, no payload but the padding); the video's sequence numbers are not
    touched. A REMB drop (the browser saw its queue grow) stops it at the next pacer
    tick, and so does a NACK of the video."""
    sender, receiver = _udp_pair()
    stream = _live_stream("padding")
    fanout = Fanout()
    binding = _plain_binding("video", 102, sender, receiver)
    binding.rtx_payload_type = 103
    binding.rtx_header_tail = (5678).to_bytes(4, "big")
    estimate = BandwidthEstimate()
    estimate.on_remb(1_000_000)
    target = RtpTarget(binding, estimate=estimate)
    fanout.add(stream, target)
    try:
        await async_wait_for(lambda: target.backlog is None, 5, "the catch-up sent")
        _drain(receiver)
        video_seq = target.next_seq
        assert target.start_padding(2_000_000, 5.0)
        await async_wait_for(lambda: target.padding_octets > 20_000, 5, "padding sent")
        packets = _drain(receiver)
        assert packets and target.next_seq == video_seq
        for packet in packets:
            assert packet[0] & 0x20 and packet[1] == 103, packet[:2]  # P bit, RTX, no marker
            assert packet[8:12] == (5678).to_bytes(4, "big")  # the RTX SSRC
            assert len(packet) == 12 + fanout_module.PADDING_PACKET_BYTES  # no extensions
            assert packet[-1] == fanout_module.PADDING_PACKET_BYTES  # all of it padding
        rtx_seqs = [struct.unpack("!H", p[2:4])[0] for p in packets]
        assert [(s - rtx_seqs[0]) & 0xFFFF for s in rtx_seqs] == list(range(len(packets)))

        estimate.on_remb(900_000)  # 10 % less: a drop
        await async_wait_for(lambda: not target.padding_until, 2, "stopped by the REMB drop")
        _drain(receiver)

        assert target.start_padding(2_000_000, 5.0)
        sent = target.padding_octets
        await async_wait_for(lambda: target.padding_octets > sent, 5, "padding again")
        stream.publish(_video(1, False))
        await async_wait_for(lambda: target.last_pts == 33_333, 5, "a frame sent")
        assert target.retransmit((target.next_seq - 1) & 0xFFFF)  # the browser NACKs it
        await async_wait_for(lambda: not target.padding_until, 2, "stopped by the NACK")
        sent = target.padding_octets
        _drain(receiver)
        stream.publish(_video(2, False))
        await async_wait_for(lambda: target.last_pts == 2 * 33_333, 5, "the next frame sent")
        assert target.padding_octets == sent and len(_drain(receiver)) == 1

        # On a link that loses 5 % anyway one NACK is chance, not a full link; more
        # NACKs than chance allows of the few packets since the padding started stop it.
        for report in range(21):
            estimate.on_report(5 * report, 100 * report)
        assert estimate.background_loss > 0.03 and not estimate.congested
        assert target.start_padding(2_000_000, 5.0)
        stream.publish(_video(3, False))
        await async_wait_for(lambda: target.last_pts == 3 * 33_333, 5, "a frame sent")
        assert target.retransmit((target.next_seq - 1) & 0xFFFF)
        sent = target.padding_octets
        await async_wait_for(lambda: target.padding_octets > sent + 10_000, 5, "padding on")
        assert target.padding_until
        for frame in (4, 5, 6):
            stream.publish(_video(frame, False))
            await async_wait_for(lambda f=frame: target.last_pts == f * 33_333, 5, "sent")
            assert target.retransmit((target.next_seq - 1) & 0xFFFF)
        await async_wait_for(lambda: not target.padding_until, 2, "stopped by the NACKs")
    finally:
        fanout.remove(target)
        binding.path.close()
        receiver.close()


async def test_a_viewer_that_goes_silent_gets_nothing_until_heard_again(node, processes, players):
    """A viewer that stops sending RTCP (a tab closed without a goodbye: Chromium sends
    none, and ICE consent takes 30 s to expire) no longer gets media a few seconds later,
    so it stops filling its link; heard again, it gets audio at once and video from a
    keyframe, decoded."""
    token, player, feedback = await watch(node, processes, players, "silent")
    # aiortc reports every 0.5-1.5 s: the node learns how often from a few of them.
    await player.wait_frames(video=100, timeout=15)
    audio_packets = [0]
    audio = next(t.receiver for t in player.pc.getTransceivers() if t.kind == "audio")
    handle = audio._handle_rtp_packet

    async def count(packet, arrival_time_ms: int) -> None:
        audio_packets[0] += 1
        await handle(packet, arrival_time_ms=arrival_time_ms)

    audio._handle_rtp_packet = count
    receivers = [t.receiver for t in player.pc.getTransceivers()]
    sends = {receiver: receiver._send_rtcp for receiver in receivers}

    async def mute(packet) -> None:
        pass

    async def silent() -> bool:
        return (await viewer_status(node, "silent", token))["silent"]

    async def heard() -> bool:
        return not await silent()

    for receiver in receivers:
        receiver._send_rtcp = mute
    await async_wait_for(silent, 10, "the node to find the viewer silent")

    def received() -> tuple:
        return feedback.highest, audio_packets[0], player.stats.video_frames

    async def settled() -> tuple | None:
        before = received()  # what was already on its way lands first
        await asyncio.sleep(0.3)
        return before if received() == before else None

    held = await async_wait_for(settled, 5, "nothing more arriving")
    await asyncio.sleep(1.0)  # a second in which a held viewer gets nothing
    assert received() == held

    for receiver, send in sends.items():
        receiver._send_rtcp = send
    await async_wait_for(heard, 10, "the node to hear the viewer again")
    await player.wait_frames(video=30, audio=20, timeout=15)
    assert "nothing heard for" in node.log() and "heard again: its media resumes" in node.log()


async def test_a_viewer_whose_remb_grows_is_padded_then_moved_up(node, processes, players):
    """On the 360p rung with a flat REMB the node pads the viewer's video (RTX padding-
    only packets reach aiortc) and keeps it there: a REMB that does not grow under the
    padding is a link that is full. Then the REMB follows what arrives, as a browser's
    on a free link does (up to 1.1x the rate received): only padding makes it grow, and
    the probe passes 540p, then the source's rate; the viewer moves up to the source
    at a keyframe (its REMB alone never made a rung above 360p "fit"), time never going
    back."""
    token, player, feedback = await watch(node, processes, players, "padprobe", bitrate="2500k")
    padding_seen: list[int] = []
    arrived: deque[tuple[float, int]] = deque()
    handle = feedback.receiver._handle_rtp_packet

    async def count(packet, arrival_time_ms: int) -> None:
        if packet.padding_size and not packet.payload:
            padding_seen.append(packet.ssrc)
        arrived.append((time.monotonic(), len(packet.payload) + packet.padding_size))
        await handle(packet, arrival_time_ms=arrival_time_ms)

    feedback.receiver._handle_rtp_packet = count

    async def status() -> dict:
        return await viewer_status(node, "padprobe", token)

    async def padded() -> bool:
        return (await status())["media"]["video"]["padding_octets"] > 0

    async def flat() -> None:
        await feedback.remb(700_000)

    remb = [700_000]

    async def following() -> None:  # a free link: no over-use, so never lower
        while arrived and arrived[0][0] < time.monotonic() - 1.0:
            arrived.popleft()
        remb[0] = max(remb[0], int(1.1 * 8 * sum(size for _, size in arrived)))
        await feedback.remb(remb[0])

    sender = asyncio.ensure_future(keep_sending(flat, 120, every=0.25))
    try:
        await async_wait_for(lambda: _equals(rung_of(status()), "padprobe~360p"), 20, "360p")
        await async_wait_for(padded, 20, "the viewer padded (a probe of 540p)")
        await async_wait_for(
            lambda: _equals(probing(status()), None), 10, "the probe of a flat REMB over"
        )
        assert (await status())["rung"] == "padprobe~360p"
        assert padding_seen and feedback.ssrc not in padding_seen  # on the RTX stream

        sender.cancel()
        sender = asyncio.ensure_future(keep_sending(following, 120, every=0.25))
        await async_wait_for(lambda: player.stats.height == 720, 40, "720p frames again")
        assert (await status())["rung"] == "padprobe"
        pts = player.stats.video_pts
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts

        async def counted() -> bool:  # /metrics: each step of each probe, by result
            text = (await async_http_json("GET", f"{node.url}/metrics"))[1]
            found = dict(re.findall(r'padding_probes_total\{result="(\w+)"\} ([\d.]+)', text))
            return float(found.get("passed", 0)) >= 2 and float(found.get("failed", 0)) >= 1

        await async_wait_for(counted, 5, "the probes counted in /metrics")
    finally:
        sender.cancel()


async def rung_of(status) -> str | None:
    return (await status)["rung"]


async def probing(status) -> str | None:
    return (await status)["padding_probe"]


def _extensions(packet: bytes) -> dict[int, bytes]:
    """The one-byte-form header extension elements (RFC 8285) of an RTP packet."""
    assert packet[0] & 0x10 and packet[12:14] == b"\xbe\xde", packet[:16]
    data = packet[16 : 16 + 4 * int.from_bytes(packet[14:16], "big")]
    out, i = {}, 0
    while i < len(data):
        if data[i] == 0:
            i += 1
            continue
        size = (data[i] & 0x0F) + 1
        out[data[i] >> 4] = data[i + 1 : i + 1 + size]
        i += 1 + size
    return out


async def test_playout_delay_extension_is_set_in_the_packets_sent_next():
    """The playout-delay element goes after the header's mid and abs-send-time ("no
    wish": 0 to 40.95 s); `set_playout_delay` changes it in the video and the RTX
    packets sent from then on, the other extensions untouched."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    from airclass_media.aiortc_tuning import (
        PLAYOUT_DELAY_URI,
        _header,
        with_playout_delay,
    )

    mid_uri = "urn:ietf:params:rtp-hdrext:sdes:mid"
    abs_uri = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    negotiated = [
        RTCRtpHeaderExtensionParameters(id=4, uri=mid_uri),
        RTCRtpHeaderExtensionParameters(id=2, uri=abs_uri),
        RTCRtpHeaderExtensionParameters(id=12, uri=PLAYOUT_DELAY_URI),
    ]
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpParameters(headerExtensions=negotiated))
    first, tail, abs_at = _header(102, 1234, "1", extensions)
    first, tail, delay_at = with_playout_delay(first, tail, 12)
    _, rtx_tail, _ = _header(103, 5678, "1", extensions)
    _, rtx_tail, rtx_delay_at = with_playout_delay(first, rtx_tail, 12)

    sender, receiver = _udp_pair()
    stream = _live_stream("playout")
    fanout = Fanout()
    binding = RtpBinding(
        kind="video",
        payload_type=102,
        header_tail=tail,
        first_byte=first,
        protect=lambda data: data,
        path=UdpPath(sender, receiver.getsockname()),
        abs_send_time_at=abs_at,
        playout_delay_at=delay_at,
        rtx_payload_type=103,
        rtx_header_tail=rtx_tail,
        rtx_playout_delay_at=rtx_delay_at,
    )
    target = RtpTarget(binding)
    fanout.add(stream, target)
    try:
        await async_wait_for(lambda: target.backlog is None, 5, "the catch-up sent")
        packets = _drain(receiver)
        assert packets
        for packet in packets:
            parsed = RtpPacket.parse(packet, extensions)
            assert parsed.extensions.mid == "1" and parsed.extensions.abs_send_time is not None
            assert _extensions(packet)[12] == fanout_module.playout_delay(0)
            assert _extensions(packet)[12] == bytes.fromhex("000fff")

        assert binding.set_playout_delay(300)
        stream.publish(_video(1, False))
        await async_wait_for(lambda: target.last_pts == 33_333, 5, "a frame sent")
        (packet,) = _drain(receiver)
        assert RtpPacket.parse(packet, extensions).extensions.mid == "1"
        assert _extensions(packet)[12] == bytes.fromhex("01efff")  # 30 x 10 ms, 4095

        assert target.retransmit((target.next_seq - 1) & 0xFFFF)
        got: list[bytes] = []
        await async_wait_for(lambda: got.extend(_drain(receiver)) or got, 5, "the RTX packet")
        (rtx,) = got
        assert rtx[1] & 0x7F == 103 and rtx[8:12] == (5678).to_bytes(4, "big")
        assert _extensions(rtx)[12] == bytes.fromhex("01efff")
    finally:
        fanout.remove(target)
        binding.path.close()
        receiver.close()
