"""Headless Chromium plays the student page over WHEP (real browser WebRTC)."""

from __future__ import annotations

import pytest

from .support import TEST_HOST, ffmpeg_publish, http_json, wait_for

pytestmark = [
    pytest.mark.skipif(
        TEST_HOST.startswith("127."),
        reason="Chromium gathers no loopback ICE candidates: run the suite with "
        "scripts/run-tests.sh, which provides a private network namespace with a test address",
    ),
]


async def test_student_page_plays_720p(node, processes, browser):
    token = node.token("class1", user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(node.rtmp_url("class1", token), seconds=90))
    wait_for(lambda: http_json("GET", f"{node.url}/api/streams/class1")[1].get("live"), 20, "live")

    page = await browser.new_page(locale="ko-KR")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{node.url}/student?stream=class1")
    await page.wait_for_function(
        "() => document.getElementById('video').videoWidth === 1280", timeout=30_000
    )
    frames = await page.evaluate("window.airclassPlayer.framesDecoded()")
    await page.wait_for_function(
        f"() => window.airclassPlayer.framesDecoded() > {frames + 30}", timeout=15_000
    )
    # The page's own watchdog (1 s tick) turns frames into the "playing" state.
    # Predicates are functions, not expressions: Playwright polls an expression with eval(),
    # which the page's Content-Security-Policy forbids.
    await page.wait_for_function("() => window.airclassPlayer.state === 'playing'", timeout=5_000)
    assert await page.text_content("#live-badge") == "방송 중"  # Korean UI for ko-KR
    await page.click(".lang-toggle")
    assert await page.text_content("#live-badge") == "LIVE"
    assert not errors
