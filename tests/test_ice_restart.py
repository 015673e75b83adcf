"""ICE restart (RFC 9725 section 4.3, PATCH with new ICE credentials) with real clients:
the student page in headless Chromium whose address changes under it (a phone moving
from Wi-Fi to LTE), and the WHEP reference client's own restart().

Before: PATCH with new credentials answered 422 and a student whose address changed
waited for the page's watchdog, then opened a new session from the GOP cache.
"""

from __future__ import annotations

from .support import async_http_json, async_wait_for, ffmpeg_publish

SDPFRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


async def _publish(node, processes, stream: str) -> None:
    token = (await node.atoken(stream, user_type="teacher", action="publish"))["token"]
    processes.append(ffmpeg_publish(node.rtmp_url(stream, token), seconds=120))

    async def live():
        status, body, _ = await async_http_json("GET", f"{node.url}/api/streams/{stream}")
        return status == 200 and body.get("live") and body.get("width")

    await async_wait_for(live, 30, f"{stream} live")


async def _viewer_ids(node, stream: str) -> list[str]:
    teacher = (await node.atoken(stream, user_type="teacher", action="publish"))["token"]
    status, body, _ = await async_http_json(
        "GET",
        f"{node.url}/api/streams/{stream}/viewers",
        headers={"Authorization": f"Bearer {teacher}"},
    )
    assert status == 200, body
    return [v["id"] for v in body["viewers"]]


async def test_student_page_restarts_ice_when_its_address_changes(
    link, link_node, viewer_browser, processes
):
    node = link_node
    await _publish(node, processes, "move1")
    page = await viewer_browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    await page.goto(f"{node.url}/student?stream=move1")
    await page.wait_for_function("() => window.airclassPlayer.state === 'playing'", timeout=30_000)
    sessions = await _viewer_ids(node, "move1")
    assert len(sessions) == 1, sessions

    link.move_viewer()
    frames = await page.evaluate("window.airclassPlayer.framesDecoded()")

    async def player() -> dict:
        return await page.evaluate(
            "({reconnects: window.airclassPlayer.reconnects, state: window.airclassPlayer.state,"
            " restarts: window.airclassPlayer.iceRestarts,"
            " frames: window.airclassPlayer.framesDecoded()})"
        )

    async def played_on() -> bool:
        now = await player()
        # No new session, ever (the page's console says why it made one).
        assert now["reconnects"] == 0, (now, " // ".join(console))
        return now["restarts"] >= 1 and now["frames"] > frames + 60

    await async_wait_for(played_on, 30, "frames after the ICE restart", interval=0.5)
    assert (await player())["restarts"] == 1
    # The same session carried on.
    assert await _viewer_ids(node, "move1") == sessions
    assert not errors


async def test_patch_with_new_credentials_answers_a_fragment(node, processes, players):
    """The node's side of a restart, seen from HTTP: 200, our new credentials and
    candidates as an sdpfrag, a new ETag; the old credentials stay a plain trickle."""
    await _publish(node, processes, "frag1")
    grant = await node.atoken("frag1")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=10, timeout=30)
    session = player.location
    restart = b"a=ice-ufrag:new1\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    status, body, headers = await async_http_json(
        "PATCH", session, restart, {**SDPFRAG, "If-Match": "*"}
    )
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/trickle-ice-sdpfrag")
    lines = body.splitlines()
    ufrag = next(line.split(":", 1)[1] for line in lines if line.startswith("a=ice-ufrag:"))
    assert any(line.startswith("a=ice-pwd:") for line in lines)
    assert any(line.startswith("a=candidate:") for line in lines)
    assert headers["ETag"].endswith(f'.{ufrag}"')
    # The same credentials again: a trickle (204), not a second restart.
    assert (await async_http_json("PATCH", session, restart, SDPFRAG))[0] == 204
    bad = b"a=ice-ufrag:x\r\na=ice-pwd:short\r\n"
    assert (await async_http_json("PATCH", session, bad, SDPFRAG))[0] == 400
