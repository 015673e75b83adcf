"""When a viewer's path changes or dies, with real clients in headless Chromium behind a
link of their own (tests/netshape.py): the student page restarts ICE (RFC 9725 section
4.3, PATCH with new ICE credentials) when its path dies; a plain WHEP client whose address
changes under its socket (a NAT rebinding, a phone's new network) is followed by the node;
and the node's answer to a restart PATCH. (The WHEP reference client's own restart() is
in test_interop.py, the studio's WHIP restart in test_whip.py.)

Before: PATCH with new credentials answered 422; a student whose path died waited 3 s,
then opened a new session (5.0-5.3 s without a picture); a plain client whose address
changed never got a picture again (the node kept sending to the old address).
"""

from __future__ import annotations

import re

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


async def test_student_page_restarts_ice_when_its_path_dies(
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

    cut = link.cut_viewer_udp()  # the page's ICE socket among them; HTTP still works
    assert cut, "no UDP socket in the viewer namespace"
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
    await async_wait_for(
        lambda: _counted(node, "airclass_webrtc_ice_restarts_total"), 5, "restart in /metrics"
    )


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
    assert headers["ETag"] == f'"{ufrag}"'  # the session's ICE state (RFC 9725 4.3.1)
    # The same credentials again: a trickle (204), not a second restart; If-Match is the
    # current ETag or "*", else 412 (the ETag of before the restart is stale).
    current = {**SDPFRAG, "If-Match": headers["ETag"]}
    assert (await async_http_json("PATCH", session, restart, current))[0] == 204
    assert (await async_http_json("PATCH", session, restart, SDPFRAG))[0] == 204
    stale = {**SDPFRAG, "If-Match": player.etag}
    assert (await async_http_json("PATCH", session, restart, stale))[0] == 412
    bad = b"a=ice-ufrag:x\r\na=ice-pwd:short\r\n"
    assert (await async_http_json("PATCH", session, bad, SDPFRAG))[0] == 400


async def test_plain_client_follows_when_its_address_changes(
    link, link_node, viewer_browser, processes
):
    """A standards WHEP player with no restart logic of its own (a plain RTCPeerConnection
    page): when its address changes under the same socket, as behind a NAT that rebinds,
    the node follows the pair the browser nominates from the new address."""
    from .chromium_viewer import open_viewer, read_stats

    node = link_node
    await _publish(node, processes, "nat1")
    page = await viewer_browser.new_page()
    await page.goto(f"{node.url}/api/health")
    grant = await node.atoken("nat1")
    await open_viewer(page, f"{node.url}/live/nat1/whep", grant["token"])

    async def decoded() -> int:
        return (await read_stats(page))[0].video.get("framesDecoded", 0)

    await async_wait_for(lambda: _more(decoded, 30), 30, "Chromium decoding", interval=0.2)
    link.move_viewer()
    before = await decoded()
    await async_wait_for(
        lambda: _more(decoded, before + 60), 20, "frames after the move", interval=0.2
    )
    await async_wait_for(
        lambda: _counted(node, "airclass_webrtc_path_moves_total"), 5, "path move in /metrics"
    )


async def _more(count, than: int) -> bool:
    return await count() > than


async def _counted(node, counter: str) -> bool:
    text = (await async_http_json("GET", f"{node.url}/metrics"))[1]
    found = re.search(rf"^{counter} ([\d.e+]+)$", text, re.MULTILINE)
    return found is not None and float(found.group(1)) >= 1
