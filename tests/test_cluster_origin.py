"""Origin on any node (issue 18): three nodes and a redis-server as real processes. The
teacher publishes to node B; viewers on A and C watch it, relayed from B. B is killed with
kill -9; the encoder reconnects to C (its second URL): C becomes the origin, the same
viewers on A and C get the picture back without a new peer connection, and C records the
next part of the recording B was making."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time

import pytest
import redis

from .support import (
    NodeProcess,
    RedisServer,
    async_http_json,
    async_wait_for,
    ffmpeg_publish,
    http_json,
    stop_process,
    wait_for,
)

STREAM = "anywhere"


@pytest.fixture
def three_nodes(tmp_path):
    server = RedisServer(tmp_path).start()
    data_dir = tmp_path / "shared-data"
    extra = ("--redis-url", server.url, "--data-dir", str(data_dir))
    nodes: list[NodeProcess] = []
    publishers: list[subprocess.Popen] = []
    try:
        for name in ("a", "b", "c"):
            nodes.append(NodeProcess(tmp_path, *extra, name=name).start())
        yield server, nodes, publishers
    finally:
        for proc in publishers:
            stop_process(proc)
        for node in nodes:
            node.stop()
        server.stop()


def origin_of(server: RedisServer) -> str | None:
    value = redis.Redis.from_url(server.url).get(f"airclass:origin:{STREAM}")
    return value.decode().split(" ", 1)[0] if value else None


def node_id(node: NodeProcess) -> str:
    return http_json("GET", f"{node.url}/api/health")[1]["node_id"]


def publish(node: NodeProcess, publishers: list) -> subprocess.Popen:
    token = node.token(STREAM, user_type="teacher", action="publish")["token"]
    proc = ffmpeg_publish(node.rtmp_url(STREAM, token), seconds=120, size="640x360", rate=25)
    publishers.append(proc)
    return proc


async def test_publish_anywhere_and_survive_the_origin_dying(three_nodes, players):
    server, (a, b, c), publishers = three_nodes
    publish(b, publishers)
    wait_for(lambda: origin_of(server) == node_id(b), 20, "B to hold the origin lease")
    watchers = {}
    for node in (a, c):
        grant = await node.atoken(STREAM)
        watchers[node] = await players(grant["whep_url"], grant["token"])
    for player in watchers.values():
        await player.wait_frames(video=20, timeout=30)  # relayed from B

    # The teacher records the class on B, its origin.
    grant = await b.atoken(STREAM, user_type="teacher", action="publish")
    teacher = {"Authorization": "Bearer " + grant["token"]}
    status, part1, _ = await async_http_json(
        "POST",
        f"{b.url}/api/recording/start",
        json.dumps({"stream": STREAM}).encode(),
        {**teacher, "Content-Type": "application/json"},
    )
    assert status == 201, part1

    # A second encoder on A while B has the stream is refused (one origin per stream).
    second = publish(a, publishers)
    assert await asyncio.to_thread(second.wait, 30) != 0
    assert origin_of(server) == node_id(b)

    await asyncio.to_thread(b.kill, signal.SIGKILL)
    killed = time.monotonic()

    # The encoder reconnects to its second URL (C), as OBS and ffmpeg retry: refused while
    # B's lease lasts (at most 6 s), then C becomes the origin.
    async def c_is_origin() -> bool:
        if origin_of(server) == node_id(c):
            return True
        if not any(p.poll() is None for p in publishers):
            publish(c, publishers)
        return False

    await async_wait_for(c_is_origin, 30, "C to become the origin", interval=0.5)
    returned = time.monotonic() - killed
    for player in watchers.values():
        await player.wait_frames(video=20, timeout=20)
        assert player.pc.connectionState == "connected"  # the same peer connection
    print(
        f"origin moved to C {returned:.1f} s after kill -9 of B; viewers on A and C playing "
        f"again {time.monotonic() - killed:.1f} s after it"
    )

    async def next_part() -> dict | None:
        status, body, _ = await async_http_json(
            "GET", f"{c.url}/api/recording/status", headers=teacher
        )
        assert status == 200, body
        return next((r for r in body["recordings"] if r["stream"] == STREAM), None)

    part2 = await async_wait_for(next_part, 20, "C to record the next part", interval=0.5)
    assert part2["part"] == 2 and part2["continues"] == part1["id"], part2
    assert part2["session_id"] == part1["session_id"] and part2["reason"] == "continued"


async def test_origin_leases_are_fenced(tmp_path):
    """A node that lost its lease (taken over while it was cut off) cannot renew it, and
    a forged entry (no cluster secret) is not followed."""
    import redis.asyncio as aioredis

    from airclass_web.cluster.origins import OriginDirectory
    from airclass_web.cluster.signing import Signer

    server = RedisServer(tmp_path).start()
    client = aioredis.from_url(server.url)
    try:
        x = OriginDirectory(client, Signer("s" * 32, "x"), "x", "http://x")
        y = OriginDirectory(client, Signer("s" * 32, "y"), "y", "http://y")
        first = await x.claim("room")
        assert first is not None and await y.claim("room") is None
        assert (await y.lookup("room")).url == "http://x"
        taken = await y.claim("room", force=True)  # x looked dead to the cluster
        assert taken is not None and taken > first
        assert await x.renew() == ["room"]  # x comes back: fenced out
        assert "room" not in x.held and (await x.lookup("room")).node_id == "y"
        await x.release("room")  # releasing what it no longer holds does nothing
        assert (await y.lookup("room")).node_id == "y"
        forged = OriginDirectory(client, Signer("f" * 32, "z"), "z", "http://evil")
        await y.release("room")
        assert await forged.claim("room") is not None
        assert await y.lookup("room") is None  # signed with another secret: ignored
    finally:
        await client.aclose()
        server.stop()
