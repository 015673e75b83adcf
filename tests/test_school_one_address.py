"""A school behind one address (issue 17): 450 students share one public IP. With every
per-address limit at its default, the class joins (join code -> token) or takes tokens
for a public stream, and watches over WHEP (real ICE + DTLS + SRTP, tests/school_client.py)
within 20 s; then the Wi-Fi drops for everyone at once (the client process is killed:
no DELETE, no DTLS close, the old sessions still hold their seats) and the same class is
watching again within 20 s. A real node (default capacity and workers), a real ffmpeg
publisher."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from .classroom_support import PASSWORD, add_teacher
from .support import ROOT, TEST_HOST, NodeProcess, ffmpeg_publish, http_json, stop_process

STUDENTS = int(os.environ.get("SCHOOL_STUDENTS", "450"))
SCHOOL_IP = "203.0.113.9"
#: The class must be watching within this many seconds, at first and after the drop.
WATCHING_WITHIN = 20.0


@pytest.fixture
def school(tmp_path, processes):
    """A production node (defaults but --trusted-proxy, to tell the school's address),
    teacher kim, a small live stream "school" (320x180, 150 kbit/s, no audio) from ffmpeg."""
    node = NodeProcess(tmp_path, "--trusted-proxy", TEST_HOST, dev=False, name="school")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start(timeout=40)
    login = json.dumps({"username": "kim", "password": PASSWORD}).encode()
    status, body, _ = http_json(
        "POST", node.url + "/api/auth/login", login, {"Content-Type": "application/json"}
    )
    assert status == 200, body
    teacher = {"Authorization": f"Bearer {body['token']}", "Content-Type": "application/json"}
    q = "/api/token?user_type=teacher&action=publish&stream=school"
    status, grant, _ = http_json("POST", node.url + q, b"{}", teacher)
    assert status == 200, grant
    publisher = ffmpeg_publish(
        node.rtmp_url("school", grant["token"]),
        seconds=300,
        size="320x180",
        rate=15,
        extra=["-b:v", "150k", "-an"],  # video only: the harness counts fewer packets
    )
    processes.append(publisher)
    yield node, teacher
    stop_process(publisher)
    node.stop()


async def _class_watches(
    node: NodeProcess, mode: list[str], state: str, what: str, returning: bool = False
):
    """Start the class (its own process); return it once every student has RTP."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "school_client.py"),
        node.url,
        *mode,
        "--students",
        str(STUDENTS),
        "--ip",
        SCHOOL_IP,
        "--ice-host",
        TEST_HOST,
        "--state",
        state,
        stdout=asyncio.subprocess.PIPE,
    )
    events = []
    try:
        async with asyncio.timeout(WATCHING_WITHIN + 10):  # a report after the limit fails
            while not events or events[-1]["event"] != "watching":
                line = await proc.stdout.readline()
                assert line, f"{what}: the class process ended: {events}"
                events.append(json.loads(line))
        print(f"{what}: {events}")
        answered, watching = events[0], events[-1]
        assert answered["failed"] == 0, (what, answered)
        # No limit refused the class joining (join, token, WHEP). Coming back, some wait
        # out one Retry-After (5 s): their seat is held by a classmate's leftover session
        # (alive until ICE consent fails) not yet known to be one; the time bound holds.
        if not returning:
            assert answered["retries"] == 0, (what, answered)
        assert watching["n"] == STUDENTS and watching["seconds"] <= WATCHING_WITHIN, (what, events)
    except BaseException as exc:
        proc.kill()  # never leave 450 peer connections behind
        await proc.wait()
        if isinstance(exc, TimeoutError):
            raise AssertionError(f"{what}: not all watching in time: {events}") from None
        raise
    return proc


async def _drop_and_return(node: NodeProcess, teacher: dict, mode: list[str], state: str):
    first = await _class_watches(node, mode, state, "class joins")
    first.kill()  # the Wi-Fi drops: no DELETE, no DTLS close
    await first.wait()
    again = await _class_watches(node, mode, state, "class back after the drop", returning=True)
    status, body, _ = http_json("GET", node.url + "/api/streams/school", headers=teacher)
    print("viewers after the return:", body.get("viewers"))
    again.kill()
    await again.wait()


async def test_a_class_behind_one_address_joins_and_returns(school, tmp_path):
    node, teacher = school
    body = json.dumps({"title": "Assembly", "stream": "school"}).encode()
    status, created, _ = http_json("POST", node.url + "/api/sessions", body, teacher)
    assert status == 201, created
    await _drop_and_return(
        node, teacher, ["--join", created["join_code"]], str(tmp_path / "class.json")
    )


async def test_a_public_stream_behind_one_address_is_watched_and_rewatched(school, tmp_path):
    node, teacher = school
    body = json.dumps({"public": True}).encode()
    status, doc, _ = http_json("PUT", node.url + "/api/streams/school/public", body, teacher)
    assert status == 200 and doc["public"], doc
    await _drop_and_return(node, teacher, ["--stream", "school"], str(tmp_path / "public.json"))
