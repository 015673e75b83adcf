"""Attendance follows the socket: a student who closes the tab (a clean WebSocket close),
drops off the network (an abrupt TCP reset) or goes silent is shown offline to the teacher
and on the dashboard, and the present time stops counting."""

from __future__ import annotations

import asyncio
import socket
import struct

import aiohttp
import pytest

from .classroom_support import WS, Api, add_teacher
from .support import NodeProcess


@pytest.fixture(scope="module")
def presence_node(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("presence")
    node = NodeProcess(tmp, dev=False, name="presence")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start()
    yield node
    node.stop()


@pytest.fixture
async def api(presence_node):
    async with aiohttp.ClientSession() as http:
        yield Api(http, presence_node.url)


async def online_in_dashboard(api: Api, token: str, sid: str, student_id: str) -> bool:
    data = await api.ok("GET", f"/api/dashboard/session/{sid}/students", token=token)
    rows = data["students"] if isinstance(data, dict) else data
    return next(s for s in rows if s["student_id"] == student_id)["online"]


async def wait_offline(api: Api, teacher: WS, token: str, sid: str, student_id: str) -> None:
    await teacher.wait(
        "presence",
        lambda m: m["presence"]["student_id"] == student_id and not m["presence"]["online"],
        timeout=15,
    )
    for _ in range(100):
        if not await online_in_dashboard(api, token, sid, student_id):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the dashboard still shows the student present")


async def joined_student(api: Api, presence_node, label: str):
    token = await api.login("kim")
    body = {"title": "Presence", "stream": label}
    data = await api.ok("POST", "/api/sessions", body, token=token)
    sid = data["session_id"]
    student = await api.join(data["join_code"], label)
    teacher = await WS.connect(api.http, presence_node.url, sid, token, "teacher")
    return token, sid, student, teacher


async def report_presence_twice(ws: WS, teacher: WS, student_id: str) -> None:
    """What a student page does: a presence report at once, then every 5 s (changed here
    so that the second one is stored as well)."""
    await ws.send(type="presence", playing=True, visible=True)
    await teacher.wait(
        "presence",
        lambda m: m["presence"]["student_id"] == student_id and m["presence"].get("playing"),
    )
    await ws.send(type="presence", playing=True, visible=False)


async def test_clean_close_after_presence_reports_is_offline(api: Api, presence_node):
    token, sid, student, teacher = await joined_student(api, presence_node, "clean")
    ws = await WS.connect(api.http, presence_node.url, sid, student["token"], "student")
    await report_presence_twice(ws, teacher, student["student_id"])
    assert await online_in_dashboard(api, token, sid, student["student_id"])
    await ws.close()  # the tab closes: a clean WebSocket close handshake
    await wait_offline(api, teacher, token, sid, student["student_id"])
    await teacher.close()


async def test_abrupt_drop_after_presence_reports_is_offline(api: Api, presence_node):
    token, sid, student, teacher = await joined_student(api, presence_node, "abrupt")
    ws = await WS.connect(api.http, presence_node.url, sid, student["token"], "student")
    await report_presence_twice(ws, teacher, student["student_id"])
    # Wi-Fi gone: the TCP connection is reset with no close frame.
    sock: socket.socket = ws.ws._response.connection.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.ws._response.connection.transport.abort()
    await wait_offline(api, teacher, token, sid, student["student_id"])
    await teacher.close()


async def test_chromium_tab_closed_is_offline(api: Api, presence_node, browser):
    token = await api.login("kim")
    body = {"title": "Presence", "stream": "tab"}
    data = await api.ok("POST", "/api/sessions", body, token=token)
    sid = data["session_id"]
    teacher = await WS.connect(api.http, presence_node.url, sid, token, "teacher")
    context = await browser.new_context(locale="ko-KR")
    page = await context.new_page()
    await page.goto(presence_node.url + "/join")
    await page.fill("#cls-code", data["join_code"])
    await page.fill("#cls-name", "민지")
    await page.click("#cls-join-submit")
    await page.wait_for_url("**/student?stream=tab&session=*")
    joined = await teacher.wait("presence", lambda m: m["presence"]["online"], timeout=15)
    student_id = joined["presence"]["student_id"]
    # The page's own presence reports (at once, then every 5 s) reach the teacher.
    await teacher.wait("presence", lambda m: m["presence"]["student_id"] == student_id, count=2)
    assert await online_in_dashboard(api, token, sid, student_id)
    await page.close()  # the student closes the tab
    await wait_offline(api, teacher, token, sid, student_id)
    await context.close()
    await teacher.close()
