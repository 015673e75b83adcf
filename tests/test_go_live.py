"""Going live as a teacher does it: a stream key of one's own that lasts until rotated
(OBS publishes with Server + Stream key; a rotated key is refused), the "How to go live"
panel with copy buttons and QR codes a phone app scans, and the projector join screen."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from .classroom_support import PASSWORD, Api, add_teacher
from .support import NodeProcess, ffmpeg_publish, http_json, wait_for


@pytest.fixture(scope="module")
def keyed_node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golive")
    node = NodeProcess(tmp, dev=False, name="golive")
    for teacher in ("kim", "lee"):
        assert add_teacher(node.data_dir, teacher).returncode == 0
    node.start()
    yield node
    node.stop()


@pytest.fixture
async def api(keyed_node):
    async with aiohttp.ClientSession() as http:
        yield Api(http, keyed_node.url)


def live(node: NodeProcess, stream: str, token: str) -> bool:
    """Whether the stream is live (asked as its owner: the stream is private)."""
    headers = {"Authorization": f"Bearer {token}"}
    status, body, _ = http_json("GET", f"{node.url}/api/streams/{stream}", headers=headers)
    assert status == 200, body
    return bool(body.get("live"))


def refused(proc: subprocess.Popen, node: NodeProcess, stream: str, token: str) -> bool:
    """ffmpeg gave up (the node refused the publish) and the stream never went live."""
    code = proc.wait(30)
    return code != 0 and not live(node, stream, token)


async def go_live(api: Api, token: str, stream: str) -> dict:
    session = await api.ok(
        "POST", "/api/sessions", {"title": "Keys", "stream": stream}, token=token
    )
    return await api.ok("GET", f"/api/sessions/{session['session_id']}/go-live", token=token)


async def test_stream_key_publishes_until_rotated(api: Api, keyed_node, processes):
    kim = await api.login("kim")
    details = await go_live(api, kim, "keyed")
    assert details["server"].endswith("/live") and details["server"].startswith("rtmp://")
    assert details["stream_key"].startswith("keyed.sk_")
    assert details["rtmp_url"] == f"{details['server']}/{details['stream_key']}"
    assert details["larix_url"].startswith("larix://set/v1?conn[][url]=")
    assert quote(details["rtmp_url"], safe="") in details["larix_url"]
    # The same key on every visit: it lasts (no expiry) until rotated.
    assert (await go_live(api, kim, "keyed"))["stream_key"] == details["stream_key"]

    # OBS: Server + "/" + Stream key.
    obs = ffmpeg_publish(f"{details['server']}/{details['stream_key']}", seconds=60)
    processes.append(obs)
    wait_for(lambda: live(keyed_node, "keyed", kim), 20, "published with the stream key")
    obs.terminate()
    obs.wait(10)
    wait_for(lambda: not live(keyed_node, "keyed", kim), 20, "publisher gone")

    # Another teacher's key cannot take kim's stream.
    lee = await api.login("lee")
    lee_key = (await go_live(api, lee, "lees-room"))["stream_key"].split(".", 1)[1]
    intruder = ffmpeg_publish(f"{details['server']}/keyed.{lee_key}", seconds=5)
    processes.append(intruder)
    assert refused(intruder, keyed_node, "keyed", kim)

    rotated = await api.ok("POST", "/api/stream-key/rotate", token=kim)
    assert rotated["rotated"]
    old = ffmpeg_publish(details["rtmp_url"], seconds=5)
    processes.append(old)
    assert refused(old, keyed_node, "keyed", kim)
    fresh = await go_live(api, kim, "keyed")
    assert fresh["stream_key"] != details["stream_key"]
    new = ffmpeg_publish(f"{fresh['server']}/keyed?key={fresh['stream_key'].split('.', 1)[1]}")
    processes.append(new)
    wait_for(lambda: live(keyed_node, "keyed", kim), 20, "published with the new key")

    # Only a signed-in teacher gets keys.
    status, _ = await api.call("POST", "/api/stream-key/rotate")
    assert status == 401


def decode_qr(png: Path) -> str:
    out = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(png)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("zbarimg") is None, reason="zbar-tools not installed")
async def test_go_live_panel_and_projector_qr_codes(
    api: Api, keyed_node, browser, tmp_path, processes
):
    context = await browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(keyed_node.url + "/login?next=/teacher")
    await page.fill("#login-username", "kim")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/teacher")
    await page.fill("#t-title", "수학")
    await page.fill("#t-stream", "panel")
    await page.click("#t-create-submit")
    await page.wait_for_function("() => document.getElementById('t-code').textContent.length === 8")
    code = await page.text_content("#t-code")
    # Plain HTTP: the studio says at once that browser capture needs HTTPS.
    await page.wait_for_function(
        "() => document.getElementById('s-info').textContent.includes('HTTPS')"
    )
    assert await page.is_disabled("#s-go")
    await page.click("#t-publish-info")
    await page.wait_for_function(
        "() => document.getElementById('g-qr-larix').naturalWidth > 0"
        " && document.getElementById('g-qr-rtmp').naturalWidth > 0"
    )
    server = await page.text_content("#g-server")
    key = await page.text_content("#g-key")
    assert server.startswith("rtmp://") and key.startswith("panel.sk_")
    assert await page.text_content("#g-panel h3") == "OBS 등 인코더 (RTMP)"
    assert (await page.text_content("#g-whip-token")).count(".") == 2  # a JWT
    # OBS goes live with what the panel shows: the studio says so too.
    processes.append(ffmpeg_publish(f"{server}/{key}", seconds=60))
    await page.wait_for_function(
        "() => document.getElementById('s-state').textContent"
        " === '인코더(OBS·휴대폰 앱)로 방송 중'",
        timeout=20_000,
    )
    await page.screenshot(path=tmp_path / "golive-1280.png", full_page=True)
    shot = tmp_path / "larix.png"
    await page.locator("#g-qr-larix").screenshot(path=shot)
    larix = decode_qr(shot)
    assert larix.startswith("larix://set/v1?conn[][url]=")
    assert quote(f"{server}/{key}", safe="") in larix
    await page.locator("#g-qr-rtmp").screenshot(path=shot)
    assert decode_qr(shot) == f"{server}/{key}"
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=tmp_path / "golive-390.png", full_page=True)
    overflow = await page.evaluate("document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow

    # The projector screen: the code, big, and a QR of the join link.
    for width, height in ((1280, 800), (390, 844)):
        screen = await context.new_page()
        screen.on("pageerror", lambda exc: errors.append(str(exc)))
        await screen.set_viewport_size({"width": width, "height": height})
        await screen.goto(f"{keyed_node.url}/present?code={code}")
        await screen.wait_for_function("() => document.getElementById('p-qr').naturalWidth > 0")
        assert (await screen.text_content("#p-code")).strip() == code
        assert await screen.text_content("h1") == "수업에 참여하세요"
        await screen.screenshot(path=tmp_path / f"present-{width}.png")
        await screen.locator("#p-qr").screenshot(path=shot)
        assert decode_qr(shot) == f"{keyed_node.url}/join?code={code}"
        await screen.close()
    status, _, _ = http_json("GET", f"{keyed_node.url}/present?code=<script>")
    assert status == 400
    assert not errors
    await context.close()
    print("screenshots in", tmp_path)
