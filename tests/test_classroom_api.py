"""Classroom on one real node: accounts, sessions, chat, quizzes, engagement, bad input."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import aiohttp
import pytest

from .classroom_support import PASSWORD, WS, Api, add_teacher
from .support import NodeProcess, http_json, wait_for

ENV_PASSWORD = "env-password-123"


@pytest.fixture(scope="module")
def classroom_node(tmp_path_factory):
    """A production-mode node (no --dev) with teacher accounts kim and lee."""
    tmp = tmp_path_factory.mktemp("classroom")
    node = NodeProcess(tmp, dev=False, name="cls", env={"AIRCLASS_TEACHER_PASSWORD": ENV_PASSWORD})
    for user in ("kim", "lee"):
        result = add_teacher(node.data_dir, user)
        assert result.returncode == 0, result.stderr
    node.start()
    yield node
    node.stop()


@pytest.fixture
async def api(classroom_node):
    async with aiohttp.ClientSession() as http:
        yield Api(http, classroom_node.url)


async def new_session(api: Api, teacher: str = "kim", stream: str = "math"):
    token = await api.login(teacher)
    data = await api.ok(
        "POST", "/api/sessions", {"title": "Algebra 1", "stream": stream}, token=token
    )
    return token, data["session_id"], data["join_code"]


async def open_monitor_token(api: Api, node: NodeProcess, teacher_token: str) -> str:
    """A monitor token from /api/token, bound to no session: only for a public stream."""
    await api.ok("PUT", "/api/streams/open-room/public", {"public": True}, token=teacher_token)
    return node.token("open-room", user_type="monitor")["token"]


def sqlite_rows(node: NodeProcess, sql: str, *args):
    conn = sqlite3.connect(node.data_dir / "airclass.sqlite3")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_cli_accounts_login_and_encrypted_api_key(api: Api, classroom_node):
    # The CLI refuses duplicates and short passwords.
    dup = add_teacher(classroom_node.data_dir, "kim")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    short = add_teacher(classroom_node.data_dir, "park", "short")
    assert short.returncode == 1 and "at least 8" in short.stderr

    status, body = await api.call(
        "POST", "/api/auth/login", {"username": "kim", "password": "wrong password"}
    )
    assert status == 401 and body["error"]
    status, body = await api.call(
        "POST", "/api/auth/login", {"username": "nobody", "password": PASSWORD}
    )
    assert status == 401
    token = await api.login("kim")
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["role"], claims["action"], claims["stream"], claims["sub"]) == (
        "teacher",
        "publish",
        "*",
        "kim",
    )
    me = await api.ok("GET", "/api/auth/me", token=token)
    assert me == {"username": "kim", "account": True}

    # A teacher's AI provider key is stored encrypted with AIRCLASS_DATA_KEY (not derived
    # from the JWT secret), never in clear; the password only as a scrypt hash.
    secret_key = "AIzaSy-test-gemini-key-0123456789"
    await api.ok("POST", "/api/ai/keys/gemini", {"api_key": secret_key}, token=token)
    (stored,) = sqlite_rows(classroom_node, "SELECT doc FROM ai_keys WHERE id = 'kim:gemini'")[0]
    doc = json.loads(stored)
    assert secret_key not in stored and doc["key_encrypted"]
    (teacher,) = sqlite_rows(classroom_node, "SELECT doc FROM teachers WHERE id = 'kim'")[0]
    assert json.loads(teacher)["password_hash"].startswith("scrypt$") and PASSWORD not in teacher
    from cryptography.fernet import Fernet

    from .support import TEST_DATA_KEY

    assert Fernet(TEST_DATA_KEY.encode()).decrypt(doc["key_encrypted"].encode()).decode() == (
        secret_key
    )
    # The old single-key route (a key nothing read) is gone.
    status, _ = await api.call("PUT", "/api/auth/api-key", {"api_key": "x"}, token=token)
    assert status in (404, 405)


async def test_teacher_auth_replaces_interim_password(api: Api):
    # Accounts exist: the env password no longer grants publishing, an account does.
    q = "/api/token?user_type=teacher&action=publish&stream=math"
    status, _ = await api.call("POST", q, {"password": ENV_PASSWORD})
    assert status == 401
    status, body = await api.call("POST", q, {"username": "kim", "password": PASSWORD})
    assert status == 200 and body["rtmp_url"]
    token = await api.login("kim")
    status, body = await api.call("POST", q, token=token)
    assert status == 200 and body["rtmp_url"]
    # A student token is no teacher credential.
    _, sid, code = await new_session(api)
    student = await api.join(code, "Minji")
    status, _ = await api.call("POST", q, token=student["token"])
    assert status == 401


async def test_teacher_cannot_mint_another_teachers_token(api: Api):
    """A teacher token's identity is the one its credentials prove, never the caller's
    user_id: lee cannot get a token for kim and then read kim's sessions."""
    import jwt

    kim_token, _, _ = await new_session(api, "kim", stream="kims-class")
    lee_token = await api.login("lee")
    q = "/api/token?user_type=teacher&action=publish&stream=lees-room&user_id=kim"
    for creds, token in (({}, lee_token), ({"username": "lee", "password": PASSWORD}, "")):
        status, body = await api.call("POST", q, creds, token=token)
        assert status == 200
        assert jwt.decode(body["token"], options={"verify_signature": False})["sub"] == "lee"
        sessions = await api.ok("GET", "/api/sessions", token=body["token"])
        assert all(s["stream"] != "kims-class" for s in sessions["sessions"])
    kim_sessions = await api.ok("GET", "/api/sessions", token=kim_token)
    assert any(s["stream"] == "kims-class" for s in kim_sessions["sessions"])


async def test_sessions_join_and_bad_input(api: Api, classroom_node):
    token, sid, code = await new_session(api)
    assert len(code) == 8
    # Bad / missing / wrong-role tokens.
    body = {"title": "x", "stream": "math"}
    assert (await api.call("POST", "/api/sessions", body))[0] == 401
    assert (await api.call("POST", "/api/sessions", body, token="not-a-jwt"))[0] == 401
    free = f"{classroom_node.url}/api/token?user_type=teacher&stream=math"
    assert http_json("POST", free)[0] == 401  # the teacher role always needs credentials
    read_teacher = classroom_node.token(
        "math", user_type="teacher", username="kim", password=PASSWORD
    )["token"]
    status, err = await api.call("POST", "/api/sessions", body, token=read_teacher)
    assert status == 403 and "error" in err
    assert (await api.call("POST", "/api/sessions", {"title": "", "stream": "math"}, token=token))[
        0
    ] == 400
    assert (await api.call("POST", "/api/sessions", {"title": "t", "stream": "../x"}, token=token))[
        0
    ] == 400
    # Joining.
    assert (await api.call("POST", "/api/sessions/join", {"join_code": "ZZZZZZ", "name": "a"}))[
        0
    ] == 404
    assert (await api.call("POST", "/api/sessions/join", {"join_code": "", "name": "a"}))[0] == 400
    assert (await api.call("POST", "/api/sessions/join", {"join_code": code, "name": "  "}))[
        0
    ] == 400
    assert (await api.call("POST", "/api/sessions/join", {"join_code": code, "name": "x" * 41}))[
        0
    ] == 400
    status, _ = await api.call(
        "POST",
        "/api/sessions/join",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    joined = await api.join(code.lower(), "Minji")
    assert joined["session_id"] == sid and joined["stream"] == "math"
    assert joined["whep_url"] == f"{classroom_node.url}/live/math/whep"
    import jwt

    claims = jwt.decode(joined["token"], options={"verify_signature": False})
    assert (claims["role"], claims["action"], claims["stream"], claims["sid"]) == (
        "student",
        "read",
        "math",
        sid,
    )
    # Session info: its students and its teacher; not another teacher.
    assert (await api.ok("GET", f"/api/sessions/{sid}", token=joined["token"]))["title"]
    other = await api.login("lee")
    assert (await api.call("GET", f"/api/sessions/{sid}", token=other))[0] == 403
    assert (await api.call("GET", "/api/sessions/ses-nope", token=token))[0] == 404
    sessions = (await api.ok("GET", "/api/sessions", token=token))["sessions"]
    assert sid in [s["id"] for s in sessions]
    # Oversized body: 413 JSON.
    status, err = await api.call(
        "POST",
        "/api/sessions/join",
        data=b"x" * (300 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and err["status"] == 413
    # A student cannot end the session; the teacher can, then nobody joins.
    assert (await api.call("POST", f"/api/sessions/{sid}/end", token=joined["token"]))[0] == 403
    await api.ok("POST", f"/api/sessions/{sid}/end", token=token)
    assert (await api.call("POST", "/api/sessions/join", {"join_code": code, "name": "late"}))[
        0
    ] == 404


async def test_websocket_auth_errors(api: Api, classroom_node):
    token, sid, code = await new_session(api)
    _, sid2, code2 = await new_session(api)
    other_student = await api.join(code2, "Other")
    base = classroom_node.url.replace("http", "ws", 1)
    for query, expected in [
        ("", 401),
        ("?token=garbage", 401),
        (f"?token={other_student['token']}", 403),
    ]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await api.http.ws_connect(f"{base}/ws/session/{sid}{query}")
        assert info.value.status == expected
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.http.ws_connect(f"{base}/ws/session/ses-unknown?token={token}")
    assert info.value.status == 404
    # An open /api/token monitor token (of a public stream) is bound to no session: refused.
    monitor = await open_monitor_token(api, classroom_node, token)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await api.http.ws_connect(f"{base}/ws/session/{sid}?token={monitor}")
    assert info.value.status == 403


async def test_chat_history_delete_mute_limits(api: Api, classroom_node):
    token, sid, code = await new_session(api)
    a, b = await api.join(code, "Minji"), await api.join(code, "Jun")
    url = classroom_node.url
    teacher = await WS.connect(api.http, url, sid, token, "teacher")
    sa = await WS.connect(api.http, url, sid, a["token"], "A")
    sb = await WS.connect(api.http, url, sid, b["token"], "B")

    await sa.send(type="chat", text="안녕하세요 선생님")
    for ws in (teacher, sa, sb):
        msg = (await ws.wait("chat"))["message"]
        assert msg["text"] == "안녕하세요 선생님" and msg["name"] == "Minji"
    await teacher.send(type="chat", text="Welcome!")
    first_id = (await sb.wait("chat"))["message"]["id"]
    await sb.wait("chat", lambda m: m["message"]["role"] == "teacher")

    # Length limit, oversized frame, bad JSON, unknown type: error, connection kept.
    err = await sa.request(type="chat", text="x" * 501)
    assert err["type"] == "error" and err["code"] == "too_large"
    await sa.send(type="chat", text="y" * 9000)
    assert (await sa.wait("error", lambda m: "larger than" in m["message"]))["code"] == (
        "too_large"
    )
    await sa.ws.send_str("{nope")
    await sa.wait("error", lambda m: m["code"] == "bad_request")
    err = await sa.request(type="launch_rockets")
    assert err["type"] == "error" and err["code"] == "unknown_type"
    assert (await sa.request(type="ping"))["type"] == "pong"
    assert not sa.closed

    # Students may not moderate.
    err = await sa.request(type="chat_delete", message_id=first_id)
    assert err["status"] == 403

    # History on join: a late joiner gets the last messages.
    late = await api.join(code, "Late")
    sl = await WS.connect(api.http, url, sid, late["token"], "late")
    history = sl.of("welcome")[0]["chat"]
    assert [m["text"] for m in history][-2:] == ["안녕하세요 선생님", "Welcome!"]
    rest = await api.ok("GET", f"/api/sessions/{sid}/chat?limit=1", token=late["token"])
    assert [m["text"] for m in rest["messages"]] == ["Welcome!"]

    # Teacher deletes a message: everyone is told, history forgets it.
    await teacher.send(type="chat_delete", message_id=first_id)
    for ws in (sa, sb, sl):
        await ws.wait("chat_deleted", lambda m: m["message_id"] == first_id)
    rest = await api.ok("GET", f"/api/sessions/{sid}/chat", token=token)
    assert first_id not in [m["id"] for m in rest["messages"]]

    # Mute: the student is told and refused; unmute restores.
    await teacher.send(type="mute", student_id=b["student_id"], muted=True)
    await sb.wait("muted", lambda m: m["muted"] is True)
    err = await sb.request(type="chat", text="hello?")
    assert err["type"] == "error" and err["code"] == "muted"
    await teacher.send(type="mute", student_id=b["student_id"], muted=False)
    await sb.wait("muted", lambda m: m["muted"] is False)
    await sb.send(type="chat", text="thanks")
    await teacher.wait("chat", lambda m: m["message"]["text"] == "thanks")

    # Rate limit: a burst of 5, then 429 (the teacher is not limited).
    results = [await sl.request(type="ping")]
    for i in range(8):
        await sl.send(type="chat", text=f"spam {i}", ref=f"s{i}")
    err = await sl.wait("error", lambda m: m.get("code") == "rate_limited")
    assert err["status"] == 429 and results[0]["type"] == "pong"
    await teacher.wait("chat", lambda m: m["message"]["text"] == "spam 0")  # the burst's start
    for i in range(8):
        await teacher.send(type="chat", text=f"t{i}")
    await sa.wait("chat", lambda m: m["message"]["text"] == "t7")

    # Monitors read only.
    mon = await api.ok("POST", f"/api/sessions/{sid}/monitor-token", token=token)
    monitor = await WS.connect(api.http, url, sid, mon["token"], "monitor")
    err = await monitor.request(type="chat", text="hi")
    assert err["status"] == 403
    for ws in (teacher, sa, sb, sl, monitor):
        await ws.close()


async def test_quiz_flow(api: Api, classroom_node):
    token, sid, code = await new_session(api)
    url = classroom_node.url
    students = [await api.join(code, n) for n in ("A", "B", "C")]
    teacher = await WS.connect(api.http, url, sid, token, "teacher")
    sws = [await WS.connect(api.http, url, sid, s["token"], s["name"]) for s in students]

    # Create over the WebSocket, and bad specs.
    bad = await teacher.request(
        type="quiz_create", quiz={"question": "q", "options": ["x"], "correct": 0}
    )
    assert bad["type"] == "error" and bad["status"] == 400
    created = await teacher.request(
        type="quiz_create",
        quiz={
            "question": "2 + 2 = ?",
            "kind": "choice",
            "options": ["3", "4", "5"],
            "correct": 1,
            "time_limit": 60,
        },
    )
    quiz_id = created["quiz"]["id"]
    # Students may not publish (REST 403 and WS error).
    status, _ = await api.call(
        "POST", "/api/quiz/publish", {"quiz_id": quiz_id}, token=students[0]["token"]
    )
    assert status == 403
    assert (await sws[0].request(type="quiz_publish", quiz_id=quiz_id))["status"] == 403
    # Not yet published: answers refused.
    status, err = await api.call(
        "POST", "/api/quiz/response", {"quiz_id": quiz_id, "answer": 1}, token=students[0]["token"]
    )
    assert status == 409
    await teacher.send(type="quiz_publish", quiz_id=quiz_id)
    for ws in sws:
        pushed = (await ws.wait("quiz"))["quiz"]
        assert pushed["id"] == quiz_id and "correct" not in pushed
        assert pushed["options"] == ["3", "4", "5"]

    ack = await sws[0].request(type="quiz_answer", quiz_id=quiz_id, answer=1)
    assert ack["type"] == "quiz_answer" and ack["accepted"] is True
    dup = await sws[0].request(type="quiz_answer", quiz_id=quiz_id, answer=2)
    assert dup["type"] == "error" and dup["code"] == "duplicate"
    assert (await sws[1].request(type="quiz_answer", quiz_id=quiz_id, answer=9))["status"] == 400
    status, body = await api.call(
        "POST", "/api/quiz/response", {"quiz_id": quiz_id, "answer": 0}, token=students[1]["token"]
    )
    assert status == 201 and body["accepted"]
    stats = (await teacher.wait("quiz_stats", lambda m: m["stats"]["total"] == 2))["stats"]
    assert stats["counts"] == [1, 1, 0] and stats["correct"] == 1 and stats["accuracy"] == 50.0
    assert {r["name"] for r in stats["recent"]} == {"A", "B"}

    # Statistics: teacher and monitor yes, students no, unknown quiz 404.
    assert (await api.ok("GET", f"/api/quiz/statistics/{quiz_id}", token=token))["total"] == 2
    assert (await api.call("GET", f"/api/quiz/statistics/{quiz_id}", token=students[0]["token"]))[
        0
    ] == 403
    assert (await api.call("GET", "/api/quiz/statistics/quiz-nope", token=token))[0] == 404
    assert (
        await api.call(
            "POST",
            "/api/quiz/response",
            {"quiz_id": "quiz-nope", "answer": 1},
            token=students[0]["token"],
        )
    )[0] == 404

    # Close: everyone learns the answer; late answers are refused.
    closed = await api.ok("POST", "/api/quiz/close", {"quiz_id": quiz_id}, token=token)
    assert closed["stats"]["total"] == 2
    for ws in sws:
        msg = await ws.wait("quiz_closed")
        assert msg["quiz"]["correct"] == 1 and msg["stats"]["total"] == 2
    late = await sws[2].request(type="quiz_answer", quiz_id=quiz_id, answer=1)
    assert late["type"] == "error" and late["code"] == "quiz_closed"
    assert (await api.ok("GET", f"/api/quiz/statistics/{quiz_id}", token=token))["total"] == 2

    # Short answer over REST, closing by itself at the deadline.
    created = await api.ok(
        "POST",
        "/api/quiz/create",
        {
            "session_id": sid,
            "question": "Capital of Korea?",
            "kind": "short",
            "correct": ["Seoul", "서울"],
            "time_limit": 5,
        },
        token=token,
    )
    qid = created["quiz_id"]
    await api.ok("POST", "/api/quiz/publish", {"quiz_id": qid}, token=token)
    assert (await api.call("POST", "/api/quiz/publish", {"quiz_id": qid}, token=token))[0] == 409
    await sws[0].wait("quiz", lambda m: m["quiz"]["id"] == qid)
    await api.ok(
        "POST",
        "/api/quiz/response",
        {"quiz_id": qid, "answer": " seoul "},
        token=students[0]["token"],
    )
    await api.ok(
        "POST", "/api/quiz/response", {"quiz_id": qid, "answer": "서울"}, token=students[1]["token"]
    )
    await api.ok(
        "POST",
        "/api/quiz/response",
        {"quiz_id": qid, "answer": "Busan"},
        token=students[2]["token"],
    )
    msg = await sws[2].wait("quiz_closed", lambda m: m["quiz"]["id"] == qid, timeout=10)
    assert msg["stats"]["correct"] == 2 and msg["stats"]["total"] == 3
    status, err = await api.call(
        "POST", "/api/quiz/response", {"quiz_id": qid, "answer": "x"}, token=students[2]["token"]
    )
    assert status == 409
    for ws in (teacher, *sws):
        await ws.close()


async def test_engagement_and_confusion(api: Api, classroom_node):
    token, sid, code = await new_session(api)
    url = classroom_node.url
    a, b = await api.join(code, "Attentive"), await api.join(code, "Away")
    teacher = await WS.connect(api.http, url, sid, token, "teacher")
    sa = await WS.connect(api.http, url, sid, a["token"], "A")
    sb = await WS.connect(api.http, url, sid, b["token"], "B")
    await sa.send(type="presence", playing=True, visible=True)
    await sb.send(type="presence", playing=True, visible=False)
    await teacher.wait(
        "presence",
        lambda m: (
            m["presence"]["student_id"] == a["student_id"]
            and m["presence"]["playing"]
            and m["presence"]["visible"]
        ),
    )
    await teacher.wait(
        "presence",
        lambda m: (
            m["presence"]["student_id"] == b["student_id"]
            and m["presence"]["playing"]
            and not m["presence"]["visible"]
        ),
    )

    # Confusion words (Korean) alert the teacher.
    await sb.send(type="chat", text="잘 모르겠어요... 이해가 안 돼요")
    alert = (await teacher.wait("alert"))["alert"]
    assert alert["student_id"] == b["student_id"] and alert["reason"] == "confusion_words"
    # Low accuracy alerts too (two wrong answers).
    for i in range(2):
        q = await api.ok(
            "POST",
            "/api/quiz/create",
            {"session_id": sid, "question": f"q{i}", "options": ["a", "b"], "correct": 0},
            token=token,
        )
        await api.ok("POST", "/api/quiz/publish", {"quiz_id": q["quiz_id"]}, token=token)
        await api.ok(
            "POST", "/api/quiz/response", {"quiz_id": q["quiz_id"], "answer": 1}, token=b["token"]
        )
        await api.ok(
            "POST", "/api/quiz/response", {"quiz_id": q["quiz_id"], "answer": 0}, token=a["token"]
        )
    await teacher.wait("alert", lambda m: m["alert"]["reason"] == "low_accuracy")
    await sa.send(type="chat", text="I got it, thanks")

    async def report_ready():
        r = await api.ok("GET", f"/api/engagement/session/{sid}", token=token)
        by = {s["student_id"]: s for s in r["students"]}
        return r if by.get(a["student_id"], {}).get("attention", 0) > 50 else None

    from .support import async_wait_for

    report = await async_wait_for(report_ready, 10, "attention to build up")
    by = {s["student_id"]: s for s in report["students"]}
    sa_r, sb_r = by[a["student_id"]], by[b["student_id"]]
    assert sa_r["attention"] > 50 and sb_r["attention"] == 0
    assert sa_r["quiz_accuracy"] == 100 and sb_r["quiz_accuracy"] == 0
    assert sa_r["participation"] > sb_r["participation"] - 1 and sa_r["participation"] >= 60
    assert sb_r["confusion"]["confused"] and "confusion_words" in sb_r["confusion"]["reasons"]
    assert "low_accuracy" in sb_r["confusion"]["reasons"]
    assert not sa_r["confusion"]["confused"]
    assert sa_r["overall"] > sb_r["overall"]
    assert all(
        0 <= s[k] <= 100 for s in (sa_r, sb_r) for k in ("attention", "participation", "overall")
    )
    assert report["summary"]["confused"] == [b["student_id"]]
    assert len(report["trend"]) == 12 and sum(t["answers"] for t in report["trend"]) == 4

    one = await api.ok("GET", f"/api/engagement/student/{sid}/{b['student_id']}", token=token)
    assert one["name"] == "Away" and one["alerts_detail"] and len(one["trend"]) == 12
    # Access: monitor of this session yes; students and session-less monitors no.
    mon = await api.ok("POST", f"/api/sessions/{sid}/monitor-token", token=token)
    assert (await api.call("GET", f"/api/engagement/session/{sid}", token=mon["token"]))[0] == 200
    assert (await api.call("GET", f"/api/engagement/session/{sid}", token=a["token"]))[0] == 403
    open_monitor = await open_monitor_token(api, classroom_node, token)
    assert (await api.call("GET", f"/api/engagement/session/{sid}", token=open_monitor))[0] == 403
    assert (await api.call("GET", f"/api/engagement/student/{sid}/stu-nope", token=token))[0] == 404
    for ws in (teacher, sa, sb):
        await ws.close()


async def test_pages_render(api: Api):
    for path in ("/login", "/teacher", "/monitor", "/join"):
        async with api.http.get(api.base + path) as resp:
            assert resp.status == 200, path
            assert "i18n.js" in await resp.text()


def test_restart_loses_nothing(tmp_path):
    """Stop a node, start another on the same data dir: accounts, sessions, chat, quiz
    answers and engagement are all there. Also: env password only without accounts."""
    node = NodeProcess(
        tmp_path, dev=False, name="first", env={"AIRCLASS_TEACHER_PASSWORD": ENV_PASSWORD}
    ).start()
    try:
        q = "/api/token?user_type=teacher&action=publish&stream=s1&password=" + ENV_PASSWORD
        assert http_json("POST", node.url + q)[0] == 200  # no account yet: env password
        assert add_teacher(node.data_dir, "kim").returncode == 0
        assert http_json("POST", node.url + q)[0] == 401  # accounts exist now

        async def scenario():
            async with aiohttp.ClientSession() as http:
                api = Api(http, node.url)
                token, sid, code = await new_session(api)
                st = await api.join(code, "Persist")
                await api.ok(
                    "POST", f"/api/sessions/{sid}/chat", {"text": "saved"}, token=st["token"]
                )
                quiz = await api.ok(
                    "POST",
                    "/api/quiz/create",
                    {"session_id": sid, "question": "q", "options": ["a", "b"], "correct": 1},
                    token=token,
                )
                await api.ok("POST", "/api/quiz/publish", {"quiz_id": quiz["quiz_id"]}, token=token)
                await api.ok(
                    "POST",
                    "/api/quiz/response",
                    {"quiz_id": quiz["quiz_id"], "answer": 1},
                    token=st["token"],
                )
                return token, sid, st, quiz["quiz_id"]

        token, sid, st, qid = asyncio.run(scenario())
    finally:
        node.stop()
    again = NodeProcess(
        tmp_path, "--data-dir", str(node.data_dir), dev=False, name="second"
    ).start()
    try:

        async def check():
            async with aiohttp.ClientSession() as http:
                api = Api(http, again.url)
                fresh = await api.login("kim")
                assert (await api.ok("GET", f"/api/sessions/{sid}", token=fresh))["title"]
                chat = await api.ok("GET", f"/api/sessions/{sid}/chat", token=st["token"])
                assert [m["text"] for m in chat["messages"]] == ["saved"]
                stats = await api.ok("GET", f"/api/quiz/statistics/{qid}", token=token)
                assert stats["total"] == 1 and stats["correct"] == 1
                eng = await api.ok("GET", f"/api/engagement/session/{sid}", token=token)
                assert eng["students"][0]["name"] == "Persist"
                assert eng["students"][0]["chat_messages"] == 1
                # The old student token still works for the same session.
                dup = await api.call(
                    "POST", "/api/quiz/response", {"quiz_id": qid, "answer": 0}, token=st["token"]
                )
                assert dup[0] == 409

        asyncio.run(check())
    finally:
        again.stop()
    wait_for(lambda: again.proc.poll() is not None, 10, "node exit")
