"""Redis through Sentinel: a master, a replica and three Sentinels (real redis-server
processes), two nodes on `redis+sentinel://` URLs. The master is killed with kill -9 in
the middle of a class: chat keeps flowing between the nodes once the Sentinels promote the
replica, and every message a student had acknowledged is in the class history."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time

import aiohttp
import pytest

from airclass_web.redis_client import parse_sentinel_url

from .classroom_support import WS, Api, add_teacher
from .support import TEST_HOST, NodeProcess, async_wait_for, free_port, wait_for

MASTER = "airclass"


def redis_command(port: int, *args: str) -> list[str]:
    """One command over RESP; the reply's bulk strings (enough for PING and SENTINEL)."""
    out = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection((TEST_HOST, port), timeout=2) as s:
        s.sendall(out.encode())
        data = s.recv(4096).decode()
    return [line for line in data.split("\r\n") if line and line[0] not in "*$"]


class RedisProcess:
    def __init__(self, tmp, name: str, *args: str, sentinel: bool = False) -> None:
        self.port = free_port()
        self.dir = tmp / name
        self.dir.mkdir()
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed (scripts/install-system.sh)")
        common = [f"port {self.port}", f"bind {TEST_HOST}", "protected-mode no", f"dir {self.dir}"]
        conf = self.dir / "redis.conf"
        conf.write_text("\n".join([*common, 'save ""', "appendonly no", *args]) + "\n")
        command = [exe, str(conf), *(["--sentinel"] if sentinel else [])]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_command(self.port, "PING") == ["+PONG"], 10, f"redis {name}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def sentinel_cluster(tmp_path):
    processes: list[RedisProcess] = []
    nodes: list[NodeProcess] = []
    try:
        master = RedisProcess(tmp_path, "master")
        replica = RedisProcess(tmp_path, "replica", f"replicaof {TEST_HOST} {master.port}")
        processes += [master, replica]
        monitor = [
            f"sentinel monitor {MASTER} {TEST_HOST} {master.port} 2",
            f"sentinel down-after-milliseconds {MASTER} 1000",
            f"sentinel failover-timeout {MASTER} 5000",
        ]
        sentinels = [
            RedisProcess(tmp_path, f"sentinel{i}", *monitor, sentinel=True) for i in range(3)
        ]
        processes += sentinels
        url = "redis+sentinel://" + ",".join(f"{TEST_HOST}:{s.port}" for s in sentinels)
        url += f"/{MASTER}"
        assert parse_sentinel_url(url).master == MASTER
        data_dir = tmp_path / "shared-data"
        assert add_teacher(data_dir, "kim").returncode == 0
        extra = ("--redis-url", url, "--data-dir", str(data_dir))
        for name in ("a", "b"):
            nodes.append(NodeProcess(tmp_path, *extra, name=name).start())
        yield master, replica, sentinels, nodes
    finally:
        for node in nodes:
            node.stop()
        for process in processes:
            process.kill()


def master_port(sentinel: RedisProcess) -> int:
    _host, port = redis_command(sentinel.port, "SENTINEL", "get-master-addr-by-name", MASTER)
    return int(port)


async def test_chat_survives_the_redis_master_being_killed(sentinel_cluster):
    master, replica, sentinels, (a, b) = sentinel_cluster
    async with aiohttp.ClientSession() as http:
        api_a, api_b = Api(http, a.url), Api(http, b.url)
        token = await api_a.login("kim")
        body = {"title": "Sentinel", "stream": "sentinel"}
        session = await api_a.ok("POST", "/api/sessions", body, token=token)
        sid = session["session_id"]
        teacher = await WS.connect(http, a.url, sid, token, "teacher@a")
        student = await api_b.join(session["join_code"], "Minji")
        on_b = await WS.connect(http, b.url, sid, student["token"], "student@b")

        async def say(text: str) -> None:
            """A chat line from b, shown back to its writer (stored: acknowledged), and
            seen by the teacher on a through the bus."""
            await on_b.send(type="chat", text=text)
            await on_b.wait("chat", lambda m: m["message"]["text"] == text, timeout=20)
            await teacher.wait("chat", lambda m: m["message"]["text"] == text, timeout=20)

        await say("before the failover")
        master.kill()
        killed = time.monotonic()

        async def promoted_replica() -> bool:
            return await asyncio.to_thread(master_port, sentinels[0]) == replica.port

        await async_wait_for(promoted_replica, 30, "the Sentinels to promote the replica")
        promoted = time.monotonic() - killed
        for i in range(3):  # a student may send 5 lines in a burst (chat rate limit)
            await say(f"after the failover {i}")
        print(
            f"replica promoted {promoted:.1f} s after kill -9; chat flowing again "
            f"{time.monotonic() - killed:.1f} s after it"
        )

        history = await api_a.ok("GET", f"/api/sessions/{sid}/chat?limit=100", token=token)
        texts = {m["text"] for m in history["messages"]}
        assert {"before the failover", *(f"after the failover {i}" for i in range(3))} <= texts
        await teacher.close()
        await on_b.close()
