"""Issue 17, media access: one access check (the stream's owner / public / class rule, at
request time) on WHEP, WHIP and HLS; the viewer listing for the owner only; WHEP sessions
ended or changed only through their own Location; recordings filed under one's own class
session only. A real production node (no --dev) with media workers, two real teachers,
real ffmpeg publishers, aiortc viewers that decode frames, attackers that send real
requests (aiortc offers, HLS fetches, DELETE/PATCH)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from airclass_media.ice import restrict_host_addresses

from .classroom_support import PASSWORD, add_teacher
from .support import (
    ROOT,
    TEST_HOST,
    NodeProcess,
    RedisServer,
    async_wait_for,
    ffmpeg_publish,
    stop_process,
    wait_for,
)

STREAM = "kim-private"
_addresses = (f"198.51.100.{i}" for i in itertools.count(101))


class Client:
    """HTTP as one client address (X-Forwarded-For through the trusted test host)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.http, self.base, self.token = http, base, token
        self.ip = next(_addresses)

    def as_(self, token: str) -> Client:
        return Client(self.http, self.base, token)

    async def call(
        self, method: str, path: str, body=None, *, token: str | None = None, headers=None
    ) -> tuple[int, object, bytes]:
        """(status, JSON or text, raw body); `body`: a dict (JSON) or bytes/str as is."""
        sent = {"X-Forwarded-For": self.ip, **(headers or {})}
        token = self.token if token is None else token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
        url = path if path.startswith("http") else self.base + path
        async with self.http.request(method, url, headers=sent, **kwargs) as resp:
            raw = await resp.read()
            text = raw.decode(errors="replace")
            try:
                data = json.loads(text)
            except ValueError:
                data = text
            self.last_headers = resp.headers
            return resp.status, data, raw

    async def ok(self, method: str, path: str, body=None) -> dict:
        status, data, _ = await self.call(method, path, body)
        assert status in (200, 201), (method, path, status, data)
        return data

    async def login(self, username: str) -> str:
        body = {"username": username, "password": PASSWORD}
        status, data, _ = await self.call("POST", "/api/auth/login", body, token="")
        assert status == 200, data
        return data["token"]


@pytest.fixture(scope="module")
def prod_node(tmp_path_factory):
    """A production node (no --dev) with two media workers; teachers kim and lee; kim's
    private stream published by ffmpeg for the whole module."""
    tmp = tmp_path_factory.mktemp("media-access")
    node = NodeProcess(
        tmp, "--workers", "2", "--trusted-proxy", TEST_HOST, dev=False, name="mediaacc"
    )
    for user in ("kim", "lee"):
        result = add_teacher(node.data_dir, user)
        assert result.returncode == 0, result.stderr
    result = add_teacher(node.data_dir, "ops")  # an operator (admin) account
    assert result.returncode == 0, result.stderr
    admin = subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", "admin", "add", "ops",
         "--data-dir", str(node.data_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert admin.returncode == 0, admin.stderr
    node.start()
    yield node
    node.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="module")
def kim_live(prod_node):
    """kim's class session on STREAM (private), live from ffmpeg: (session, kim's token)."""
    import urllib.request

    def post(path: str, body: dict, token: str = "") -> dict:
        request = urllib.request.Request(
            prod_node.url + path,
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "X-Forwarded-For": "198.51.100.250"},
        )
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    token = post("/api/auth/login", {"username": "kim", "password": PASSWORD})["token"]
    session = post("/api/sessions", {"title": "Kim's class", "stream": STREAM}, token)
    publisher = ffmpeg_publish(prod_node.rtmp_url(STREAM, token), 300, "320x240", 15)

    def live() -> bool:
        request = urllib.request.Request(
            f"{prod_node.url}/api/streams/{STREAM}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            return bool(json.loads(resp.read()).get("width"))

    wait_for(live, 30, "kim's stream live")
    yield session, token
    stop_process(publisher)


async def offer(direction: str) -> tuple[RTCPeerConnection, str]:
    """A real aiortc offer (recvonly: a viewer's; sendonly: a publisher's)."""
    restrict_host_addresses([TEST_HOST])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in ("video", "audio"):
        pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post_sdp(client: Client, path: str, direction: str) -> int:
    pc, sdp = await offer(direction)
    try:
        sdp_type = {"Content-Type": "application/sdp"}
        return (await client.call("POST", path, sdp, headers=sdp_type))[0]
    finally:
        await pc.close()


async def hls_uris(client: Client) -> dict[str, str]:
    """The owner's playlist once it has a complete segment: init, segment and part URIs."""
    found: dict[str, str] = {}

    async def complete() -> bool:
        status, text, _ = await client.call("GET", f"/live/{STREAM}/index.m3u8")
        assert status == 200, text
        segs = re.findall(r"^(seg\d+\.m4s)", text, re.M)
        parts = re.findall(r'URI="(part\d+\.\d+\.m4s)"', text)
        init = re.findall(r'URI="(init\d+\.mp4)"', text)
        if segs and parts and init:
            found.update(seg=segs[-1], part=parts[0], init=init[0], index="index.m3u8")
            return True
        return False

    await async_wait_for(complete, 30, "a complete HLS segment")
    return found


async def media_statuses(client: Client, uris: dict[str, str], token: str) -> dict[str, int]:
    return {
        key: (await client.call("GET", f"/live/{STREAM}/{uri}", token=token))[0]
        for key, uri in uris.items()
    }


async def test_another_teachers_sign_in_token_opens_no_media_of_a_private_stream(
    prod_node, kim_live, http
):
    _, kim_token = kim_live
    c = Client(http, prod_node.url)
    kim, lee = c.as_(kim_token), c.as_(await c.login("lee"))
    uris = await hls_uris(kim)
    assert await media_statuses(kim, uris, kim_token) == dict.fromkeys(uris, 200)

    # lee's sign-in token says stream "*": WHEP, WHIP, the playlist, init, segment and
    # part of kim's private stream are all refused.
    assert await post_sdp(lee, f"/live/{STREAM}/whep", "recvonly") == 403
    assert await post_sdp(lee, f"/live/{STREAM}/whip", "sendonly") == 403
    assert await media_statuses(lee, uris, lee.token) == dict.fromkeys(uris, 403)
    # A rendition (NAME~RUNG) and the multivariant playlist follow the stream's rule.
    for path in (f"/live/{STREAM}~360p/index.m3u8", f"/live/{STREAM}/multivariant.m3u8"):
        assert (await lee.call("GET", path))[0] == 403, path
    # As a query token too (the form the playlist repeats in its URIs).
    query = f"/live/{STREAM}/{uris['seg']}?token={lee.token}"
    assert (await lee.call("GET", query, token=""))[0] == 403
    # A teacher read token asked for by lee is refused at /api/token already.
    assert (await lee.call("POST", f"/api/token?user_type=teacher&stream={STREAM}"))[0] == 403
    # The owner still may: WHEP answered (then ended through its own Location).
    pc, sdp = await offer("recvonly")
    try:
        status, _, _ = await kim.call(
            "POST", f"/live/{STREAM}/whep", sdp, headers={"Content-Type": "application/sdp"}
        )
        assert status == 201
        location = kim.last_headers["Location"]
        assert (await kim.call("DELETE", location, token=""))[0] == 200
    finally:
        await pc.close()


async def test_a_token_taken_while_public_is_refused_once_private(
    prod_node, kim_live, http, players
):
    _, kim_token = kim_live
    c = Client(http, prod_node.url)
    kim = c.as_(kim_token)
    uris = await hls_uris(kim)
    await kim.ok("PUT", f"/api/streams/{STREAM}/public", {"public": True})
    try:
        grant = await c.ok("POST", f"/api/token?user_type=student&action=read&stream={STREAM}")
        student = c.as_(grant["token"])
        assert await media_statuses(student, uris, grant["token"]) == dict.fromkeys(uris, 200)
        viewer = await players(grant["whep_url"], grant["token"])
        await viewer.wait_frames(video=10, timeout=30)
    finally:
        await kim.ok("PUT", f"/api/streams/{STREAM}/public", {"public": False})
    # The same token, now: every media request refused.
    assert await post_sdp(student, f"/live/{STREAM}/whep", "recvonly") == 403
    assert await media_statuses(student, uris, grant["token"]) == dict.fromkeys(uris, 403)
    status, err, _ = await student.call("GET", f"/live/{STREAM}/index.m3u8")
    assert "private" in err["error"]

    # The session it opened while public is ended too (asked again while it lasts).
    async def ended() -> bool:
        _, body, _ = await kim.call("GET", f"/api/streams/{STREAM}/viewers")
        return grant["user_id"] not in [v["user_id"] for v in body["viewers"]]

    await async_wait_for(ended, 15, "the public-token viewer's session ended")
    assert "ended: stream kim-private is private" in prod_node.log()


async def test_only_the_owner_lists_viewers_and_only_the_location_ends_a_session(
    prod_node, kim_live, http, players
):
    session, kim_token = kim_live
    c = Client(http, prod_node.url)
    kim, lee = c.as_(kim_token), c.as_(await c.login("lee"))
    joined = await c.ok(
        "POST", "/api/sessions/join", {"join_code": session["join_code"], "name": "Minji"}
    )
    viewer = await players(joined["whep_url"], joined["token"])
    await viewer.wait_frames(video=10, timeout=30)
    listing = f"/api/streams/{STREAM}/viewers"
    assert (await lee.call("GET", listing))[0] == 403
    assert (await c.as_(joined["token"]).call("GET", listing))[0] == 403
    status, body, raw = await kim.call("GET", listing)
    assert status == 200, body
    ops = await c.ok("POST", "/api/admin/login", {"username": "ops", "password": PASSWORD})
    assert (await c.as_(ops["token"]).call("GET", listing))[0] == 200  # an admin may
    (listed,) = [v for v in body["viewers"] if v["user_id"] == joined["student_id"]]
    resource = viewer.location.rsplit("/", 1)[1]
    assert listed["id"] != resource and resource.encode() not in raw  # no secret listed

    # A third party with the listed id: anonymous, lee, even the stream's owner.
    by_id = f"/live/{STREAM}/whep/{listed['id']}"
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    candidate = f"a=mid:0\r\na=candidate:1 1 udp 2130706431 {TEST_HOST} 9 typ host\r\n"
    for who in (c, lee, kim):
        assert (await who.call("DELETE", by_id))[0] == 403
        assert (await who.call("PATCH", by_id, candidate, headers=frag))[0] == 403
    # A forged secret on the right id, or the secret moved onto another id: refused too.
    secret = resource.rsplit(".", 1)[1]
    assert (await c.call("DELETE", f"{by_id}.{'A' * len(secret)}"))[0] == 403
    assert (await c.call("DELETE", f"/live/{STREAM}/whep/w0-other.{secret}"))[0] == 404
    await viewer.wait_frames(video=30, timeout=20)  # still decoding
    _, body, _ = await kim.call("GET", listing)
    assert listed["id"] in [v["id"] for v in body["viewers"]]

    # The viewer's own Location (as the WHEP reference client sends it) still works.
    assert (await c.call("PATCH", viewer.location, candidate, headers=frag))[0] == 204
    assert (await c.call("DELETE", viewer.location, token=joined["token"]))[0] == 200

    async def gone() -> bool:
        _, body, _ = await kim.call("GET", listing)
        return listed["id"] not in [v["id"] for v in body["viewers"]]

    await async_wait_for(gone, 10, "the session ended")
    assert (await c.call("DELETE", viewer.location))[0] == 200  # idempotent


async def test_a_recording_is_filed_only_under_ones_own_class_session(
    prod_node, kim_live, http, processes
):
    session, kim_token = kim_live
    c = Client(http, prod_node.url)
    kim, lee = c.as_(kim_token), c.as_(await c.login("lee"))
    processes.append(ffmpeg_publish(prod_node.rtmp_url("lee-live", lee.token), 120, "160x120", 10))

    async def live() -> bool:
        status, body, _ = await lee.call("GET", "/api/streams/lee-live")
        return status == 200 and bool(body.get("width"))

    await async_wait_for(live, 30, "lee's stream live")
    # lee records his own stream but files it under kim's class session: refused.
    body = {"stream": "lee-live", "session_id": session["session_id"]}
    status, err, _ = await lee.call("POST", "/api/recording/start", body)
    assert status == 403, err
    overview = f"/api/dashboard/session/{session['session_id']}/overview"
    filed = (await kim.ok("GET", overview))["recordings"]
    assert not [r for r in filed if r["id"].startswith("lee-live-")]  # ids: STREAM-time-hex
    # kim's own session on another stream of his: refused (400); unknown session: 404.
    body = {"stream": "lee-live", "session_id": "ses-0000000000000000"}
    assert (await lee.call("POST", "/api/recording/start", body))[0] == 404
    body = {"stream": "kim-other", "session_id": session["session_id"]}
    assert (await kim.call("POST", "/api/recording/start", body))[0] == 400
    # Without a class session, lee records his stream.
    rec = await lee.ok("POST", "/api/recording/start", {"stream": "lee-live"})
    await lee.ok("POST", "/api/recording/stop", {"recording_id": rec["id"]})


async def test_a_sub_without_shared_store_asks_its_main(tmp_path, http, processes):
    """A sub node with its own SQLite store knows no owner nor public flag: the main
    decides for it, so another teacher is refused there too and going private counts."""
    env = {"AIRCLASS_CLUSTER_SECRET": "cluster-secret-for-tests-0123456789abcdef"}
    redis = RedisServer(tmp_path).start()
    main = sub = None
    try:
        cluster = ("--redis-url", redis.url)
        main = NodeProcess(
            tmp_path, "--role", "main", *cluster, "--trusted-proxy", TEST_HOST,
            env=env, dev=False, name="main",
        )  # fmt: skip
        for user in ("kim", "lee"):
            assert add_teacher(main.data_dir, user).returncode == 0
        main.start()
        sub = NodeProcess(
            tmp_path, "--role", "sub", "--main-url", main.url, *cluster,
            env=env, dev=False, name="sub",
        ).start()  # fmt: skip
        c = Client(http, main.url)
        kim, lee = c.as_(await c.login("kim")), c.as_(await c.login("lee"))
        session = await kim.ok("POST", "/api/sessions", {"title": "Sub", "stream": "kim-sub"})
        processes.append(ffmpeg_publish(main.rtmp_url("kim-sub", kim.token), 120, "160x120", 10))

        async def live() -> bool:
            status, body, _ = await kim.call("GET", "/api/streams/kim-sub")
            return status == 200 and bool(body.get("width"))

        await async_wait_for(live, 30, "kim's stream live on the main")
        playlist = f"{sub.url}/live/kim-sub/index.m3u8"
        joined = await c.ok(
            "POST", "/api/sessions/join", {"join_code": session["join_code"], "name": "Sora"}
        )
        assert (await c.call("GET", playlist, token=joined["token"]))[0] == 200
        assert (await c.call("GET", playlist, token=kim.token))[0] == 200
        status, err, _ = await c.call("GET", playlist, token=lee.token)
        assert status == 403 and "main node" in err["error"], err
        assert await post_sdp(lee, f"{sub.url}/live/kim-sub/whep", "recvonly") == 403
        listing = f"{sub.url}/api/streams/kim-sub/viewers"
        assert (await c.call("GET", listing, token=lee.token))[0] == 403

        await kim.ok("PUT", "/api/streams/kim-sub/public", {"public": True})
        grant = await c.ok("POST", "/api/token?user_type=student&action=read&stream=kim-sub")
        assert (await c.call("GET", playlist, token=grant["token"]))[0] == 200
        await kim.ok("PUT", "/api/streams/kim-sub/public", {"public": False})

        async def refused() -> bool:  # the sub keeps the main's answer for 2 s
            return (await c.call("GET", playlist, token=grant["token"]))[0] == 403

        await async_wait_for(refused, 10, "the sub refusing the token once private")
    finally:
        for node in (sub, main):
            if node is not None:
                node.stop()
        redis.stop()
