"""Every page in headless Chromium at a laptop (1280x800) and a phone (390x844) size: no
horizontal overflow, the right parts shown and hidden before and after joining, Korean
text drawn with a real CJK font, a favicon (issue 13, "Pages")."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from .classroom_support import PASSWORD, add_teacher
from .support import NodeProcess, async_http_json

VIEWPORTS = {"laptop": (1280, 800, "en-US"), "phone": (390, 844, "ko-KR")}
PAGES = [
    "/",
    "/student?stream=pages",
    "/join",
    "/teacher",
    "/login",
    "/monitor",
    "/vod",
    "/dashboard",
]
NO_OVERFLOW = "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
# A CJK font draws two different Hangul syllables differently; without one both are the
# same "missing glyph" box.
HANGUL_DRAWN = """() => {
  const c = document.createElement("canvas"); c.width = 48; c.height = 48;
  const g = c.getContext("2d");
  const draw = (ch) => {
    g.clearRect(0, 0, 48, 48); g.fillStyle = "#000";
    g.font = "32px " + getComputedStyle(document.body).fontFamily;
    g.fillText(ch, 4, 38);
    return Array.from(g.getImageData(0, 0, 48, 48).data).join(",");
  };
  return draw("한") !== draw("글");
}"""


@pytest.fixture
def pages_node(tmp_path):
    node = NodeProcess(tmp_path, "--workers", "1", dev=False, name="pages")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start()
    yield node
    node.stop()


async def sign_in(page, base: str) -> None:
    await page.goto(base + "/teacher")
    await page.wait_for_url("**/login**")
    await page.fill("#login-username", "kim")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/teacher")


async def check_page(page, path: str, shots, label: str) -> None:
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(shots / f"{label}{re.sub(r'[^a-z]+', '-', path)}.png"))
    width = await page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert await page.evaluate(NO_OVERFLOW), f"{path} overflows at {label}: {width}"


@pytest.mark.parametrize("size", list(VIEWPORTS))
async def test_pages_fit_and_show_the_right_parts(pages_node, browser, tmp_path, size):
    width, height, locale = VIEWPORTS[size]
    shots = tmp_path / "shots"
    shots.mkdir()
    base = pages_node.url
    context = await browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ko = locale.startswith("ko")

    # The teacher opens a session (the studio and the roster appear).
    await sign_in(page, base)
    await page.fill("#t-title", "Pages class")
    await page.fill("#t-stream", "pages")
    await page.click("#t-create-submit")
    await expect(page.locator("#t-code")).to_have_text(re.compile(r"^[A-Z2-9]{6,8}$"))
    code = await page.locator("#t-code").text_content()
    await expect(page.locator("#t-studio")).to_be_visible()
    await expect(page.locator("#t-stream-state")).to_have_text("오프라인" if ko else "offline")
    # The roster's last columns are reachable inside its card (scrolling if narrow).
    await page.evaluate("() => document.querySelector('.table-scroll').scrollLeft = 1e6")
    confusion = page.locator(".cls-roster th[data-i18n='t.confusion']")
    await confusion.scroll_into_view_if_needed()
    box, frame = await confusion.bounding_box(), await page.locator("#t-live").bounding_box()
    assert box["x"] + box["width"] <= frame["x"] + frame["width"], (box, frame)
    await check_page(page, "/teacher", shots, size)

    for path in PAGES:
        if path == "/teacher":
            continue
        await page.goto(base + path)
        await check_page(page, path, shots, size)
        if ko:
            assert await page.evaluate(HANGUL_DRAWN), "Korean text is drawn as missing glyphs"
            assert await page.locator(".lang-toggle").text_content() == "English"

    # /monitor opened directly explains where monitor links come from.
    await page.goto(base + "/monitor")
    await expect(page.locator("#m-help")).to_be_visible()
    await expect(page.locator("#m-help")).to_contain_text("모니터 링크" if ko else "Monitor link")

    # The navigation keeps the language button on the bar's line (no vertical stacking).
    toggle = await page.locator(".lang-toggle").bounding_box()
    assert toggle["height"] < 60 and toggle["width"] > toggle["height"]

    # A student page before joining: the join form in a card, no room.
    student = await context.new_page()
    student.on("pageerror", lambda exc: errors.append(str(exc)))
    await student.goto(base + "/student?stream=pages")
    await expect(student.locator("#cls-join")).to_be_visible()
    await expect(student.locator("#cls-room")).to_be_hidden()
    assert await student.evaluate("() => !!document.getElementById('cls-join').closest('.card')"), (
        "join form outside any card"
    )
    # The stream is private (a class session's): the visitor is told to join, not "unknown".
    await expect(student.locator("#state-text")).to_contain_text("참여 코드" if ko else "join it")
    await expect(student.locator("#live-badge")).to_have_text("오프라인" if ko else "offline")
    # A typo in the stream name is an unknown stream, not a private class.
    await student.goto(base + "/student?stream=pagez")
    unknown = "없는 방송" if ko else "unknown stream"
    await expect(student.locator("#live-badge")).to_have_text(unknown)
    await expect(student.locator("#state-text")).to_contain_text(
        "이 이름의 방송이" if ko else "no stream with this name"
    )

    # Joining by code: the form goes away, the chat shows beside (laptop) or below (phone).
    await student.goto(base + "/join")
    await student.fill("#cls-code", code.lower())
    await student.fill("#cls-name", "Minji")
    await student.click("#cls-join-submit")
    await student.wait_for_url("**/student?stream=pages&session=*")
    await expect(student.locator("#cls-status")).to_have_text("연결됨" if ko else "connected")
    await expect(student.locator("#cls-join")).to_be_hidden()
    await expect(student.locator("#cls-room")).to_be_visible()
    await expect(student.locator(".side-join-title")).to_be_hidden()
    await check_page(student, "/student-joined", shots, size)
    video = await student.locator(".video-wrap").bounding_box()
    chat = await student.locator("#cls-chat").bounding_box()
    if size == "laptop":
        assert chat["x"] >= video["x"] + video["width"], (video, chat)
    else:
        assert chat["y"] >= video["y"] + video["height"], (video, chat)
        unmute = await student.locator("#unmute").bounding_box()
        assert unmute["width"] * unmute["height"] < 0.08 * video["width"] * video["height"]

    # The joined student's badge follows the private stream (offline, not unknown).
    await expect(student.locator("#live-badge")).to_have_text("오프라인" if ko else "offline")

    # The favicon is served; no page asked for a missing one.
    status, _, headers = await async_http_json("GET", base + "/static/favicon.svg")
    assert status == 200 and headers["Content-Type"].startswith("image/svg")
    assert "favicon" not in pages_node.log()
    assert not errors, errors
    await context.close()


async def test_unknown_stream_is_not_offline(node, browser):
    """Every stream is public under --dev: a name the node never heard of is "unknown",
    an announced one without a publisher "offline"."""
    await node.atoken("announced", user_type="teacher", action="publish")
    page = await browser.new_page(locale="en-US")
    await page.goto(node.url + "/student?stream=nosuchstream")
    await expect(page.locator("#live-badge")).to_have_text("unknown stream")
    await expect(page.locator("#state-text")).to_contain_text("no stream with this name")
    await page.goto(node.url + "/student?stream=announced")
    await expect(page.locator("#live-badge")).to_have_text("offline")
    await expect(page.locator("#state-text")).to_contain_text("Waiting for the teacher")
