"""RTMP in -> hub -> WHEP out, with real ffmpeg publishers and real aiortc viewers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from .support import (
    TEST_HOST,
    TEST_SECRET,
    async_wait_for,
    ffmpeg_publish,
    http_json,
    stop_process,
    wait_for,
)


def publish(node, stream: str, processes, seconds: float = 60, **kwargs):
    token = node.token(stream, user_type="teacher", action="publish")["token"]
    proc = ffmpeg_publish(node.rtmp_url(stream, token), seconds=seconds, **kwargs)
    processes.append(proc)
    wait_for(lambda: stream_status(node, stream).get("width"), 20, f"{stream} live")
    return proc


def stream_status(node, stream: str) -> dict:
    status, body, _ = http_json("GET", f"{node.url}/api/streams/{stream}")
    return body if status == 200 else {}


async def test_two_streams_decode_720p_video_and_opus(node, processes, players):
    publish(node, "room1", processes)
    # The second publisher sends B-frames (as some encoders do): they must not break it.
    publish(node, "room2", processes, size="640x360", extra=["-x264-params", "bframes=2"])
    watchers = []
    for stream in ("room1", "room2"):
        grant = node.token(stream)
        watchers.append(await players(grant["whep_url"], grant["token"]))
    first, second = [await p.wait_frames(video=45, audio=50, timeout=30) for p in watchers]
    assert (first.width, first.height) == (1280, 720)
    assert (second.width, second.height) == (640, 360)
    assert first.audio_rate == 48000 and second.audio_rate == 48000
    status = stream_status(node, "room1")
    assert status["live"] and status["viewers"] == 1
    assert status["video_profile"] in ("baseline", "main", "high")


async def test_viewer_before_teacher_then_publisher_restart(node, processes, players):
    teacher = node.token("lecture", user_type="teacher", action="publish")
    grant = node.token("lecture")
    player = await players(grant["whep_url"], grant["token"])  # stream announced, not live
    assert not stream_status(node, "lecture")["live"]
    proc = ffmpeg_publish(node.rtmp_url("lecture", teacher["token"]), seconds=60)
    processes.append(proc)
    await player.wait_frames(video=30, timeout=30)

    stop_process(proc)  # the teacher's encoder dies ...
    await async_wait_for(lambda: not stream_status(node, "lecture")["live"], 10, "offline")
    assert player.pc.connectionState == "connected"
    processes.append(ffmpeg_publish(node.rtmp_url("lecture", teacher["token"]), seconds=60))
    await player.wait_frames(video=30, timeout=30)  # ... and the same session plays again
    assert player.pc.connectionState == "connected"
    assert (player.stats.width, player.stats.height) == (1280, 720)


async def test_whep_errors(node, processes):
    publish(node, "err1", processes, size="320x240")
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


async def test_rtmp_refuses_bad_publishers(node, processes):
    student = node.token("guarded")["token"]
    good = node.token("guarded", user_type="teacher", action="publish")["token"]
    other = node.token("elsewhere", user_type="teacher", action="publish")["token"]
    for url in (
        node.rtmp_url("guarded"),  # no token
        node.rtmp_url("guarded", "forged." + good.split(".", 1)[1]),
        node.rtmp_url("guarded", student),  # wrong role
        node.rtmp_url("guarded", other),  # token for another stream
    ):
        proc = ffmpeg_publish(url, seconds=5, size="320x240")
        assert proc.wait(30) != 0, url
        assert not stream_status(node, "guarded").get("live")
    # Token as stream-key suffix (apps that cannot send a query) is accepted ...
    first = ffmpeg_publish(
        f"rtmp://{TEST_HOST}:{node.rtmp_port}/live/guarded.{good}", seconds=60, size="320x240"
    )
    processes.append(first)
    wait_for(lambda: stream_status(node, "guarded").get("live"), 20, "guarded live")
    # ... and a second publisher to a live stream is refused.
    second = ffmpeg_publish(node.rtmp_url("guarded", good), seconds=5, size="320x240")
    assert second.wait(30) != 0
    assert first.poll() is None
    assert "already has a publisher" in node.log()


async def test_rtmp_garbage_does_not_hurt_other_streams(node, processes, players):
    publish(node, "steady", processes, size="640x360")
    grant = node.token("steady")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=10, timeout=30)
    # Not RTMP at all.
    with socket.create_connection((TEST_HOST, node.rtmp_port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\xff" * 4000)
        assert sock.recv(100) == b""  # dropped
    # A valid handshake, then a chunk announcing a huge message.
    with socket.create_connection((TEST_HOST, node.rtmp_port), timeout=5) as sock:
        sock.sendall(b"\x03" + bytes(1536))
        received = b""
        while len(received) < 1 + 2 * 1536:
            received += sock.recv(8192)
        sock.sendall(bytes(1536) + b"\x03" + b"\x00\x00\x00" + b"\xff\xff\xff\x14" + bytes(4))
        wait_for(lambda: sock.recv(100) == b"", 10, "connection dropped")
    await player.wait_frames(video=30, timeout=20)
    assert stream_status(node, "steady")["live"]
    assert "not RTMP" in node.log() and "too large" in node.log()


def test_metrics_and_health(node):
    status, body, _ = http_json("GET", f"{node.url}/api/health")
    assert status == 200 and body["status"] == "ok"
    status, text, _ = http_json("GET", f"{node.url}/metrics")
    assert status == 200 and "airclass_streams_live" in text


async def test_udp_port_range_and_ice_servers(node_factory, processes, players):
    stun = f"stun:{TEST_HOST}:3478"  # nothing listens there: only the Link header is checked
    node = node_factory("--udp-ports", "41000-41009", "--ice-server", stun)
    status, _, headers = http_json("OPTIONS", f"{node.url}/live/x/whep")
    assert status == 204
    assert headers["Link"] == f'<{stun}>; rel="ice-server"'
    publish(node, "ranged", processes, size="320x240")
    grant = node.token("ranged")
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
    node = node_factory("--demo")
    wait_for(lambda: stream_status(node, "demo").get("width") == 1280, 30, "demo live")
    grant = node.token("demo")
    player = await players(grant["whep_url"], grant["token"])
    stats = await player.wait_frames(video=15, audio=25, timeout=30)
    assert (stats.width, stats.height) == (1280, 720)


async def test_picture_loss_is_answered_with_the_cached_gop(node, processes, players):
    publish(node, "lossy", processes, size="640x360")
    grant = node.token("lossy")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=10, timeout=30)
    video = next(t for t in player.pc.getTransceivers() if t.kind == "video")
    section = player.pc.remoteDescription.sdp.split("m=video", 1)[1].split("m=", 1)[0]
    ssrc = int(next(x for x in section.splitlines() if x.startswith("a=ssrc:"))[7:].split()[0])
    await video.receiver._send_rtcp_pli(ssrc)  # what a browser sends when it cannot decode

    def replays() -> float:
        text = http_json("GET", f"{node.url}/metrics")[1]
        line = next(
            x for x in text.splitlines() if x.startswith("airclass_webrtc_keyframe_replays")
        )
        return float(line.split()[-1])

    await async_wait_for(lambda: replays() >= 1, 10, "a keyframe replay")
    await player.wait_frames(video=30, timeout=20)  # and the picture goes on


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
    node = node_factory("--udp-ports", NAT_PORTS, "--ice-public-ip", nat)
    publish(node, "natted", processes, size="320x240")
    grant = node.token("natted")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=15, timeout=30)
    answer = player.pc.remoteDescription.sdp
    assert f" {nat} 4200" in answer  # the public candidate, same port as the host one
