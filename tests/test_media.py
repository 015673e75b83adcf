"""RTMP in -> hub -> WHEP out, with real ffmpeg publishers and real aiortc viewers."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import pytest

from .support import (
    TEST_HOST,
    TEST_SECRET,
    async_http_json,
    async_wait_for,
    ffmpeg_publish,
    http_json,
    stop_process,
    wait_for,
)
from .whep_client import WhepPlayer


async def publish(node, stream: str, processes, seconds: float = 60, **kwargs):
    """An ffmpeg publisher on `stream`, once the node reports the stream's picture size."""
    token = (await node.atoken(stream, user_type="teacher", action="publish"))["token"]
    proc = ffmpeg_publish(node.rtmp_url(stream, token), seconds=seconds, **kwargs)
    processes.append(proc)
    await async_wait_for(lambda: _has(stream_status(node, stream), "width"), 20, f"{stream} live")
    return proc


async def stream_status(node, stream: str) -> dict:
    status, body, _ = await async_http_json("GET", f"{node.url}/api/streams/{stream}")
    return body if status == 200 else {}


async def _has(status, key: str):
    return (await status).get(key)


async def test_two_streams_decode_720p_video_and_opus(node, processes, players):
    await publish(node, "room1", processes)
    # The second publisher sends B-frames (as some encoders do): they must not break it.
    await publish(node, "room2", processes, size="640x360", extra=["-x264-params", "bframes=2"])
    watchers = []
    for stream in ("room1", "room2"):
        grant = await node.atoken(stream)
        watchers.append(await players(grant["whep_url"], grant["token"]))
    first, second = [await p.wait_frames(video=45, audio=50, timeout=30) for p in watchers]
    assert (first.width, first.height) == (1280, 720)
    assert (second.width, second.height) == (640, 360)
    assert first.audio_rate == 48000 and second.audio_rate == 48000
    status = await stream_status(node, "room1")
    assert status["live"] and status["viewers"] == 1
    assert status["video_profile"] in ("baseline", "main", "high")


async def test_viewer_before_teacher_then_publisher_restart(node, processes, players):
    teacher = await node.atoken("lecture", user_type="teacher", action="publish")
    grant = await node.atoken("lecture")
    player = await players(grant["whep_url"], grant["token"])  # stream announced, not live
    assert not (await stream_status(node, "lecture"))["live"]
    proc = ffmpeg_publish(node.rtmp_url("lecture", teacher["token"]), seconds=60)
    processes.append(proc)
    await player.wait_frames(video=30, timeout=30)

    await asyncio.to_thread(stop_process, proc)  # the teacher's encoder dies ...
    await async_wait_for(lambda: _offline(node, "lecture"), 10, "offline")
    assert player.pc.connectionState == "connected"
    processes.append(ffmpeg_publish(node.rtmp_url("lecture", teacher["token"]), seconds=60))
    await player.wait_frames(video=30, timeout=30)  # ... and the same session plays again
    assert player.pc.connectionState == "connected"
    assert (player.stats.width, player.stats.height) == (1280, 720)


async def _offline(node, stream: str) -> bool:
    return not (await stream_status(node, stream))["live"]


def test_whep_errors(node, processes):
    """No viewer runs here: a plain (blocking) test."""
    token = node.token("err1", user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(node.rtmp_url("err1", token), size="320x240"))
    wait_for(lambda: http_json("GET", f"{node.url}/api/streams/err1")[1].get("width"), 20, "live")
    grant = node.token("err1")
    url = grant["whep_url"]
    sdp = {"Content-Type": "application/sdp"}

    def post(body=b"v=0", headers=None, target=url):
        return http_json("POST", target, body, {**sdp, **(headers or {})})[0]

    auth = {"Authorization": f"Bearer {grant['token']}"}
    assert post() == 401  # no token
    status, _, headers = http_json("POST", url, b"v=0", sdp)
    assert headers["Access-Control-Allow-Origin"] == "*"  # errors too: pages on other nodes
    assert post(headers={"Authorization": "Bearer nonsense"}) == 401
    other = node.token("err2")["token"]
    assert post(headers={"Authorization": f"Bearer {other}"}) == 403  # token for another stream
    assert post(b"this is not sdp", auth) == 400
    assert (
        post(b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:sha-256 00\r\n", auth) == 400
    )
    assert http_json("POST", url, b"v=0", {**auth, "Content-Type": "text/plain"})[0] == 415
    unknown = node.token("nosuchstream")
    assert (
        post(headers={"Authorization": f"Bearer {unknown['token']}"}, target=unknown["whep_url"])
        == 404
    )
    assert post(b"v=0\r\n" + b"a=x\r\n" * 200_000, auth) == 413
    status, body, _ = http_json("DELETE", url + "/nosuchsession")
    assert status == 404 and "error" in body
    status, _, headers = http_json("OPTIONS", url)
    assert status == 204 and "application/sdp" in headers["Accept-Post"]
    # Tokens: students cannot get publish tokens; unknown user types are refused.
    status, body, _ = http_json(
        "POST", f"{node.url}/api/token?user_type=student&action=publish&stream=x"
    )
    assert status == 403 and "error" in body
    assert http_json("POST", f"{node.url}/api/token?user_type=root&stream=x")[0] == 400
    assert http_json("GET", f"{node.url}/no/such/route")[0] == 404


def test_publish_needs_teacher_credentials_outside_dev(node_factory):
    node = node_factory(dev=False, env={"AIRCLASS_TEACHER_PASSWORD": "s3cret-pw"})
    query = f"{node.url}/api/token?user_type=teacher&action=publish&stream=c1"
    assert http_json("POST", query)[0] == 401
    assert http_json("POST", query + "&password=wrong")[0] == 401
    read_query = f"{node.url}/api/token?user_type=teacher&action=read&stream=c1"
    assert http_json("POST", read_query)[0] == 401  # the teacher role is never free
    status, body, _ = http_json("POST", query + "&password=s3cret-pw")
    assert status == 200 and body["rtmp_url"].endswith(f"/live/c1?token={body['token']}")


def test_node_refuses_to_start_without_secret(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "AIRCLASS_JWT_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", "serve", "--http-port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "AIRCLASS_JWT_SECRET" in result.stderr


def test_rtmp_refuses_bad_publishers(node, processes):
    """No viewer runs here: a plain (blocking) test. Hostile raw RTMP clients are in
    test_rtmp_hardening.py."""
    student = node.token("guarded")["token"]
    good = node.token("guarded", user_type="teacher", action="publish")["token"]
    other = node.token("elsewhere", user_type="teacher", action="publish")["token"]

    def live() -> bool:
        status, body, _ = http_json("GET", f"{node.url}/api/streams/guarded")
        return status == 200 and body["live"]

    for url in (
        node.rtmp_url("guarded"),  # no token
        node.rtmp_url("guarded", "forged." + good.split(".", 1)[1]),
        node.rtmp_url("guarded", student),  # wrong role
        node.rtmp_url("guarded", other),  # token for another stream
    ):
        proc = ffmpeg_publish(url, seconds=5, size="320x240")
        assert proc.wait(30) != 0, url
        assert not live()
    # Token as stream-key suffix (apps that cannot send a query) is accepted ...
    first = ffmpeg_publish(
        f"rtmp://{TEST_HOST}:{node.rtmp_port}/live/guarded.{good}", seconds=60, size="320x240"
    )
    processes.append(first)
    wait_for(live, 20, "guarded live")
    # ... and a second publisher to a live stream is refused.
    second = ffmpeg_publish(node.rtmp_url("guarded", good), seconds=5, size="320x240")
    assert second.wait(30) != 0
    assert first.poll() is None
    assert "already has a publisher" in node.log()


def test_health_reports_services_and_loop_lag(node):
    status, body, _ = http_json("GET", f"{node.url}/api/health")
    assert status == 200 and body["status"] == "ok" and body["problems"] == []
    assert set(body["services"]) >= {"media", "cluster", "classroom", "recorder"}
    # An idle node's event loop answers well within a second (a blocked loop would not).
    assert isinstance(body["loop_lag_ms"], float | int) and 0 <= body["loop_lag_ms"] < 1000
    assert body["role"] == "standalone" and body["streams_live"] == 0
    status, text, _ = http_json("GET", f"{node.url}/metrics")
    assert status == 200 and "airclass_streams_live" in text


async def test_udp_port_range_and_ice_servers(node_factory, processes, players):
    stun = f"stun:{TEST_HOST}:3478"  # nothing listens there: only the Link header is checked
    node = await asyncio.to_thread(node_factory, "--udp-ports", "41000-41009", "--ice-server", stun)
    status, _, headers = await async_http_json("OPTIONS", f"{node.url}/live/x/whep")
    assert status == 204
    assert headers["Link"] == f'<{stun}>; rel="ice-server"'
    await publish(node, "ranged", processes, size="320x240")
    grant = await node.atoken("ranged")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=10, timeout=30)
    ports = {
        int(line.split()[5])
        for line in player.pc.remoteDescription.sdp.splitlines()
        if line.startswith("a=candidate:") and "typ host" in line
    }
    assert ports and all(41000 <= port <= 41009 for port in ports), ports


def test_expired_token_is_refused(node):
    import time

    import jwt

    expired = jwt.encode(
        {
            "sub": "s1",
            "role": "student",
            "action": "read",
            "stream": "x",
            "exp": int(time.time()) - 10,
        },
        TEST_SECRET,
        algorithm="HS256",
    )
    node.token("x", user_type="teacher", action="publish")  # announce the stream
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {expired}"}
    status, body, _ = http_json("POST", f"{node.url}/live/x/whep", b"v=0", headers)
    assert status == 401 and "expired" in body["error"]


async def test_demo_stream_plays(node_factory, players):
    node = await asyncio.to_thread(node_factory, "--demo")
    await async_wait_for(lambda: _has(stream_status(node, "demo"), "width"), 30, "demo live")
    grant = await node.atoken("demo")
    player = await players(grant["whep_url"], grant["token"])
    stats = await player.wait_frames(video=15, audio=25, timeout=30)
    assert (stats.width, stats.height) == (1280, 720)


class KeyframeWatcher(WhepPlayer):
    """A viewer that can lose its incoming video RTP for a moment (as on a bad network)
    and notes each decoded keyframe. Black box: it only drops packets on its own side."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.keyframes = 0
        self.to_drop = 0
        self.dropped: set[int] = set()
        self.media_ssrc: int | None = None

    async def _consume(self, track) -> None:
        if track.kind == "video":
            recv = track.recv

            async def counting_recv():
                frame = await recv()
                if frame.key_frame:
                    self.keyframes += 1
                return frame

            track.recv = counting_recv
        await super()._consume(track)

    def install_loss(self) -> None:
        receiver = next(t for t in self.pc.getTransceivers() if t.kind == "video").receiver
        handle = receiver._handle_rtp_packet

        async def lossy(packet, arrival_time_ms: int) -> None:
            if self.media_ssrc is None:
                self.media_ssrc = packet.ssrc
            if self.dropped and packet.ssrc != self.media_ssrc:
                return  # retransmissions (RTX) of what was lost never arrive either
            if self.to_drop > 0:
                self.to_drop -= 1
                self.dropped.add(packet.sequence_number)
                return
            if packet.sequence_number in self.dropped:
                return  # nor do retransmissions on the media SSRC
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = lossy

    def lose(self, packets: int) -> None:
        self.to_drop = packets


async def test_lost_picture_comes_back_with_a_keyframe_soon(node, processes):
    """A viewer loses 60 video packets (several frames; their retransmissions too): it must
    decode a keyframe again soon, long before the publisher's next keyframe (GOP 20 s, no
    scene cuts), however the node answers the viewer's picture-loss report."""
    await publish(
        node, "lossy", processes, size="640x360", rate=25,
        extra=["-g", "500", "-x264-params", "scenecut=0"],
    )  # fmt: skip
    grant = await node.atoken("lossy")
    player = KeyframeWatcher(grant["whep_url"], grant["token"])
    try:
        await player.start()
        player.install_loss()
        await player.wait_frames(video=10, timeout=30)
        assert player.keyframes >= 1  # the first picture
        player.lose(60)
        await async_wait_for(lambda: player.to_drop == 0, 10, "60 packets lost")
        keyframes = player.keyframes
        await async_wait_for(
            lambda: player.keyframes > keyframes, 8, "a decoded keyframe after the loss"
        )
        await player.wait_frames(video=30, timeout=20)  # and the picture goes on
    finally:
        await player.close()


PUBLIC_IP = "10.77.0.99"
NAT_PORTS = "42000-42009"


@pytest.fixture
def nat():
    """A 1:1 NAT in the test's network namespace: PUBLIC_IP -> TEST_HOST for the node's
    media ports, whose direct address is unreachable, as behind Docker or a cloud NAT."""
    if TEST_HOST.startswith("127.") or not shutil.which("nft") or os.geteuid() != 0:
        pytest.skip("needs scripts/run-tests.sh's private network namespace, root and nft")
    rules = f"""
table ip airclass_nat_test {{
  chain out_nat {{ type nat hook output priority -100; ip daddr {PUBLIC_IP} dnat to {TEST_HOST}; }}
  chain out_filter {{
    type filter hook output priority 0;
    ip daddr {TEST_HOST} udp dport {NAT_PORTS} ct status dnat accept;
    ip daddr {TEST_HOST} udp dport {NAT_PORTS} drop;
  }}
}}
"""
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    yield PUBLIC_IP
    subprocess.run(["nft", "delete", "table", "ip", "airclass_nat_test"], check=False)


async def test_node_behind_nat_is_reached_through_its_public_address(
    node_factory, processes, players, nat
):
    node = await asyncio.to_thread(node_factory, "--udp-ports", NAT_PORTS, "--ice-public-ip", nat)
    await publish(node, "natted", processes, size="320x240")
    grant = await node.atoken("natted")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=15, timeout=30)
    answer = player.pc.remoteDescription.sdp
    assert f" {nat} 4200" in answer  # the public candidate, same port as the host one
