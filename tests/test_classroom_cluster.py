"""Two real nodes sharing a real redis-server (events) and one store: chat, quizzes,
live statistics and presence cross nodes; 450 students answer at once; Redis is killed
mid-quiz and restarted."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

import aiohttp
import pytest

from .classroom_support import WS, Api, add_teacher
from .support import NodeProcess, RedisServer, async_wait_for


class Cluster:
    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp).start()
        self.data_dir = tmp / "shared-data"
        assert add_teacher(self.data_dir, "kim").returncode == 0
        extra = ("--redis-url", self.redis.url, "--data-dir", str(self.data_dir))
        # 450 students join from one address at once (a school behind one NAT).
        extra += ("--ip-rate-limit", "0")
        self.a = NodeProcess(tmp, *extra, name="a").start()
        self.b = NodeProcess(tmp, *extra, name="b").start()

    def restart_redis(self) -> None:
        """SIGKILL redis-server, then start a fresh one on the same port."""
        port = self.redis.port
        self.redis.proc.send_signal(signal.SIGKILL)
        self.redis.proc.wait(10)
        again = RedisServer(self.tmp)
        again.port = port
        self.redis = again.start()

    def responses(self, quiz_id: str) -> tuple[int, int]:
        conn = sqlite3.connect(self.data_dir / "airclass.sqlite3")
        try:
            return conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT student_id) FROM quiz_responses WHERE quiz_id = ?",
                (quiz_id,),
            ).fetchone()
        finally:
            conn.close()

    def stop(self) -> None:
        for node in (self.a, self.b):
            node.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


async def open_class(http, cluster, stream="cluster"):
    api_a, api_b = Api(http, cluster.a.url), Api(http, cluster.b.url)
    token = await api_a.login("kim")
    data = await api_a.ok(
        "POST", "/api/sessions", {"title": "Cluster class", "stream": stream}, token=token
    )
    return api_a, api_b, token, data["session_id"], data["join_code"]


async def test_chat_quiz_stats_presence_cross_nodes(http, cluster):
    api_a, api_b, token, sid, code = await open_class(http, cluster)
    teacher = await WS.connect(http, cluster.a.url, sid, token, "teacher@A")
    joined = [await api_b.join(code, f"B{i}") for i in range(3)]
    on_b = [await WS.connect(http, cluster.b.url, sid, j["token"], j["name"]) for j in joined]
    local = await api_a.join(code, "A0")
    on_a = await WS.connect(http, cluster.a.url, sid, local["token"], "A0")

    # Presence of students on B reaches the teacher on A.
    await on_b[0].send(type="presence", playing=True, visible=True)
    await teacher.wait(
        "presence",
        lambda m: (
            m["presence"]["student_id"] == joined[0]["student_id"] and m["presence"]["playing"]
        ),
    )
    assert teacher.of("presence", lambda m: m["presence"]["node"] != on_a.of("welcome")[0]["node"])

    # Chat: B -> teacher on A and student on A; teacher -> students on B.
    await on_b[1].send(type="chat", text="question from node B")
    for ws in (teacher, on_a, on_b[2]):
        await ws.wait("chat", lambda m: m["message"]["text"] == "question from node B")
    await teacher.send(type="chat", text="answer from node A")
    for ws in on_b:
        await ws.wait("chat", lambda m: m["message"]["text"] == "answer from node A")

    # Quiz: created and published on A, pushed to B, answered on B, stats live on A.
    created = await teacher.request(
        type="quiz_create",
        quiz={"question": "Largest planet?", "options": ["Mars", "Jupiter"], "correct": 1},
    )
    quiz_id = created["quiz"]["id"]
    await teacher.send(type="quiz_publish", quiz_id=quiz_id)
    for ws in (*on_b, on_a):
        await ws.wait("quiz", lambda m: m["quiz"]["id"] == quiz_id)
    for i, ws in enumerate(on_b):
        ack = await ws.request(type="quiz_answer", quiz_id=quiz_id, answer=1 if i else 0)
        assert ack["accepted"] is True
    stats = (await teacher.wait("quiz_stats", lambda m: m["stats"]["total"] == 3))["stats"]
    assert stats["counts"] == [1, 2]
    # Teacher closes on A: students on B see the result.
    await teacher.send(type="quiz_close", quiz_id=quiz_id)
    closed = await on_b[0].wait("quiz_closed")
    assert closed["quiz"]["correct"] == 1 and closed["stats"]["counts"] == [1, 2]
    # The mute set on A applies to a student on B.
    await teacher.send(type="mute", student_id=joined[2]["student_id"], muted=True)
    await on_b[2].wait("muted")
    assert (await on_b[2].request(type="chat", text="hi"))["code"] == "muted"
    for ws in (teacher, on_a, *on_b):
        await ws.close()


async def test_450_students_answer_at_once(http, cluster):
    n = 450
    api_a, api_b, token, sid, code = await open_class(http, cluster, "big")
    apis = (api_a, api_b)
    sem = asyncio.Semaphore(40)

    async def join(i):
        async with sem:
            return await apis[i % 2].join(code, f"student {i}")

    joined = await asyncio.gather(*(join(i) for i in range(n)))

    async def connect(i):
        async with sem:
            node = cluster.a if i % 2 == 0 else cluster.b
            return await WS.connect(http, node.url, sid, joined[i]["token"], f"s{i}")

    sockets = await asyncio.gather(*(connect(i) for i in range(n)))
    teacher = await WS.connect(http, cluster.a.url, sid, token, "teacher")
    quiz = await api_a.ok(
        "POST",
        "/api/quiz/create",
        {
            "session_id": sid,
            "question": "Pick one",
            "options": ["a", "b", "c", "d"],
            "correct": 2,
            "time_limit": 120,
        },
        token=token,
    )
    quiz_id = quiz["quiz_id"]
    await api_a.ok("POST", "/api/quiz/publish", {"quiz_id": quiz_id}, token=token)
    await asyncio.gather(*(ws.wait("quiz", timeout=30) for ws in sockets))

    answers = [(i * 7) % 4 for i in range(n)]
    acks = await asyncio.gather(
        *(
            ws.request(type="quiz_answer", quiz_id=quiz_id, answer=answers[i], timeout=60)
            for i, ws in enumerate(sockets)
        )
    )
    assert [a.get("accepted") for a in acks] == [True] * n, [
        a for a in acks if "error" in a.get("type")
    ][:3]
    expected = [answers.count(k) for k in range(4)]
    # Exactly once in the store, exact statistics on both nodes, live stats to the teacher.
    assert cluster.responses(quiz_id) == (n, n)
    for api in apis:
        stats = await api.ok("GET", f"/api/quiz/statistics/{quiz_id}", token=token)
        assert stats["total"] == n and stats["counts"] == expected
        assert stats["correct"] == expected[2]
    live = await teacher.wait("quiz_stats", lambda m: m["stats"]["total"] == n, timeout=20)
    assert live["stats"]["counts"] == expected
    # Answering again is refused for everyone.
    dups = await asyncio.gather(
        *(ws.request(type="quiz_answer", quiz_id=quiz_id, answer=0) for ws in sockets[:20])
    )
    assert {d["code"] for d in dups} == {"duplicate"}
    assert cluster.responses(quiz_id) == (n, n)
    await asyncio.gather(*(ws.close() for ws in (*sockets, teacher)))


async def test_redis_killed_mid_quiz(http, cluster):
    """Runs last in this module: it restarts the cluster's redis-server."""
    api_a, api_b, token, sid, code = await open_class(http, cluster, "resilient")
    teacher = await WS.connect(http, cluster.a.url, sid, token, "teacher@A")
    joined = [await api_b.join(code, f"R{i}") for i in range(20)]
    students = [await WS.connect(http, cluster.b.url, sid, j["token"], j["name"]) for j in joined]
    quiz = await teacher.request(
        type="quiz_create",
        quiz={"question": "Survives?", "options": ["yes", "no"], "correct": 0, "time_limit": 300},
    )
    quiz_id = quiz["quiz"]["id"]
    await teacher.send(type="quiz_publish", quiz_id=quiz_id)
    await asyncio.gather(*(ws.wait("quiz") for ws in students))
    acked = 0

    async def answer(batch):
        nonlocal acked
        acks = await asyncio.gather(
            *(ws.request(type="quiz_answer", quiz_id=quiz_id, answer=0) for ws in batch)
        )
        assert all(a.get("accepted") for a in acks), acks
        acked += len(acks)

    await answer(students[:10])
    await teacher.wait("quiz_stats", lambda m: m["stats"]["total"] == 10)

    cluster.redis.proc.send_signal(signal.SIGKILL)
    cluster.redis.proc.wait(10)

    async def bus_connected(api, want: bool):
        status, body = await api.call("GET", "/api/classroom/status")
        return status == 200 and body["bus"]["connected"] is want

    for api in (api_a, api_b):
        await async_wait_for(lambda api=api: bus_connected(api, False), 15, "bus to notice")
    await answer(students[10:15])  # Redis is down: answers are still stored and acked

    port = cluster.redis.port
    again = RedisServer(cluster.tmp)
    again.port = port
    cluster.redis = again.start()
    for api in (api_a, api_b):
        await async_wait_for(lambda api=api: bus_connected(api, True), 20, "resubscription")

    await answer(students[15:])
    # Events flow again: live statistics from B reach the teacher on A, and chat too.
    stats = await teacher.wait("quiz_stats", lambda m: m["stats"]["total"] == 20, timeout=15)
    assert stats["stats"]["counts"] == [20, 0]
    await students[0].send(type="chat", text="back online")
    await teacher.wait("chat", lambda m: m["message"]["text"] == "back online")
    await teacher.send(type="chat", text="welcome back")
    await students[-1].wait("chat", lambda m: m["message"]["text"] == "welcome back")
    # No acknowledged answer was lost.
    assert acked == 20
    assert cluster.responses(quiz_id) == (20, 20)
    final = await api_a.ok("GET", f"/api/quiz/statistics/{quiz_id}", token=token)
    assert final["total"] == 20
    await asyncio.gather(*(ws.close() for ws in (*students, teacher)))
