"""WHIP ingest (issue 13) on real nodes: an aiortc publisher and headless Chromium with
fake devices publishing from /teacher; aiortc WHEP viewers decode what they send."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from playwright.async_api import expect

from airclass_media.aiortc_tuning import media_ssrc

from .classroom_support import PASSWORD, add_teacher
from .conftest import CHROMIUM, CHROMIUM_ARGS
from .support import (
    TEST_HOST,
    NodeProcess,
    async_http_json,
    async_wait_for,
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


@pytest.mark.parametrize("workers", ["1", "2"])  # viewers in the node, or in media workers
async def test_whip_publish_errors_and_passthrough(
    node_factory, players, publishers, processes, workers
):
    from airclass_media.ice import restrict_host_addresses

    restrict_host_addresses([TEST_HOST])
    node = node_factory("--workers", workers)
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
    # ICE restart (RFC 9725): 200 with the node's new credentials.
    status, answer, _ = await async_http_json("PATCH", session, restart, frag)
    assert status == 200 and "a=ice-ufrag:" in answer, answer

    assert (await async_http_json("DELETE", session))[0] == 200
    assert not (await stream_status(node, "whip1"))["live"]
    assert (await async_http_json("DELETE", session))[0] == 404


#: Chromium's fake camera and microphone, accepted without a prompt.
FAKE_DEVICES = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
#: The node asks the publisher for a keyframe this rarely, so a keyframe soon after a
#: viewer's PLI can only be the answer to it.
LONG_GOP_SECONDS = 60


@pytest.fixture
def studio_node(tmp_path):
    env = {"AIRCLASS_WHIP_KEYFRAME_INTERVAL": str(LONG_GOP_SECONDS)}
    # Viewers in media workers: their PLI travels to the node over the local relay.
    node = NodeProcess(tmp_path, "--workers", "2", env=env, dev=False, name="studio")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start()
    yield node
    node.stop()


@pytest.fixture
async def publishing_browser(studio_node):
    """Chromium with fake capture devices (its own launch: conftest's shared flags stay).
    Capture needs a secure context: the test node's http origin is treated as one."""
    if TEST_HOST.startswith("127."):
        pytest.skip("Chromium gathers no loopback ICE candidates: use scripts/run-tests.sh")
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 - one stat at set-up
        pytest.skip("chromium not installed (scripts/install-system.sh installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                *CHROMIUM_ARGS,
                *FAKE_DEVICES,
                f"--unsafely-treat-insecure-origin-as-secure={studio_node.url}",
            ],
        )
        yield browser
        await browser.close()


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


async def test_teacher_goes_live_from_the_browser(studio_node, publishing_browser, players):
    node = studio_node
    page = await publishing_browser.new_page(locale="en-US")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(node.url + "/teacher")
    await page.wait_for_url("**/login**")
    await page.fill("#login-username", "kim")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/teacher")
    await page.fill("#t-title", "Studio class")
    await page.fill("#t-stream", "studio")
    await page.click("#t-create-submit")
    await expect(page.locator("#t-studio")).to_be_visible()
    teacher = await page.evaluate("() => sessionStorage.getItem('airclass.teacher_token')")
    auth = {"Authorization": f"Bearer {teacher}"}

    # Camera + microphone at 720p, preview, then live.
    await page.select_option("#s-source", "camera")
    await page.select_option("#s-quality", "720")
    await page.click("#s-preview-btn")
    await expect(page.locator("#s-error")).to_be_empty()
    await page.wait_for_function("() => document.getElementById('s-preview').videoWidth > 0")
    await page.click("#s-go")
    await page.wait_for_function("() => window.airclassStudio.state === 'live'", timeout=20_000)
    await expect(page.locator("#s-state")).to_have_text("LIVE")
    await expect(page.locator("#t-stream-state")).to_have_text("LIVE", timeout=10_000)
    session_url = node.url + await page.evaluate(
        "() => new URL(window.airclassStudio.location).pathname"
    )

    async def whip_status() -> dict:
        status, body, _ = await async_http_json("GET", session_url, headers=auth)
        assert status == 200, body
        return body

    await async_wait_for(lambda: whip_status_ok(whip_status), 20, "H.264 and Opus from Chromium")

    # Record it while an aiortc viewer decodes the browser's H.264 and Opus.
    json_auth = {**auth, "Content-Type": "application/json"}
    body = json.dumps({"stream": "studio"}).encode()
    status, rec, _ = await async_http_json(
        "POST", node.url + "/api/recording/start", body, json_auth
    )
    assert status == 201, rec
    status, grant, _ = await async_http_json(
        "POST", node.url + "/api/token?user_type=teacher&action=read&stream=studio", headers=auth
    )
    assert status == 200, grant
    player = await players(grant["whep_url"], grant["token"])
    stats = await player.wait_frames(video=60, audio=50, timeout=30)
    assert stats.width >= 320 and stats.height >= 180

    # A viewer's PLI reaches Chromium's encoder: a new keyframe, long before the
    # node's own next request (LONG_GOP_SECONDS).
    before = await whip_status()
    receiver = next(t.receiver for t in player.pc.getTransceivers() if t.kind == "video")
    sent = {"at": 0.0}

    async def answered() -> bool:
        now = await whip_status()
        if now["keyframe_requests"]["viewer"] > before["keyframe_requests"]["viewer"] and (
            now["keyframes"] > before["keyframes"]
        ):
            return True
        if time.monotonic() - sent["at"] > 1.2:  # the fan-out takes one per second per viewer
            sent["at"] = time.monotonic()
            await receiver._send_rtcp_pli(media_ssrc(receiver))
        return False

    await async_wait_for(answered, 8, "a keyframe answering the viewer's PLI", interval=0.1)
    await player.wait_frames(video=30, timeout=15)

    # An ICE restart of the publish (RFC 9725 PATCH, as the studio does when its path
    # dies): Chromium's transport moves to the new credentials, the viewer keeps decoding.
    await page.evaluate(
        "() => AirIceRestart(window.airclassStudio.pc, window.airclassStudio.location)"
    )
    await page.wait_for_function(
        """async () => {
            const pc = window.airclassStudio.pc;
            const ufrag = pc.localDescription.sdp.match(/a=ice-ufrag:(.*)\\r\\n/)[1];
            let transport = null;
            (await pc.getStats()).forEach((r) => { if (r.type === "transport") transport = r; });
            return transport && transport.iceState === "connected"
                && transport.iceLocalUsernameFragment === ufrag;
        }""",
        timeout=15_000,
    )
    await player.wait_frames(video=30, timeout=15)

    # The recording plays: H.264 video and AAC audio.
    status, done, _ = await async_http_json(
        "POST", node.url + "/api/recording/stop", body, json_auth
    )
    assert status == 200, done
    rid = rec["id"]

    async def complete():
        _, doc, _ = await async_http_json("GET", f"{node.url}/api/recording/{rid}", headers=auth)
        return doc.get("status") == "complete"

    await async_wait_for(complete, 20, "final MP4")
    probe = await asyncio.to_thread(ffprobe, node.data_dir / "recordings" / rid / "recording.mp4")
    kinds = {s["codec_type"]: s for s in probe["streams"]}
    assert kinds["video"]["codec_name"] == "h264", probe
    assert kinds["audio"]["codec_name"] == "aac", probe
    assert float(probe["format"]["duration"]) >= 2.0, probe

    # Stop: the stream goes offline, viewers stay connected for the next go-live.
    await page.click("#s-stop")
    await expect(page.locator("#s-state")).to_have_text("not live")
    await async_wait_for(
        lambda: stream_is(node, "studio", auth, live=False), 10, "stream offline after stop"
    )
    assert not errors, errors


async def whip_status_ok(status_of) -> bool:
    status = await status_of()
    return status["keyframes"] >= 1 and status["video_frames"] > 10 and status["audio_frames"] > 10


async def stream_is(node: NodeProcess, name: str, auth: dict, live: bool) -> bool:
    _, body, _ = await async_http_json("GET", f"{node.url}/api/streams/{name}", headers=auth)
    return body.get("live") is live
