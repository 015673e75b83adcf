"""Interop: other people's clients and encoder settings against a real node.

(a) The WHEP reference client (npm `whip-whep`, by a co-author of the WHEP draft; vendored
    unchanged under tests/vendor/whip-whep/) plays in headless Chromium from a page served
    by a second HTTP server (another origin: CORS on POST, PATCH and DELETE), trickles its
    candidates with PATCH and ends with stop(): peer connection closed first, then DELETE.
(b) A publisher with H.264 High profile (as OBS sends) and an aiortc viewer that decodes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from .support import TEST_HOST, ffmpeg_publish, free_port, http_json, wait_for

VENDOR = Path(__file__).parent / "vendor" / "whip-whep"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>whep interop</title></head>
<body><video id="video" autoplay muted playsinline></video>
<script type="module">
import { WHEPClient } from "./whep.js";
window.play = async (url, token) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (event) => {
    const video = document.getElementById("video");
    if (!video.srcObject) video.srcObject = event.streams[0] || new MediaStream();
    if (!event.streams[0]) video.srcObject.addTrack(event.track);
  };
  window.whep = new WHEPClient();
  await window.whep.view(pc, url, token);
};
window.framesDecoded = () => {
  const video = document.getElementById("video");
  return video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality().totalVideoFrames : 0;
};
window.ready = true;
</script></body></html>
"""


@pytest.fixture
async def other_origin():
    """A second local HTTP server (another port: another origin) serving the player page."""
    app = web.Application()

    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(_request: web.Request) -> web.Response:
        return web.FileResponse(VENDOR / "whep.js", headers={"Content-Type": "text/javascript"})

    app.router.add_get("/", page)
    app.router.add_get("/whep.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, TEST_HOST, port).start()
    yield f"http://{TEST_HOST}:{port}"
    await runner.cleanup()


def publish(node, stream: str, processes, **kwargs) -> None:
    token = node.token(stream, user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(node.rtmp_url(stream, token), seconds=90, **kwargs))
    wait_for(
        lambda: http_json("GET", f"{node.url}/api/streams/{stream}")[1].get("width"),
        20,
        f"{stream} live",
    )


def viewers(node, stream: str) -> int:
    return http_json("GET", f"{node.url}/api/streams/{stream}")[1].get("viewers", -1)


@pytest.mark.skipif(
    TEST_HOST.startswith("127."),
    reason="Chromium gathers no loopback ICE candidates: run the suite with "
    "scripts/run-tests.sh, which provides a private network namespace with a test address",
)
async def test_whep_reference_client_in_chromium_from_another_origin(
    node, processes, browser, other_origin
):
    publish(node, "interop", processes)
    grant = node.token("interop")
    assert not grant["whep_url"].startswith(other_origin)

    page = await browser.new_page()
    calls: list[tuple[str, int]] = []  # (method, status) of the client's WHEP requests

    def on_response(response) -> None:
        if "/live/" in response.url:
            calls.append((response.request.method, response.status))

    page.on("response", on_response)
    await page.goto(other_origin + "/")
    await page.wait_for_function("window.ready === true", timeout=10_000)
    await page.evaluate(
        "([url, token]) => window.play(url, token)", [grant["whep_url"], grant["token"]]
    )
    await page.wait_for_function(
        "document.getElementById('video').videoWidth === 1280", timeout=30_000
    )
    frames = await page.evaluate("window.framesDecoded()")
    await page.wait_for_function(f"window.framesDecoded() > {frames + 30}", timeout=15_000)

    assert ("POST", 201) in calls
    patches = [status for method, status in calls if method == "PATCH"]
    assert patches and all(status == 204 for status in patches), calls  # trickle
    assert viewers(node, "interop") == 1

    # The client's own ICE restart (RFC 9725 section 4.3: PATCH with new credentials and
    # If-Match: *): 200 with the node's new ones, and the picture goes on over the new
    # ICE generation (Chromium's transport uses the new local ufrag).
    def is_restart(response) -> bool:
        request = response.request
        return request.method == "PATCH" and request.headers.get("if-match") == "*"

    async with page.expect_response(is_restart) as restarted:
        await page.evaluate("window.whep.restart()")
    assert (await restarted.value).status == 200, calls
    await page.wait_for_function(
        """async () => {
            let transport = null;
            const stats = await window.whep.pc.getStats();
            stats.forEach((r) => { if (r.type === "transport") transport = r; });
            return transport && transport.iceState === "connected"
                && transport.iceLocalUsernameFragment === window.whep.iceUsername;
        }""",
        timeout=15_000,
    )
    frames = await page.evaluate("window.framesDecoded()")
    await page.wait_for_function(f"window.framesDecoded() > {frames + 30}", timeout=15_000)
    assert viewers(node, "interop") == 1

    # stop(): the client closes its peer connection, then sends DELETE. Whichever of the
    # two the node sees first, the DELETE of a session that exists(ed) answers 200.
    async with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        await page.evaluate("window.whep.stop()")
    response = await deleted.value
    assert response.status == 200, calls
    wait_for(lambda: viewers(node, "interop") == 0, 10, "the session gone")


async def test_high_profile_publisher_decodes_in_aiortc(node, processes, players):
    # OBS's x264 defaults: High profile, a preset that uses 8x8 transforms and CABAC.
    publish(node, "obs", processes, extra=["-profile:v", "high", "-preset", "veryfast"])
    status = http_json("GET", f"{node.url}/api/streams/obs")[1]
    assert status["video_profile"] == "high", status
    grant = node.token("obs")
    player = await players(grant["whep_url"], grant["token"])
    stats = await player.wait_frames(video=60, audio=50, timeout=30)
    assert (stats.width, stats.height) == (1280, 720)
    assert stats.audio_rate == 48000
