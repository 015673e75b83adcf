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


async def test_a_closed_tab_stops_its_media_within_seconds(node, processes, browser):
    """A student who closes the tab: the student page says goodbye (a DELETE that
    outlives the page); a plain WHEP page says nothing, and the node finds it silent (no
    RTCP). Either way the node stops sending within seconds, not when ICE consent
    expires 30 s later (until then a closed tab's 2.5 Mbit/s filled a shared link)."""
    from .chromium_viewer import open_viewer, read_stats
    from .support import async_http_json, async_wait_for

    token = node.token("tabs", user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(node.rtmp_url("tabs", token), seconds=90))
    wait_for(lambda: http_json("GET", f"{node.url}/api/streams/tabs")[1].get("live"), 20, "live")
    teacher = {"Authorization": f"Bearer {token}"}

    async def watching() -> list[dict]:
        status, body, _ = await async_http_json(
            "GET", f"{node.url}/api/streams/tabs/viewers", headers=teacher
        )
        assert status == 200, body
        return body["viewers"]

    student = await browser.new_page()
    await student.goto(f"{node.url}/student?stream=tabs")
    await student.wait_for_function(
        "() => window.airclassPlayer.state === 'playing'", timeout=30_000
    )
    plain = await browser.new_page()
    await plain.goto(f"{node.url}/api/health")
    grant = node.token("tabs")
    await open_viewer(plain, f"{node.url}/live/tabs/whep", grant["token"])

    async def plain_decoding() -> bool:
        return (await read_stats(plain))[0].video.get("framesDecoded", 0) > 60

    await async_wait_for(plain_decoding, 30, "the plain page decoding")

    async def plain_reporting() -> bool:
        # Its REMB comes a few seconds in, after receiver reports: the node has learnt
        # how often this page reports (a tab closed in its first second waits longer).
        viewers = await watching()
        assert len(viewers) == 2, viewers
        return all(v["remb_kbps"] for v in viewers)

    await async_wait_for(plain_reporting, 15, "both pages reporting (REMB)")

    async def student_gone() -> bool:
        return len(await watching()) == 1

    await student.close()
    await async_wait_for(student_gone, 5, "the student page's session gone")
    await plain.close()

    async def held() -> bool:
        viewers = await watching()
        return not viewers or viewers[0]["silent"]

    await async_wait_for(held, 10, "the closed plain page's media held")
    assert "nothing heard for" in node.log()
