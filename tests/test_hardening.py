"""Issue 9 (web hardening, Redis bus, classroom limits) on real nodes, a real redis-server
and headless Chromium: security headers and CSP, the login redirect, full-match names,
signed bus events delivered across a Redis restart, WebSocket limits, cache eviction."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from .classroom_support import PASSWORD, WS, Api, add_teacher
from .support import TEST_HOST, NodeProcess, RedisServer, async_wait_for, free_port, http_json

SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy")


@pytest.fixture
def prod_node(tmp_path):
    """A production-mode node (no --dev) with the teacher account kim."""
    node = NodeProcess(tmp_path, dev=False, name="hard")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start()
    yield node
    node.stop()


def assert_secure_headers(headers, what: str) -> None:
    for name in SECURITY_HEADERS:
        assert name in headers, f"{what}: no {name}"
    csp = headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"], csp  # no 'unsafe-inline', no eval
    assert directives["frame-ancestors"] == ["'none'"], csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in headers, f"{what}: HSTS over plain HTTP"


# -- security headers ---------------------------------------------------------------------
async def test_security_headers_on_every_response(prod_node):
    url = prod_node.url
    for method, path in [
        ("GET", "/"),
        ("GET", "/login"),
        ("GET", "/join"),
        ("GET", "/teacher"),
        ("GET", "/student?stream=x"),
        ("GET", "/vod"),
        ("GET", "/static/login.js"),
        ("GET", "/api/health"),
        ("GET", "/no/such/page"),  # 404
        ("POST", "/api/auth/login"),  # 400
        ("GET", "/api/sessions"),  # 401
    ]:
        status, _, headers = http_json(method, url + path, body=b"" if method == "POST" else None)
        assert_secure_headers(headers, f"{method} {path} -> {status}")
    # WHEP keeps its CORS (students' pages may live on another node) and gets the headers too.
    status, _, headers = http_json("OPTIONS", url + "/live/x/whep")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert_secure_headers(headers, "OPTIONS whep")
    # A WebSocket upgrade (prepared by the handler itself) too.
    token = await _teacher_token(url)
    async with aiohttp.ClientSession() as http:
        api = Api(http, url, token)
        sid = (await api.ok("POST", "/api/sessions", {"title": "t", "stream": "s"}))["session_id"]
        ws_url = f"{url.replace('http', 'ws', 1)}/ws/session/{sid}?token={token}"
        async with http.ws_connect(ws_url) as ws:
            assert_secure_headers(ws._response.headers, "websocket upgrade")


async def _teacher_token(url: str) -> str:
    async with aiohttp.ClientSession() as http:
        return await Api(http, url).login("kim", PASSWORD)


def _self_signed(tmp: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airclass-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def test_hsts_only_over_tls(tmp_path):
    """The middleware in a real aiohttp server over real TLS (nodes speak plain HTTP behind
    a TLS proxy, whose side is covered by the plain-HTTP checks above)."""
    from airclass_web import security_headers

    app = web.Application()
    security_headers.setup(app)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app.router.add_get("/", hello)
    app.router.add_get("/missing", missing)
    runner = web.AppRunner(app)
    await runner.setup()
    tls_port, plain_port = free_port(), free_port()
    await web.TCPSite(runner, TEST_HOST, tls_port, ssl_context=_self_signed(tmp_path)).start()
    await web.TCPSite(runner, TEST_HOST, plain_port).start()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/", "/missing"):
                async with http.get(f"https://{TEST_HOST}:{tls_port}{path}", ssl=False) as r:
                    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with http.get(f"http://{TEST_HOST}:{plain_port}/") as r:
                assert "Strict-Transport-Security" not in r.headers
    finally:
        await runner.cleanup()


async def test_pages_run_under_csp_and_login_redirect_stays_on_site(prod_node, browser):
    """Every page loads its scripts under the CSP without a violation; the login page's
    `next` only ever leads to a path of this site."""
    ctx = await browser.new_context(locale="en-US")
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    base = prod_node.url
    for path, ready in [
        ("/", "document.querySelector('.home-action b').textContent === 'Join a class'"),
        ("/join", "document.documentElement.lang === 'en'"),
        ("/vod", "document.documentElement.lang === 'en'"),
        ("/student?stream=x", "!!window.airclassPlayer"),
        ("/login", "!!window.AirLogin"),
    ]:
        await page.goto(base + path)
        # A function, not an expression: Playwright polls expressions with eval() (CSP).
        await page.wait_for_function(f"() => {ready}", timeout=10_000)
    # Korean too (the home page's strings moved from an inline script to static/index.js).
    await page.click(".lang-toggle")
    await page.goto(base + "/")
    await page.wait_for_function(
        "() => document.querySelector('.home-action b').textContent === '수업 참여'"
    )
    await page.goto(base + "/login")
    await page.wait_for_function("() => !!window.AirLogin")
    cases = {
        "/\\evil.com": "/teacher",
        "//evil.com": "/teacher",
        "/\\/evil.com/x": "/teacher",
        "https://evil.com/": "/teacher",
        "javascript:alert(1)": "/teacher",
        "/\t/evil.com": "/teacher",
        "": "/teacher",
        "/vod?x=1#y": "/vod?x=1#y",
        "/teacher": "/teacher",
    }
    for value, expected in cases.items():
        got = await page.evaluate("(v) => window.AirLogin.safeNext(v)", value)
        assert got == expected, (value, got)
    # The whole flow: sign in with next=/\evil.com and stay on this site.
    await page.goto(base + "/login?next=/%5Cevil.com")
    await page.fill("#login-username", "kim")
    await page.fill("#login-password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url(base + "/teacher")
    assert not errors, errors
    await ctx.close()


def test_names_with_trailing_newline_are_refused(prod_node):
    url = prod_node.url
    status, body, _ = http_json("GET", url + "/api/streams/abc%0A")
    assert status in (400, 404), body
    token = http_json(
        "POST",
        url + "/api/auth/login",
        b'{"username": "kim", "password": "%s"}' % PASSWORD.encode(),
        {"Content-Type": "application/json"},
    )[1]["token"]
    status, body, _ = http_json(
        "POST",
        url + "/api/sessions",
        b'{"title": "t", "stream": "math\\n"}',
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert status == 400, body
    status, body, _ = http_json(
        "GET", url + "/api/recording/abc%0A", headers={"Authorization": f"Bearer {token}"}
    )
    assert status in (400, 404), body
    assert "abc\n" not in str(body)
    from airclass_web.auth import STREAM_NAME
    from airclass_web.classroom.teachers import USERNAME
    from recorder.metadata import RECORDING_ID

    for pattern in (STREAM_NAME, USERNAME, RECORDING_ID):
        assert pattern.match("abc") and not pattern.match("abc\n")


# -- Redis bus: password, signed events, delivery across a Redis restart ---------------------
REDIS_PASSWORD = "redis-pass-" + "9f" * 16


class PasswordRedis:
    """A real redis-server with `requirepass`, restartable on the same port."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server = RedisServer(tmp).start()
        self._protect()

    def _protect(self) -> None:
        with socket.create_connection((TEST_HOST, self.server.port), timeout=5) as s:
            pw = REDIS_PASSWORD.encode()
            s.sendall(
                b"*4\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n$11\r\nrequirepass\r\n$%d\r\n%s\r\n"
                % (len(pw), pw)
            )
            assert s.recv(16).startswith(b"+OK")

    @property
    def url(self) -> str:
        return f"redis://:{REDIS_PASSWORD}@{TEST_HOST}:{self.server.port}/0"

    def kill(self) -> None:
        self.server.proc.send_signal(signal.SIGKILL)
        self.server.proc.wait(10)

    def start_again(self) -> None:
        port = self.server.port
        self.server = RedisServer(self.tmp)
        self.server.port = port
        self.server.start()
        self._protect()

    def stop(self) -> None:
        self.server.stop()


class TwoNodes:
    """Two real nodes sharing a password-protected redis-server and one store."""

    def __init__(self, tmp: Path) -> None:
        self.redis = PasswordRedis(tmp)
        data = tmp / "shared"
        assert add_teacher(data, "kim").returncode == 0
        extra = ("--redis-url", self.redis.url, "--data-dir", str(data))
        self.a = NodeProcess(tmp, *extra, name="a").start()
        self.b = NodeProcess(tmp, *extra, name="b").start()

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        self.redis.stop()


@pytest.fixture
def two_nodes(tmp_path):
    nodes = TwoNodes(tmp_path)
    yield nodes
    nodes.stop()


async def bus_status(api: Api) -> dict:
    status, body = await api.call("GET", "/api/classroom/status")
    assert status == 200, body
    return body["bus"]


async def open_class(http, nodes: TwoNodes, students: int = 1):
    api_a, api_b = Api(http, nodes.a.url), Api(http, nodes.b.url)
    token = await api_a.login("kim")
    created = await api_a.ok("POST", "/api/sessions", {"title": "Bus", "stream": "bus"}, token)
    sid = created["session_id"]
    teacher = await WS.connect(http, nodes.a.url, sid, token, "teacher@A")
    sockets = []
    for i in range(students):
        joined = await api_b.join(created["join_code"], f"S{i}")
        sockets.append(await WS.connect(http, nodes.b.url, sid, joined["token"], f"S{i}@B"))
    return api_a, api_b, sid, teacher, sockets


async def test_bus_events_queued_while_redis_is_down_all_arrive(two_nodes):
    async with aiohttp.ClientSession() as http:
        api_a, api_b, sid, teacher, (student,) = await open_class(http, two_nodes)
        await teacher.send(type="chat", text="before")
        await student.wait("chat", lambda m: m["message"]["text"] == "before")

        two_nodes.redis.kill()
        for api in (api_a, api_b):
            await async_wait_for(
                lambda api=api: _bus_is(api, False), 15, "the bus to notice Redis is gone"
            )
        sent = [f"while down {i}" for i in range(25)]
        for text in sent:
            await teacher.send(type="chat", text=text)
        await student.send(type="chat", text="student while down")
        # Queued on node A, not lost (local delivery already happened).
        await teacher.wait("chat", lambda m: m["message"]["text"] == sent[-1])
        assert (await bus_status(api_a))["queued"] >= len(sent)

        two_nodes.redis.start_again()
        for text in sent:
            await student.wait("chat", lambda m, t=text: m["message"]["text"] == t, timeout=20)
        await teacher.wait("chat", lambda m: m["message"]["text"] == "student while down")
        got = [m["message"]["text"] for m in student.of("chat")]
        assert [t for t in got if t.startswith("while down")] == sent  # once each, in order
        # Readers cut again and again (Redis up): what is published meanwhile still arrives.
        cut = [f"cut {i}" for i in range(10)]
        for text in cut:
            await _cut_readers(two_nodes.redis.url)
            await teacher.send(type="chat", text=text)
        for text in cut:
            await student.wait("chat", lambda m, t=text: m["message"]["text"] == t, timeout=20)
        for api in (api_a, api_b):
            status = await bus_status(api)
            assert status["dropped"] == 0, status
        await teacher.close()
        await student.close()


async def _cut_readers(url: str) -> None:
    """Kill every connection reading events (pub/sub subscribers, blocked readers)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        for entry in await client.client_list():
            flags = entry.get("flags", "")
            if "P" in flags or "b" in flags:
                await client.client_kill_filter(_id=entry["id"])
    finally:
        await client.aclose()


async def _bus_is(api: Api, connected: bool) -> bool:
    return (await bus_status(api))["connected"] is connected


async def test_forged_and_unsigned_bus_events_are_dropped(two_nodes):
    import json

    import redis.asyncio as aioredis

    from airclass_web.classroom.events import STREAM

    async with aiohttp.ClientSession() as http:
        api_a, api_b, sid, teacher, (student,) = await open_class(http, two_nodes)
        forged = {
            "session_id": sid,
            "type": "chat",
            "to": "all",
            "message": {
                "id": "x",
                "user_id": "kim",
                "name": "kim",
                "role": "teacher",
                "text": "FORGED: the exam is cancelled",
                "timestamp": 0,
            },
            "_origin": "node-evil",
            "_id": "node-evil:1",
        }
        payload = json.dumps(forged).encode()
        client = aioredis.from_url(two_nodes.redis.url)
        try:
            await client.xadd(STREAM, {"m": payload, "s": b"0" * 64})  # wrong signature
            await client.xadd(STREAM, {"m": payload})  # unsigned
        finally:
            await client.aclose()
        await teacher.send(type="chat", text="genuine")
        await student.wait("chat", lambda m: m["message"]["text"] == "genuine")
        assert not [m for m in student.of("chat") if "FORGED" in m["message"]["text"]]
        status = await bus_status(api_b)
        assert status["rejected"] == 2, status
        # No password in the nodes' logs.
        for node in (two_nodes.a, two_nodes.b):
            assert REDIS_PASSWORD not in node.log()
        await teacher.close()
        await student.close()


# -- WebSocket limits, presence coalescing, eviction, sub without a shared store -------------
async def _class_on(http, node: NodeProcess, students: int = 1):
    api = Api(http, node.url)
    token = await api.login("kim")
    created = await api.ok("POST", "/api/sessions", {"title": "Limits", "stream": "lim"}, token)
    joined = [await api.join(created["join_code"], f"S{i}") for i in range(students)]
    return api, token, created["session_id"], joined


async def _status(api: Api) -> dict:
    status, body = await api.call("GET", "/api/classroom/status")
    assert status == 200, body
    return body


async def test_websocket_rate_limit_on_every_type_and_sockets_per_user(prod_node):
    from airclass_web.classroom.realtime import MAX_SOCKETS_PER_USER

    url = prod_node.url
    async with aiohttp.ClientSession() as http:
        api, token, sid, (stu,) = await _class_on(http, prod_node)
        # Sockets per user: the cap holds, and a closed socket frees its place.
        sockets = [
            await WS.connect(http, url, sid, stu["token"], f"s{i}")
            for i in range(MAX_SOCKETS_PER_USER)
        ]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await WS.connect(http, url, sid, stu["token"], "one too many")
        assert refused.value.status == 429
        await sockets.pop().close()

        async def place_freed():
            return (await _status(api))["clients"] == MAX_SOCKETS_PER_USER - 1

        await async_wait_for(place_freed, 10, "the node to see the socket closed")
        sockets.append(await WS.connect(http, url, sid, stu["token"], "again"))

        # A flood of pings (not chat): refused past the burst with one error, then closed.
        ws = sockets[0]
        for i in range(400):
            await ws.send(type="ping", t=i)
        await ws.wait("error", lambda m: m.get("code") == "rate_limited")
        await async_wait_for(lambda: ws.closed, 10, "the flooding socket to be closed")
        assert ws.ws.close_code == 1008
        assert len(ws.of("pong")) < 400
        assert len(ws.of("error", lambda m: m.get("code") == "rate_limited")) == 1
        assert (await _status(api))["rate_limited"] >= 200
        # The other sockets of this user are unaffected.
        reply = await sockets[1].request(type="ping", t="still here")
        assert reply["type"] == "pong"
        for s in sockets[1:]:
            await s.close()


async def test_presence_is_coalesced_not_stored_per_toggle(prod_node):
    import sqlite3

    url = prod_node.url
    async with aiohttp.ClientSession() as http:
        api, token, sid, (stu,) = await _class_on(http, prod_node)
        teacher = await WS.connect(http, url, sid, token, "teacher")
        student = await WS.connect(http, url, sid, stu["token"], "student")
        for i in range(30):  # a tab flapping visible / hidden
            await student.send(type="presence", playing=True, visible=i % 2 == 0)
        await student.send(type="presence", playing=True, visible=True)
        await teacher.wait(
            "presence",
            lambda m: (
                m["presence"]["student_id"] == stu["student_id"]
                and m["presence"]["playing"]
                and m["presence"]["visible"]
            ),
        )
        reply = await student.request(type="ping")  # every message above was read
        assert reply["type"] == "pong"

        def rows():
            conn = sqlite3.connect(prod_node.data_dir / "airclass.sqlite3")
            try:
                return conn.execute(
                    "SELECT doc FROM engagement_events WHERE student_id = ? AND kind = 'presence'"
                    " ORDER BY timestamp",
                    (stu["student_id"],),
                ).fetchall()
            finally:
                conn.close()

        stored = await async_wait_for(rows, 10, "the presence to be stored")
        assert len(stored) <= 2, f"{len(stored)} presence rows for 31 toggles"
        assert '"visible": true' in stored[-1][0]
        pushed = teacher.of("presence", lambda m: m["presence"]["student_id"] == stu["student_id"])
        assert len(pushed) <= 3, len(pushed)  # online + at most two coalesced changes
        await teacher.close()
        await student.close()


async def test_session_end_evicts_per_session_caches(prod_node):
    url = prod_node.url
    async with aiohttp.ClientSession() as http:
        api, token, sid, joined = await _class_on(http, prod_node, students=3)
        teacher = await WS.connect(http, url, sid, token, "teacher")
        students = [await WS.connect(http, url, sid, j["token"], j["name"]) for j in joined]
        for ws in students:
            await ws.send(type="chat", text="이해가 안 돼요")  # rate buckets, alerts
        await teacher.wait("alert", count=3)
        quiz = await teacher.request(
            type="quiz_create", quiz={"question": "q", "options": ["a", "b"], "correct": 0}
        )
        await teacher.send(type="quiz_publish", quiz_id=quiz["quiz"]["id"])
        await students[0].wait("quiz")
        await students[0].request(type="quiz_answer", quiz_id=quiz["quiz"]["id"], answer=0)
        await api.ok("GET", f"/api/engagement/session/{sid}", token=token)
        caches = (await _status(api))["caches"]
        for name in ("names", "quizzes", "chat_buckets", "alert_times", "reports"):
            assert caches[name] > 0, caches

        await api.ok("POST", f"/api/sessions/{sid}/end", token=token)
        await students[0].wait("session_ended")
        for ws in (teacher, *students):
            await ws.close()

        async def emptied():
            caches = (await _status(api))["caches"]
            return caches if not any(caches.values()) else None

        await async_wait_for(emptied, 10, "every per-session cache to be evicted")


async def test_sub_without_shared_store_serves_class_websocket_through_main(tmp_path):
    env = {"AIRCLASS_CLUSTER_SECRET": "cluster-secret-for-tests-0123456789abcdef"}
    redis = RedisServer(tmp_path).start()
    main = sub = None
    try:
        main = NodeProcess(tmp_path, "--role", "main", "--redis-url", redis.url, env=env,
                           dev=False, name="main")  # fmt: skip
        assert add_teacher(main.data_dir, "kim").returncode == 0
        main.start()
        sub = NodeProcess(
            tmp_path, "--role", "sub", "--main-url", main.url, "--redis-url", redis.url,
            env=env, dev=False, name="sub",
        ).start()  # fmt: skip
        async with aiohttp.ClientSession() as http:
            api, token, sid, (stu,) = await _class_on(http, main)
            teacher = await WS.connect(http, main.url, sid, token, "teacher@main")
            student = await WS.connect(http, sub.url, sid, stu["token"], "student@sub")
            assert student.of("welcome")[0]["role"] == "student"
            await teacher.send(type="chat", text="hello through the sub")
            await student.wait("chat", lambda m: m["message"]["text"] == "hello through the sub")
            await student.send(type="chat", text="hi from the sub")
            await teacher.wait("chat", lambda m: m["message"]["text"] == "hi from the sub")
            # The main still decides: a bad token is refused, through the sub.
            with pytest.raises(aiohttp.WSServerHandshakeError) as bad:
                await WS.connect(http, sub.url, sid, "not-a-token", "bad")
            assert bad.value.status == 401
            assert (await _status(Api(http, sub.url)))["proxied_to_main"] == 1
            await teacher.close()
            await student.close()
    finally:
        for node in (sub, main):
            if node is not None:
                node.stop()
        redis.stop()
