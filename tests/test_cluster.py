"""Cluster with real parts: redis-server, a main and two sub nodes as processes, ffmpeg
publishing to the main, aiortc viewers sent to the subs by rendezvous hashing.

The module shares one cluster; tests run in file order and the last one kills a sub.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from urllib.parse import urlencode

import pytest
import redis

from airclass_web.cluster.assign import rank
from airclass_web.cluster.registry import KEY_PREFIX, NodeRecord
from airclass_web.cluster.signing import Signer
from airclass_web.config import VIEWERS_PER_CORE

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

SECRET = "cluster-secret-for-tests-0123456789abcdef"
STREAM = "lecture"
SUB_CAPACITY = 400
#: The main's default --capacity: VIEWERS_PER_CORE per media worker (default: CPU count).
MAIN_CAPACITY = VIEWERS_PER_CORE * int(os.environ.get("AIRCLASS_WORKERS") or os.cpu_count() or 1)
CLUSTER_ENV = {"AIRCLASS_CLUSTER_SECRET": SECRET}


class Cluster:
    def __init__(self, tmp) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp).start()
        self.main = NodeProcess(
            tmp, "--role", "main", "--redis-url", self.redis.url,
            "--ip-rate-limit", "0",  # the spread test asks for hundreds of tokens at once
            env=CLUSTER_ENV, name="main",
        ).start()  # fmt: skip
        # Room for the 300 students of the spread test (tokens count for a while).
        self.subs = [self.start_sub(f"sub{i}", "--capacity", str(SUB_CAPACITY)) for i in (1, 2)]
        self.publisher = None
        self.publish()

    def start_sub(self, name: str, *extra: str) -> NodeProcess:
        args = ("--role", "sub", "--main-url", self.main.url, "--redis-url", self.redis.url)
        return NodeProcess(self.tmp, *args, *extra, env=CLUSTER_ENV, name=name).start()

    def publish(self) -> None:
        token = self.main.token(STREAM, user_type="teacher", action="publish")["token"]
        self.publisher = ffmpeg_publish(
            self.main.rtmp_url(STREAM, token), seconds=600, size="640x360", rate=25
        )
        wait_for(lambda: stream_status(self.main).get("width"), 20, "stream live on main")

    def nodes(self) -> list[dict]:
        status, body, _ = http_json("GET", f"{self.main.url}/cluster/nodes")
        assert status == 200, body
        return body["nodes"]

    def grant(self, user_id: str) -> dict:
        return self.main.token(STREAM, user_id=user_id)

    def sub_of(self, grant: dict) -> NodeProcess:
        return next(s for s in self.subs if grant["whep_url"].startswith(s.url + "/"))

    def stop(self) -> None:
        stop_process(self.publisher)
        for node in (*self.subs, self.main):
            node.stop()
        self.redis.stop()


def stream_status(node: NodeProcess) -> dict:
    status, body, _ = http_json("GET", f"{node.url}/api/streams/{STREAM}")
    return body if status == 200 else {}


def relays(node: NodeProcess) -> dict:
    return http_json("GET", f"{node.url}/cluster/relays")[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    wait_for(lambda: len(c.nodes()) == 3, 10, "three nodes registered")
    yield c
    c.stop()


def test_standalone_node_runs_alone(node):
    """No Redis, no secret: an in-process registry of itself; viewers stay on the node."""
    status, body, _ = http_json("GET", f"{node.url}/cluster/nodes")
    assert status == 200
    assert [(n["role"], n["url"]) for n in body["nodes"]] == [("standalone", node.url)]
    assert node.token(STREAM)["whep_url"] == f"{node.url}/live/{STREAM}/whep"
    assert http_json("GET", f"{node.url}/cluster/relay/{STREAM}")[0] == 401


def test_nodes_register_with_load_and_capacity(cluster):
    nodes = cluster.nodes()
    assert sorted(n["role"] for n in nodes) == ["main", "sub", "sub"]
    urls = {n["url"] for n in nodes}
    assert urls == {cluster.main.url, *(s.url for s in cluster.subs)}
    for n in nodes:
        assert n["status"] == "ok" and n["load"] == 0
        assert n["capacity"] == (MAIN_CAPACITY if n["role"] == "main" else SUB_CAPACITY)
        assert "viewers" not in n  # user ids stay private
    main_streams = lambda: next(n for n in cluster.nodes() if n["role"] == "main")["streams"]  # noqa: E731
    wait_for(lambda: main_streams() == [STREAM], 5, "the main's heartbeat to list the stream")


def test_rendezvous_spreads_evenly_and_sticks(cluster):
    counts = Counter(cluster.sub_of(cluster.grant(f"spread-{i}")).url for i in range(300))
    assert len(counts) == 2 and all(135 <= c <= 165 for c in counts.values()), counts
    for i in range(0, 300, 15):
        first = cluster.grant(f"spread-{i}")["whep_url"]
        assert cluster.grant(f"spread-{i}")["whep_url"] == first


def test_full_sub_is_skipped(cluster):
    """A third sub (a signed record in Redis) first takes students, then is full: skipped."""
    fake = NodeRecord("node-fake", "sub", "http://127.0.0.1:9", capacity=SUB_CAPACITY)
    real = [NodeRecord(f"n{i}", "sub", s.url, SUB_CAPACITY) for i, s in enumerate(cluster.subs)]
    prefers_fake = iter(
        uid for uid in (f"full-{i}" for i in range(10_000)) if rank(uid, [fake, *real])[0] is fake
    )
    r = redis.Redis.from_url(cluster.redis.url)
    key = KEY_PREFIX + fake.node_id
    try:
        r.set(key, Signer(SECRET).seal(fake.as_dict()), ex=30)
        wait_for(lambda: cluster.grant(next(prefers_fake))["whep_url"].startswith(fake.url), 5,
                 "a student sent to the third sub")  # fmt: skip
        fake.load, fake.heartbeat_at = SUB_CAPACITY, time.time()
        r.set(key, Signer(SECRET).seal(fake.as_dict()), ex=30)
        assert [n["status"] for n in cluster.nodes() if n["node_id"] == fake.node_id] == ["full"]

        # The main routes on a copy of the registry refreshed every second: wait until a
        # streak of students who prefer the fake sub all go elsewhere (a single one may
        # be skipped for pending load while the copy still says "not full").
        def skipped_streak() -> bool:
            return not any(
                cluster.grant(next(prefers_fake))["whep_url"].startswith(fake.url) for _ in range(5)
            )

        wait_for(skipped_streak, 5, "the full sub skipped")
        for _ in range(10):
            assert not cluster.grant(next(prefers_fake))["whep_url"].startswith(fake.url)
    finally:
        r.delete(key)
        r.close()


def test_forged_registration_and_relay_requests_are_refused(cluster):
    r = redis.Redis.from_url(cluster.redis.url)
    forged = NodeRecord("node-forged", "sub", "http://127.0.0.1:9", capacity=150)
    r.set(KEY_PREFIX + forged.node_id, Signer("not-the-secret").seal(forged.as_dict()), ex=30)
    try:
        assert all(n["node_id"] != "node-forged" for n in cluster.nodes())
        assert "refused node entry airclass:node:node-forged: bad signature" in cluster.main.log()
    finally:
        r.delete(KEY_PREFIX + forged.node_id)
        r.close()

    relay_url = f"{cluster.main.url}/cluster/relay/{STREAM}"
    ws_headers = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    assert http_json("GET", relay_url, headers=ws_headers)[0] == 401
    bad = {
        **Signer("not-the-secret", "intruder").request_headers("GET", f"/cluster/relay/{STREAM}")
    }
    assert http_json("GET", relay_url, headers={**ws_headers, **bad})[0] == 401
    # A good signature works once; the same headers replayed are refused.
    signed = Signer(SECRET, "test").request_headers("DELETE", "/cluster/relay/nostream")
    reset_url = f"{cluster.main.url}/cluster/relay/nostream"
    assert http_json("DELETE", reset_url, headers=signed)[0] == 200
    assert http_json("DELETE", reset_url, headers=signed)[0] == 401
    assert "replayed request" in cluster.main.log() and "bad signature" in cluster.main.log()


async def test_viewers_on_subs_decode_with_a_fast_relay_hop(cluster, players):
    one, two = await _players_on_both_subs(cluster, players, "view")
    for player in (one, two):
        stats = await player.wait_frames(video=40, audio=25, timeout=30)
        assert (stats.width, stats.height) == (640, 360)
    serving = (await asyncio.to_thread(relays, cluster.main))["serving"]
    assert len(serving) == 2 and {s["stream"] for s in serving} == {STREAM}
    for sub in cluster.subs:
        (pulling,) = (await asyncio.to_thread(relays, sub))["pulling"]
        # "viewers" counts the stream's subscribers on the sub: a viewer's two tracks, or
        # the local feed of the media worker that serves it (--workers).
        assert pulling["connected"] and pulling["live"] and pulling["viewers"] >= 1
        # Measured (0.0 means no packet was timed) and fast on one machine, even a busy
        # one; the figure itself: scripts/bench_cluster.py.
        assert 0 < pulling["hop_p95_ms"] < 1000, pulling
        status, metrics, _ = await async_http_json("GET", f"{sub.url}/metrics")
        assert status == 200 and 'airclass_relay_hop_seconds{quantile="0.95"' in metrics

    async def sub_loads_are_one() -> bool:
        nodes = await asyncio.to_thread(cluster.nodes)
        return all(n["load"] == 1 for n in nodes if n["role"] == "sub")

    await async_wait_for(sub_loads_are_one, 10, "each sub's load to be 1")


async def test_publisher_and_relay_restarts_keep_viewer_connections(cluster, players):
    viewers = await _players_on_both_subs(cluster, players, "restart")
    for player in viewers:
        await player.wait_frames(video=20, timeout=30)

    # The teacher's publisher goes away and comes back.
    await asyncio.to_thread(stop_process, cluster.publisher)
    for sub in cluster.subs:
        await async_wait_for(
            lambda s=sub: asyncio.to_thread(lambda: not stream_status(s).get("live")),
            10,
            "sub offline",
        )
    await asyncio.to_thread(cluster.publish)
    for player in viewers:
        await player.wait_frames(video=30, timeout=30)
        assert player.pc.connectionState == "connected"

    # The relay connections drop (closed from the main) and reconnect by themselves.
    connects = [
        (await asyncio.to_thread(relays, s))["pulling"][0]["connects"] for s in cluster.subs
    ]
    headers = Signer(SECRET, "test").request_headers("DELETE", f"/cluster/relay/{STREAM}")
    status, body, _ = await async_http_json("DELETE", f"{cluster.main.url}/cluster/relay/{STREAM}",
                                            headers=headers)  # fmt: skip
    assert status == 200 and body["closed"] == 2
    for sub, before in zip(cluster.subs, connects, strict=True):
        await async_wait_for(
            lambda s=sub, b=before: asyncio.to_thread(
                lambda: relays(s)["pulling"][0]["connects"] > b
            ),
            10,
            "reconnect",
        )
    for player in viewers:
        await player.wait_frames(video=30, timeout=30)
        assert player.pc.connectionState == "connected"


async def test_killed_sub_leaves_and_its_viewers_move(cluster, players):
    """Runs last: SIGKILLs a sub."""
    one, _two = await _players_on_both_subs(cluster, players, "mover")
    await one.wait_frames(video=10, timeout=30)
    user = one.user_id
    victim = cluster.sub_of(await asyncio.to_thread(cluster.grant, user))
    survivor = next(s for s in cluster.subs if s is not victim)
    await asyncio.to_thread(victim.kill, signal.SIGKILL)

    def moved():
        g = cluster.grant(user)
        return g["whep_url"].startswith(survivor.url + "/") and g

    # Its relay connection broke: the main stops sending students there (how fast:
    # scripts/bench_cluster.py)...
    grant = await async_wait_for(
        lambda: asyncio.to_thread(moved), 10, "the moved student's token for the other sub"
    )
    assert "lost its relay" in cluster.main.log()
    # ...and the registry forgets it when its heartbeat key expires.
    await async_wait_for(
        lambda: asyncio.to_thread(lambda: victim.url not in {n["url"] for n in cluster.nodes()}),
        15,
        "the sub to leave",
    )
    again = await players(grant["whep_url"], grant["token"])
    stats = await again.wait_frames(video=20, timeout=30)
    assert stats.width == 640


async def _players_on_both_subs(cluster, players, prefix: str):
    """One player on each sub (user ids picked until both subs are covered)."""
    chosen: dict[str, dict] = {}
    for i in range(50):
        grant = await asyncio.to_thread(cluster.grant, f"{prefix}-{i}")
        chosen.setdefault(cluster.sub_of(grant).url, grant)
        if len(chosen) == 2:
            break
    out = []
    for sub in cluster.subs:
        grant = chosen[sub.url]
        player = await players(grant["whep_url"], grant["token"])
        player.user_id = grant["user_id"]
        out.append(player)
    return out


def test_503_with_retry_after_when_every_sub_is_full(tmp_path):
    """A second small cluster: a main and one sub with room for a single viewer."""
    store = RedisServer(tmp_path).start()
    nodes = []
    try:
        main = NodeProcess(tmp_path, "--role", "main", "--redis-url", store.url, env=CLUSTER_ENV,
                           name="main2").start()  # fmt: skip
        nodes.append(main)
        args = ("--role", "sub", "--main-url", main.url, "--redis-url", store.url)
        sub = NodeProcess(tmp_path, *args, "--capacity", "1", env=CLUSTER_ENV, name="tiny").start()
        nodes.append(sub)
        wait_for(lambda: len(http_json("GET", f"{main.url}/cluster/nodes")[1]["nodes"]) == 2, 10,
                 "sub registered")  # fmt: skip
        # The main routes on a copy of the registry refreshed every second: wait for it.
        first = wait_for(lambda: main.token(STREAM, user_id="only-one"), 10, "a route to the sub")
        assert first["whep_url"] == f"{sub.url}/live/{STREAM}/whep"
        assert main.token(STREAM, user_id="only-one")["whep_url"] == first["whep_url"]
        # Tokens fill nothing; viewer sessions do. Stop the sub and put a signed record of
        # it in the registry as its heartbeat would be with its one viewer.
        sub.stop()
        full = NodeRecord("node-tiny", "sub", sub.url, capacity=1, load=1, viewers=["only-one"])
        r = redis.Redis.from_url(store.url)
        r.set(KEY_PREFIX + full.node_id, Signer(SECRET).seal(full.as_dict()), ex=30)
        r.close()

        def full_refusal():
            # One response judged whole: the main may also drop the stopped sub between two
            # requests (its relay broke), and a second request would then answer "no sub".
            query = urlencode({"stream": STREAM, "user_id": "one-too-many"})
            status, body, headers = http_json("POST", f"{main.url}/api/token?{query}")
            if status == 503 and "full" in body.get("error", ""):
                return body, headers
            raise RuntimeError(f"answered {status}: {body}")  # retried; shown on timeout

        body, headers = wait_for(full_refusal, 10, "the main to refuse: every sub full")
        assert int(headers["Retry-After"]) > 0, (body, headers)
    finally:
        for node in nodes:
            node.stop()
        store.stop()
