"""Issue 9, identity: stream ownership, private streams, the password limiter, token
revocation on a password change, secrets, admission at the token. Real nodes, real
ffmpeg publishers, real redis-server; client addresses come from X-Forwarded-For through
a trusted proxy (the test host) so that each test has its own limiter buckets."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys

import aiohttp
import pytest

from airclass_web.classroom.sessions import CODE_ALPHABET

from .classroom_support import PASSWORD, WS, add_teacher
from .support import (
    ROOT,
    TEST_HOST,
    NodeProcess,
    RedisServer,
    async_wait_for,
    ffmpeg_publish,
    http_json,
    stop_process,
    wait_for,
)

METRICS_TOKEN = "metrics-token-for-tests"
_addresses = (f"198.51.100.{i}" for i in itertools.count(1))


def new_ip() -> str:
    """A fresh client address (sent as X-Forwarded-For; never contacted)."""
    return next(_addresses)


class Client:
    """JSON over HTTP as one client address, optionally with a Bearer token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, ip: str, token: str = ""):
        self.http, self.base, self.ip, self.token = http, base, ip, token

    def as_(self, token: str) -> Client:
        return Client(self.http, self.base, self.ip, token)

    async def call(self, method: str, path: str, body=None, token: str | None = None):
        headers = {"X-Forwarded-For": self.ip}
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, json=body, headers=headers) as resp:
            text = await resp.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = text
            return resp.status, data, resp.headers

    async def ok(self, method: str, path: str, body=None) -> dict:
        status, data, _ = await self.call(method, path, body)
        assert status in (200, 201), (method, path, status, data)
        return data

    async def login(self, username: str, password: str = PASSWORD) -> str:
        status, data, _ = await self.call(
            "POST", "/api/auth/login", {"username": username, "password": password}, token=""
        )
        assert status == 200, data
        return data["token"]


@pytest.fixture(scope="module")
def prod_node(tmp_path_factory):
    """A production node (no --dev) behind a "proxy" (the test host), accounts kim, lee,
    park, choi."""
    tmp = tmp_path_factory.mktemp("identity")
    node = NodeProcess(
        tmp,
        "--trusted-proxy",
        TEST_HOST,
        dev=False,
        name="ident",
        env={"AIRCLASS_METRICS_TOKEN": METRICS_TOKEN},
    )
    for user in ("kim", "lee", "park", "choi"):
        result = add_teacher(node.data_dir, user)
        assert result.returncode == 0, result.stderr
    node.start()
    yield node
    node.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_only_the_owner_publishes_records_shares_and_deletes(prod_node, http):
    c = Client(http, prod_node.url, new_ip())
    kim, lee = c.as_(await c.login("kim")), c.as_(await c.login("lee"))
    session = await kim.ok("POST", "/api/sessions", {"title": "Kim", "stream": "kim-live"})
    # lee can neither get a publish token for it, nor open a session on it, nor claim it.
    q = "/api/token?user_type=teacher&action=publish&stream=kim-live"
    assert (await lee.call("POST", q))[0] == 403
    assert (await lee.call("POST", q, {"username": "lee", "password": PASSWORD}, token=""))[
        0
    ] == 403
    assert (await lee.call("POST", "/api/sessions", {"title": "x", "stream": "kim-live"}))[0] == 403
    assert (await lee.call("POST", "/api/streams/kim-live/claim"))[0] == 403
    assert (await lee.call("GET", f"/api/sessions/{session['session_id']}"))[0] == 403
    assert (await lee.ok("POST", "/api/streams/lee-own/claim"))["owner"] == "lee"

    # RTMP with lee's sign-in token (valid for every stream) into kim's stream: refused.
    intruder = ffmpeg_publish(prod_node.rtmp_url("kim-live", lee.token), seconds=30)
    try:
        await async_wait_for(lambda: intruder.poll() is not None, 20, "intruder refused")
        assert intruder.returncode != 0
        assert "belongs to another teacher" in prod_node.log()
    finally:
        stop_process(intruder)
    publisher = ffmpeg_publish(
        prod_node.rtmp_url("kim-live", kim.token), seconds=120, size="320x240", rate=15
    )
    try:

        async def live():
            status, body, _ = await kim.call("GET", "/api/streams/kim-live")
            return status == 200 and body.get("live")

        await async_wait_for(live, 20, "kim's stream live")
        # A private stream is not listed to strangers, nor to another teacher.
        for who in (c, lee):
            status, body, _ = await who.call("GET", "/api/streams")
            assert "kim-live" not in [s["name"] for s in body["streams"]]
            assert (await who.call("GET", "/api/streams/kim-live"))[0] == 404
            _, nodes, _ = await who.call("GET", "/cluster/nodes")
            assert all("kim-live" not in n["streams"] for n in nodes["nodes"])
        _, body, _ = await kim.call("GET", "/api/streams")
        assert "kim-live" in [s["name"] for s in body["streams"]]
        async with http.get(prod_node.url + "/") as resp:
            assert "kim-live" not in await resp.text()

        # Recording: only the owner.
        body = {"stream": "kim-live"}
        assert (await lee.call("POST", "/api/recording/start", body))[0] == 403
        rec = await kim.ok("POST", "/api/recording/start", body)
        rid = rec["id"]
        assert (await lee.call("POST", "/api/recording/stop", body))[0] == 403
        assert (await lee.call("POST", "/api/recording/stop", {"recording_id": rid}))[0] == 403
        for method, path in (
            ("GET", f"/api/recording/{rid}"),
            ("GET", f"/api/recording/{rid}/share"),
            ("DELETE", f"/api/recording/{rid}"),
        ):
            assert (await lee.call(method, path))[0] == 403, path
        _, listed, _ = await lee.call("GET", "/api/recording/list")
        assert rid not in [r["id"] for r in listed["recordings"]]
        _, status_body, _ = await lee.call("GET", "/api/recording/status")
        assert all(r["stream"] != "kim-live" for r in status_body["recordings"])
        await kim.ok("POST", "/api/recording/stop", {"recording_id": rid})
        assert (await kim.ok("GET", f"/api/recording/{rid}/share"))["url"]
        assert (await lee.call("DELETE", f"/api/recording/{rid}"))[0] == 403
        assert (await kim.ok("DELETE", f"/api/recording/{rid}"))["deleted"] == rid
    finally:
        stop_process(publisher)


async def test_viewing_is_bound_to_a_class_or_a_public_stream(prod_node, http):
    c = Client(http, prod_node.url, new_ip())
    kim, lee = c.as_(await c.login("kim")), c.as_(await c.login("lee"))
    session = await kim.ok("POST", "/api/sessions", {"title": "Private", "stream": "kim-room"})
    for user_type in ("student", "monitor"):
        q = f"/api/token?user_type={user_type}&action=read&stream=kim-room"
        status, err, _ = await c.call("POST", q)
        assert status == 403 and "private" in err["error"]
    assert (await lee.call("POST", "/api/token?user_type=teacher&stream=kim-room"))[0] == 403
    assert (await kim.call("POST", "/api/token?user_type=teacher&stream=kim-room"))[0] == 200
    joined = await c.ok(
        "POST", "/api/sessions/join", {"join_code": session["join_code"], "name": "Minji"}
    )
    assert joined["stream"] == "kim-room" and joined["token"]
    # The owner marks it public: anyone may watch; nobody else may flip it.
    assert (await lee.call("PUT", "/api/streams/kim-room/public", {"public": True}))[0] == 403
    assert (await c.call("PUT", "/api/streams/kim-room/public", {"public": True}))[0] == 401
    flipped = await kim.ok("PUT", "/api/streams/kim-room/public", {"public": True})
    assert flipped == {"stream": "kim-room", "owner": "kim", "public": True}
    ok = await c.ok("POST", "/api/token?user_type=student&action=read&stream=kim-room")
    assert ok["whep_url"].endswith("/live/kim-room/whep")
    _, body, _ = await c.call("GET", "/api/streams")
    assert "kim-room" in [s["name"] for s in body["streams"]]
    await kim.ok("PUT", "/api/streams/kim-room/public", {"public": False})
    assert (await c.call("POST", "/api/token?stream=kim-room"))[0] == 403
    # /metrics names every stream: only with the metrics token.
    assert (await c.call("GET", "/metrics"))[0] == 401
    status, text, _ = await c.call("GET", "/metrics", token=METRICS_TOKEN)
    assert status == 200 and "airclass_streams_live" in text


async def test_one_password_limiter_counts_before_checking(prod_node, http):
    ip = new_ip()
    c = Client(http, prod_node.url, ip)
    # Concurrent wrong guesses: each counts before its password is checked, so no more
    # than the burst (10) get as far as a check.
    wrong = {"username": "park", "password": "wrong password!"}
    results = await asyncio.gather(*(c.call("POST", "/api/auth/login", wrong) for _ in range(25)))
    statuses = [r[0] for r in results]
    assert statuses.count(401) <= 10 and statuses.count(429) >= 15, statuses
    limited = next(r for r in results if r[0] == 429)
    assert int(limited[2]["Retry-After"]) >= 1
    # The same account from another address, on another route: still limited (per user).
    other = Client(http, prod_node.url, new_ip())
    q = "/api/token?user_type=teacher&action=publish&stream=park-room"
    status, _, headers = await other.call("POST", q, {"username": "park", "password": PASSWORD})
    assert status == 429 and headers["Retry-After"]
    # Per address: ten wrong passwords for various names via /api/token, then even the
    # right password of another account from that address waits.
    third = Client(http, prod_node.url, new_ip())
    for i in range(10):
        body = {"username": f"nobody{i}", "password": "guess-guess"}
        assert (await third.call("POST", q, body))[0] == 401
    assert (await third.call("POST", "/api/auth/login", {"username": "lee", "password": PASSWORD}))[
        0
    ] == 429
    # A fresh address and an untouched account sign in fine.
    assert await Client(http, prod_node.url, new_ip()).login("lee")


async def test_password_change_revokes_older_tokens(prod_node, http):
    c = Client(http, prod_node.url, new_ip())
    old = c.as_(await c.login("choi"))
    session = await old.ok("POST", "/api/sessions", {"title": "Choi", "stream": "choi-room"})
    new_password = "a brand new password"
    result = await asyncio.to_thread(
        add_teacher, prod_node.data_dir, "choi", new_password, "--replace"
    )
    assert result.returncode == 0, result.stderr

    async def revoked():
        return (await old.call("GET", "/api/sessions"))[0] == 401

    await async_wait_for(revoked, 10, "the old token refused")
    status, err, _ = await old.call("POST", "/api/token?user_type=teacher&stream=choi-room")
    assert status == 401
    base = prod_node.url.replace("http", "ws", 1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{base}/ws/session/{session['session_id']}?token={old.token}")
    assert info.value.status == 401
    assert (await c.call("POST", "/api/auth/login", {"username": "choi", "password": PASSWORD}))[
        0
    ] == 401
    fresh = c.as_(await c.login("choi", new_password))
    assert (await fresh.ok("GET", "/api/sessions"))["sessions"]


async def test_rate_limits_and_long_join_codes(prod_node, http):
    c = Client(http, prod_node.url, new_ip())
    kim = c.as_(await c.login("kim"))
    session = await kim.ok("POST", "/api/sessions", {"title": "Codes", "stream": "kim-codes"})
    code = session["join_code"]
    assert len(code) >= 8 and set(code) <= set(CODE_ALPHABET)
    # Wrong join codes from one address: ten, then even the right code waits.
    guesser = Client(http, prod_node.url, new_ip())
    for _ in range(10):
        body = {"join_code": "ABCDEFGH", "name": "Guess"}
        assert (await guesser.call("POST", "/api/sessions/join", body))[0] == 404
    status, _, headers = await guesser.call(
        "POST", "/api/sessions/join", {"join_code": code, "name": "Guess"}
    )
    assert status == 429 and int(headers["Retry-After"]) >= 1
    joined = await Client(http, prod_node.url, new_ip()).ok(
        "POST", "/api/sessions/join", {"join_code": code, "name": "Real"}
    )
    assert joined["token"]
    # /api/token per address: a burst, then 429 with Retry-After.
    flooder = Client(http, prod_node.url, new_ip())
    statuses = []
    for _ in range(80):
        status, _, headers = await flooder.call("POST", "/api/token?stream=kim-codes")
        statuses.append(status)
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {403}, statuses


async def test_welcome_shows_the_join_code_to_the_teacher_only(prod_node, http):
    c = Client(http, prod_node.url, new_ip())
    kim = c.as_(await c.login("kim"))
    session = await kim.ok("POST", "/api/sessions", {"title": "WS", "stream": "kim-ws"})
    sid = session["session_id"]
    student = await c.ok(
        "POST", "/api/sessions/join", {"join_code": session["join_code"], "name": "S"}
    )
    monitor = await kim.ok("POST", f"/api/sessions/{sid}/monitor-token")
    sockets = [
        await WS.connect(http, prod_node.url, sid, token, label)
        for label, token in (
            ("teacher", kim.token),
            ("monitor", monitor["token"]),
            ("student", student["token"]),
        )
    ]
    try:
        codes = [ws.of("welcome")[0]["session"].get("join_code") for ws in sockets]
        assert codes == [session["join_code"], None, None]
    finally:
        for ws in sockets:
            await ws.close()


def _serve(tmp_path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", "serve", "--data-dir", str(tmp_path), *args],
        env={**NodeProcess(tmp_path).env, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_secrets_must_be_long(tmp_path):
    short = _serve(tmp_path, {"AIRCLASS_JWT_SECRET": "too-short"})
    assert short.returncode == 2 and "AIRCLASS_JWT_SECRET" in short.stderr
    assert "at least 32" in short.stderr
    cluster = _serve(
        tmp_path,
        {"AIRCLASS_CLUSTER_SECRET": "short-cluster-secret"},
        "--role",
        "main",
    )
    assert cluster.returncode == 2 and "AIRCLASS_CLUSTER_SECRET" in cluster.stderr
    bad_key = _serve(tmp_path, {"AIRCLASS_DATA_KEY": "not-a-fernet-key"})
    assert bad_key.returncode == 2 and "AIRCLASS_DATA_KEY" in bad_key.stderr


class LoopbackDevNode(NodeProcess):
    """`serve --dev` without --host: it must bind 127.0.0.1 only."""

    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path, dev=True, name="devhost")
        i = self.args.index("--host")
        del self.args[i : i + 2]
        self.env.pop("AIRCLASS_HOST", None)
        self.env.pop("AIRCLASS_DATA_KEY")  # --dev: a key file in the data dir instead

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


async def test_dev_binds_loopback_and_says_it_is_insecure(tmp_path, http):
    node = LoopbackDevNode(tmp_path)
    assert add_teacher(node.data_dir, "kim").returncode == 0
    await asyncio.to_thread(node.start)
    try:
        log = node.log()
        assert "INSECURE" in log and f"http://127.0.0.1:{node.http_port}" in log
        if TEST_HOST != "127.0.0.1":  # not reachable on the test address
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(f"http://{TEST_HOST}:{node.http_port}/api/health")
        c = Client(http, node.url, new_ip())
        # Under --dev every stream is public, and AI keys use a key file in the data dir.
        assert (await c.ok("POST", "/api/token?stream=anything"))["token"]
        kim = c.as_(await c.login("kim"))
        await kim.ok("POST", "/api/ai/keys/gemini", {"api_key": "k-123"})
        assert (await kim.ok("GET", "/api/ai/keys/gemini/status"))["configured"] is True
        assert (node.data_dir / "data.key").exists()
    finally:
        node.stop()


async def test_ai_key_needs_a_data_key_outside_dev(tmp_path, http):
    node = NodeProcess(tmp_path, dev=False, name="nokey")
    node.env.pop("AIRCLASS_DATA_KEY")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    await asyncio.to_thread(node.start)
    try:
        c = Client(http, node.url, new_ip())
        kim = c.as_(await c.login("kim"))
        status, err, _ = await kim.call("POST", "/api/ai/keys/gemini", {"api_key": "secret-k"})
        assert status == 503 and "AIRCLASS_DATA_KEY" in err["error"]
        assert (await kim.ok("GET", "/api/ai/keys/gemini/status"))["configured"] is False
    finally:
        node.stop()


def test_token_requests_do_not_fill_the_subs(tmp_path):
    """Capacity counts viewer sessions (from the WHEP POST), not tokens: a stranger asking
    /api/token in a loop gets tokens but never makes the cluster full."""
    secret = {"AIRCLASS_CLUSTER_SECRET": "cluster-secret-for-tests-0123456789abcdef"}
    redis = RedisServer(tmp_path).start()
    nodes: list[NodeProcess] = []
    try:
        main = NodeProcess(
            tmp_path, "--role", "main", "--redis-url", redis.url, env=secret, name="main"
        ).start()
        nodes.append(main)
        sub = NodeProcess(
            tmp_path,
            *("--role", "sub", "--main-url", main.url, "--redis-url", redis.url),
            "--capacity",
            "2",
            env=secret,
            name="sub",
        )
        nodes.append(sub.start())

        def sub_listed():
            status, body, _ = http_json("GET", main.url + "/cluster/nodes")
            return status == 200 and any(n["role"] == "sub" for n in body["nodes"])

        wait_for(sub_listed, 10, "the sub registered")
        for i in range(8):
            status, body, _ = http_json("POST", f"{main.url}/api/token?stream=s&user_id=x{i}")
            assert status == 200, (i, body)
            assert body["whep_url"].startswith(sub.url)
    finally:
        for node in reversed(nodes):
            node.stop()
        redis.stop()
