#!/usr/bin/env python3
"""Classroom benchmark: N WebSocket students on one node.

For each N: chat fan-out latency (teacher message -> every student, p50/p99) and quiz
answer throughput (all students answer at once; each answer stored before its ack).
Prints one JSON line per N. Starts its own `airclass serve --dev` node (SQLite store in a
temporary directory) unless --url is given.

    .venv/bin/python scripts/bench_classroom.py --students 100 450 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(data_dir: str, redis_url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "airclass_web.cli",
        "serve",
        "--dev",
        "--host",
        "127.0.0.1",
        "--http-port",
        str(port),
        "--rtmp-port",
        str(free_port()),
        "--data-dir",
        data_dir,
        "--log-level",
        "WARNING",
    ]
    if redis_url:
        args += ["--redis-url", redis_url]
    env = {**os.environ, "AIRCLASS_JWT_SECRET": os.urandom(16).hex()}
    proc = subprocess.Popen(args, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/api/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("node did not start")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


class Student:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.chat_at: dict[str, float] = {}
        self.quiz_at: float | None = None
        self.ack_at: float | None = None
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            data = json.loads(msg.data)
            kind = data["type"]
            if kind == "chat":
                self.chat_at[data["message"]["text"]] = now
            elif kind == "quiz":
                self.quiz_at = now
            elif kind == "quiz_answer":
                self.ack_at = now
            elif kind == "error":
                print("error:", data, file=sys.stderr)


async def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        await asyncio.sleep(0.005)


async def bench(url: str, n: int, messages: int) -> dict:
    ws_url = url.replace("http", "ws", 1)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        async with http.post(
            f"{url}/api/token",
            params={
                "user_type": "teacher",
                "action": "publish",
                "stream": "bench",
                "user_id": "bench-teacher",
            },
        ) as r:
            teacher = (await r.json())["token"]
        auth = {"Authorization": f"Bearer {teacher}"}
        async with http.post(
            f"{url}/api/sessions", json={"title": f"bench {n}", "stream": "bench"}, headers=auth
        ) as r:
            created = await r.json()
        sid, code = created["session_id"], created["join_code"]
        sem = asyncio.Semaphore(50)

        async def join(i: int) -> Student:
            async with sem:
                async with http.post(
                    f"{url}/api/sessions/join", json={"join_code": code, "name": f"s{i}"}
                ) as r:
                    token = (await r.json())["token"]
                ws = await http.ws_connect(
                    f"{ws_url}/ws/session/{sid}?token={token}", heartbeat=None
                )
                return Student(ws)

        t0 = time.perf_counter()
        students = await asyncio.gather(*(join(i) for i in range(n)))
        join_seconds = time.perf_counter() - t0
        tws = await http.ws_connect(f"{ws_url}/ws/session/{sid}?token={teacher}")

        latencies: list[float] = []
        for m in range(messages):
            text = f"bench message {m}"
            sent = time.perf_counter()
            await tws.send_str(json.dumps({"type": "chat", "text": text}))
            await wait_until(lambda t=text: all(t in s.chat_at for s in students), 60)
            latencies.extend((s.chat_at[text] - sent) * 1000 for s in students)

        async with http.post(
            f"{url}/api/quiz/create",
            headers=auth,
            json={
                "session_id": sid,
                "question": "bench",
                "options": ["a", "b", "c", "d"],
                "correct": 1,
                "time_limit": 600,
            },
        ) as r:
            quiz_id = (await r.json())["quiz_id"]
        published = time.perf_counter()
        async with http.post(
            f"{url}/api/quiz/publish", headers=auth, json={"quiz_id": quiz_id}
        ) as r:
            assert r.status == 200
        await wait_until(lambda: all(s.quiz_at for s in students), 60)
        push_ms = (max(s.quiz_at for s in students) - published) * 1000

        start = time.perf_counter()
        await asyncio.gather(
            *(
                s.ws.send_str(
                    json.dumps({"type": "quiz_answer", "quiz_id": quiz_id, "answer": i % 4})
                )
                for i, s in enumerate(students)
            )
        )
        await wait_until(lambda: all(s.ack_at for s in students), 120)
        elapsed = max(s.ack_at for s in students) - start
        async with http.get(f"{url}/api/quiz/statistics/{quiz_id}", headers=auth) as r:
            stats = await r.json()
        await tws.close()
        await asyncio.gather(*(s.ws.close() for s in students))
        return {
            "students": n,
            "join_and_connect_s": round(join_seconds, 2),
            "chat_messages": messages,
            "chat_fanout_ms_p50": round(statistics.median(latencies), 1),
            "chat_fanout_ms_p99": round(pct(latencies, 0.99), 1),
            "chat_fanout_ms_max": round(max(latencies), 1),
            "quiz_push_all_ms": round(push_ms, 1),
            "answers_per_s": round(n / elapsed, 1),
            "answers_all_acked_s": round(elapsed, 3),
            "answers_stored": stats["total"],
            "stats_exact": stats["total"] == n and sum(stats["counts"]) == n,
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, nargs="+", default=[100, 450, 1000])
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--url", help="use this running --dev node instead of starting one")
    parser.add_argument("--redis-url", default="", help="start the node with this Redis")
    args = parser.parse_args()
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url
        if not url:
            proc, url = start_node(tmp, args.redis_url)
        try:
            for n in args.students:
                print(json.dumps(await bench(url, n, args.messages)), flush=True)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
