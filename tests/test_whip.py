"""WHIP ingest (issue 13) on real nodes: an aiortc publisher and headless Chromium with
fake devices publishing from /teacher; aiortc WHEP viewers decode what they send."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from .support import (
    TEST_HOST,
    NodeProcess,
    async_http_json,
    ffmpeg_publish,
)

SDP = {"Content-Type": "application/sdp"}


class PatternTrack(VideoStreamTrack):
    """A moving 640x360 picture (aiortc encodes it with its own H.264 encoder)."""

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        shade = (pts // 3000) % 200
        image = np.full((360, 640, 3), shade, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class WhipPublisher:
    """A minimal WHIP client on aiortc (H.264 + Opus)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location = ""

    async def offer(self) -> str:
        video = self.pc.addTransceiver(PatternTrack(), direction="sendonly")
        video.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
        )
        self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def publish(self) -> tuple[int, object, dict]:
        sdp = await self.offer()
        headers = {**SDP, "Authorization": f"Bearer {self.token}"}
        status, body, hdrs = await async_http_json("POST", self.url, sdp.encode(), headers)
        if status == 201:
            self.location = hdrs["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return status, body, hdrs

    async def close(self) -> None:
        await self.pc.close()


@pytest.fixture
async def publishers():
    opened: list[WhipPublisher] = []

    def make(url: str, token: str) -> WhipPublisher:
        publisher = WhipPublisher(url, token)
        opened.append(publisher)
        return publisher

    yield make
    for publisher in opened:
        await publisher.close()


async def stream_status(node: NodeProcess, name: str) -> dict:
    return (await async_http_json("GET", f"{node.url}/api/streams/{name}"))[1]


async def test_whip_publish_errors_and_passthrough(node_factory, players, publishers, processes):
    from airclass_media.ice import restrict_host_addresses

    restrict_host_addresses([TEST_HOST])
    node = node_factory("--workers", "1")
    grant = await node.atoken("whip1", user_type="teacher", action="publish")
    url, token = grant["whip_url"], grant["token"]
    assert url == f"{node.url}/live/whip1/whip"

    status, _, hdrs = await async_http_json("OPTIONS", url)
    assert status == 204 and hdrs["Accept-Post"] == "application/sdp"
    assert hdrs["Access-Control-Allow-Origin"] == "*"

    offer = (await publishers(url, token).offer()).encode()
    bearer = {**SDP, "Authorization": f"Bearer {token}"}
    status, body, _ = await async_http_json(
        "POST", url, offer, {**SDP, "Authorization": "Bearer x"}
    )
    assert status == 401, body
    student = (await node.atoken("whip1"))["token"]
    status, body, _ = await async_http_json(
        "POST", url, offer, {**SDP, "Authorization": f"Bearer {student}"}
    )
    assert status == 403, body
    other = (await node.atoken("other", user_type="teacher", action="publish"))["token"]
    status, body, _ = await async_http_json(
        "POST", url, offer, {**SDP, "Authorization": f"Bearer {other}"}
    )
    assert status == 403, body
    status, body, _ = await async_http_json(
        "POST", url, offer, {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    )
    assert status == 415, body
    for bad in (b"hello", b"v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=fingerprint:x\r\n"):
        status, body, _ = await async_http_json("POST", url, bad, bearer)
        assert status == 400, body
    assert not (await stream_status(node, "whip1"))["live"]

    publisher = publishers(url, token)
    status, answer, hdrs = await publisher.publish()
    assert status == 201, answer
    assert hdrs["Location"].startswith("/live/whip1/whip/")
    assert hdrs["Content-Type"] == "application/sdp" and "a=recvonly" in answer
    assert (await stream_status(node, "whip1"))["live"]

    # A second publisher, over WHIP or RTMP, is refused while the first is live.
    status, body, _ = await publishers(url, token).publish()
    assert status == 409, body
    rtmp = ffmpeg_publish(node.rtmp_url("whip1", token), seconds=30, size="320x240")
    processes.append(rtmp)
    assert await asyncio.to_thread(rtmp.wait, 20) != 0

    # Viewers get the publisher's H.264 (640x360) and Opus.
    read = await node.atoken("whip1")
    player = await players(read["whep_url"], read["token"])
    stats = await player.wait_frames(video=30, audio=20, timeout=30)
    assert (stats.width, stats.height) == (640, 360)
    status = await stream_status(node, "whip1")
    assert (status["width"], status["height"], status["audio_sample_rate"]) == (640, 360, 48000)

    session = f"{node.url}{hdrs['Location']}"
    auth = {"Authorization": f"Bearer {token}"}
    code, info, _ = await async_http_json("GET", session, headers=auth)
    assert code == 200 and info["keyframes"] >= 1 and info["audio_frames"] > 0, info
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    assert (await async_http_json("PATCH", session, b"a=mid:0\r\n", {"Content-Type": "x/y"}))[
        0
    ] == 415
    assert (await async_http_json("PATCH", session, b"a=mid:0\r\n", frag))[0] == 204
    restart = b"a=ice-ufrag:new1\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    assert (await async_http_json("PATCH", session, restart, frag))[0] == 422

    assert (await async_http_json("DELETE", session))[0] == 200
    assert not (await stream_status(node, "whip1"))["live"]
    assert (await async_http_json("DELETE", session))[0] == 404
