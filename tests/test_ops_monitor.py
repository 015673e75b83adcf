"""`airclass monitor` against a real cluster (redis-server, a main, a sub), alerting to a
local webhook receiver: each incident is posted once, however many rounds it lasts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys

from .ops_support import CLUSTER_ENV, WebhookReceiver
from .support import ROOT, async_wait_for


def monitor_args(main_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "airclass_web.cli", "monitor", "--main-url", main_url, *extra]


class MonitorProcess:
    """`airclass monitor --watch --json` with every round it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.rounds: list[dict] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for line in self.proc.stdout:
            self.rounds.append(json.loads(line))

    async def rounds_after(self, count: int, timeout: float = 30) -> None:
        """Wait until `count` more rounds were printed."""
        target = len(self.rounds) + count
        await async_wait_for(lambda: len(self.rounds) >= target, timeout, f"{count} rounds")

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.terminate()
        code = await asyncio.wait_for(self.proc.wait(), 15)
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        return code


async def test_monitor_alerts_once_per_incident(node_factory, redis_server):
    common = ("--redis-url", redis_server.url, "--workers", "1")
    # The main's recordings disk is "low": it wants more free disk than any machine has.
    main = node_factory(
        "--role", "main", *common, "--min-free-disk-mb", "1000000000", env=CLUSTER_ENV, name="main"
    )  # fmt: skip
    sub = node_factory(
        "--role", "sub", "--main-url", main.url, *common, env=CLUSTER_ENV, name="sub"
    )  # fmt: skip
    hook = await WebhookReceiver().start()
    monitor = None
    try:
        once = await asyncio.create_subprocess_exec(
            *monitor_args(main.url), stdout=subprocess.PIPE, cwd=ROOT
        )
        out, _ = await once.communicate()
        assert once.returncode == 1, out  # something needs attention
        assert b"disk low" in out and sub.url.encode() in out

        proc = await asyncio.create_subprocess_exec(
            *monitor_args(main.url, "--watch", "0.5", "--json", "--alert-webhook", hook.url),
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        monitor = MonitorProcess(proc)

        def posts(word: str) -> list[str]:
            return [p["text"] for p in hook.posts if word in p["text"]]

        await async_wait_for(lambda: posts("disk low"), 20, "disk alert")
        first = monitor.rounds[-1]
        assert {n["role"] for n in first["nodes"]} == {"main", "sub"}
        assert [i["kind"] for i in first["incidents"]] == ["disk_low"]
        assert hook.posts[0]["content"] == hook.posts[0]["text"]  # Discord reads "content"

        sub.kill()
        await async_wait_for(lambda: posts(sub.url), 30, "alert for the killed sub")

        def sub_gone() -> bool:  # left the registry, not only failing /ready
            return any(
                n["url"] == sub.url and n["status"] == "down" for n in monitor.rounds[-1]["nodes"]
            )

        await async_wait_for(sub_gone, 30, "sub reported down")
        await monitor.rounds_after(4)
        assert len(posts("disk low")) == 1, hook.posts
        assert len(posts(sub.url)) == 1, hook.posts
        assert len(hook.posts) == 2, hook.posts
        assert await monitor.stop() == 0
    finally:
        if monitor is not None and monitor.proc.returncode is None:
            await monitor.stop()
        await hook.stop()
