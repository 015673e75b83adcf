"""The main node killed with kill -9 while a class is watched (issue 18): a redis-server,
a main and two subs as real processes, the teacher publishing to sub 1 (the origin),
aiortc viewers routed by the main to both subs. Without the main the viewers keep
playing on the same peer connections, a sub still issues tokens and serves a new viewer
itself, and its /ready says the main is missing; the main started again routes viewers
again. The figures are printed."""

from __future__ import annotations

import asyncio
import signal
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

STREAM = "maindown"
SECRET = "main-down-cluster-secret-0123456789abcdef"
ENV = {"AIRCLASS_CLUSTER_SECRET": SECRET}


def main_args(redis_url: str) -> tuple[str, ...]:
    return ("--role", "main", "--redis-url", redis_url, "--ip-rate-limit", "0")


@pytest.fixture
def cluster(tmp_path):
    server = RedisServer(tmp_path).start()
    nodes: dict[str, NodeProcess] = {}
    publisher = None
    try:
        nodes["main"] = NodeProcess(tmp_path, *main_args(server.url), env=ENV, name="main")
        nodes["main"].start()
        for name in ("sub1", "sub2"):
            args = ("--role", "sub", "--main-url", nodes["main"].url, "--redis-url", server.url)
            nodes[name] = NodeProcess(tmp_path, *args, env=ENV, name=name).start()
        token = nodes["main"].token(STREAM, user_type="teacher", action="publish")["token"]
        publisher = ffmpeg_publish(
            nodes["sub1"].rtmp_url(STREAM, token), seconds=300, size="640x360", rate=25
        )
        origins = redis.Redis.from_url(server.url)
        wait_for(lambda: origins.get(f"airclass:origin:{STREAM}"), 20, "sub 1 to be the origin")
        yield server, nodes, tmp_path
    finally:
        stop_process(publisher)
        for node in nodes.values():
            node.stop()
        server.stop()


async def test_viewers_keep_playing_while_the_main_is_down(cluster, players):
    server, nodes, tmp_path = cluster
    main, sub1, sub2 = nodes["main"], nodes["sub1"], nodes["sub2"]

    # Viewers routed by the main until both subs have one (rendezvous hashing).
    # The main refreshes its copy of the registry each second: a sub that registered a
    # moment ago may be missing from the first answers.
    watchers = {}
    asked = iter(range(10_000))

    async def both_subs_have_a_viewer():
        grant = await main.atoken(STREAM, user_id=f"viewer{next(asked)}")
        sub = sub1 if grant["whep_url"].startswith(sub1.url + "/") else sub2
        assert grant["whep_url"].startswith((sub1.url + "/", sub2.url + "/")), grant
        if sub not in watchers:
            watchers[sub] = await players(grant["whep_url"], grant["token"])
        return len(watchers) == 2

    await async_wait_for(both_subs_have_a_viewer, 20, "the main to route to both subs", 0.1)
    for player in watchers.values():
        await player.wait_frames(video=20, timeout=30)

    await asyncio.to_thread(main.kill, signal.SIGKILL)
    killed = time.monotonic()

    # The same peer connections keep playing: 10 s of frames (25 fps) without the main.
    counts = {sub: player.stats.video_frames for sub, player in watchers.items()}
    await asyncio.sleep(10)
    played = {sub: player.stats.video_frames - counts[sub] for sub, player in watchers.items()}
    for sub, player in watchers.items():
        assert player.pc.connectionState == "connected"
        assert played[sub] >= 150, f"{sub.url}: {played[sub]} frames in 10 s without the main"

    # A sub issues a token itself and serves the viewer (what a moved address would get).
    status, grant, _ = await async_http_json(
        "POST", f"{sub2.url}/api/token?user_type=student&action=read&stream={STREAM}"
    )
    assert status == 200, grant
    assert grant["whep_url"].startswith(sub2.url + "/")
    late = await players(grant["whep_url"], grant["token"])
    await late.wait_frames(video=20, timeout=30)
    # ...and says the main is missing (a load balancer on /ready takes it out).
    status, body, _ = await async_http_json("GET", f"{sub2.url}/ready")
    assert status == 503, body

    # The main comes back (same ports, same data): routing again.
    again = NodeProcess(tmp_path, *main_args(server.url), env=ENV, name="main-again")
    for flag, value in (("--http-port", main.http_port), ("--rtmp-port", main.rtmp_port)):
        again.args[again.args.index(flag) + 1] = str(value)
    again.http_port, again.rtmp_port = main.http_port, main.rtmp_port
    again.args += ["--data-dir", str(main.data_dir)]
    restarted = time.monotonic()
    await asyncio.to_thread(again.start, 60)
    nodes["main"] = again  # stopped by the fixture
    up = time.monotonic() - restarted

    async def routes() -> bool:
        status, body, _ = await async_http_json(
            "POST", f"{again.url}/api/token?user_type=student&action=read&stream={STREAM}"
        )
        return status == 200 and not body["whep_url"].startswith(again.url + "/")

    await async_wait_for(routes, 20, "the main to route viewers to subs again")
    routing = time.monotonic() - restarted
    assert http_json("GET", f"{sub2.url}/ready")[0] == 200
    print(
        f"main killed: viewers on both subs played {played[sub1]} and {played[sub2]} frames "
        f"in the next 10 s on the same peer connections; a sub served a new viewer itself; "
        f"main restarted: answering after {up:.1f} s, routing to subs after {routing:.1f} s "
        f"({time.monotonic() - killed:.0f} s after the kill)"
    )
