#!/usr/bin/env python
"""How much Redis load a cluster makes: per node, per published stream, per 100 students.

Starts a real redis-server and real `airclass serve` processes on 127.0.0.1 (a main and
--nodes - 1 subs, one shared data directory, --workers 1), then measures four phases, each
over a window of --window seconds, from the deltas of Redis' own `INFO commandstats` and
`INFO stats` (calls per command, bytes in and out) and redis-server's CPU from
/proc/<pid>/stat:

  idle      the nodes alone: registry heartbeats (SET with TTL every 2 s), the main's
            routing copy (SCAN + MGET), each node's event-bus XREAD BLOCK;
  streams   + one ffmpeg publisher per node (--streams): origin leases (EVALSHA renewals
            every 2 s per stream held);
  students  + N class WebSocket clients spread over the nodes (a sub without a shared
            store relays them to the main): presence every --presence seconds (the state
            changes with probability --flip, e.g. a tab hidden or shown), chat at --chat
            messages per student per minute, the teacher's page connected;
  quiz      the teacher publishes a quiz and every student answers once, spread over
            the window (coalesced live statistics to the staff).

Each phase is printed as one JSON line (its own delta over the phase before it), then a
summary per node, per stream and per 100 students. The INFO calls of this script are left
out of the counts.

    .venv/bin/python scripts/bench_redis_load.py [--nodes 3] [--students 300] [--window 40]

Two more modes, for the scale this machine cannot run as real nodes:

    --ceilings   redis-server CPU per call of each of those commands, with the measured
                 sizes, driven flat out by redis-benchmark (what one core can do);
    --simulate NODES... [--sim-students N...]   the nodes' Redis calls replayed by Python
                 clients (records, leases, events at the measured rate and size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import (  # noqa: E402
    NodeProcess,
    RedisServer,
    ffmpeg_publish,
    http_json,
    stop_process,
    wait_for,
)

SECRET = "bench-redis-load-secret-0123456789abcdef"
TICKS = os.sysconf("SC_CLK_TCK")
#: Commands this script itself sends to Redis while measuring (left out of the counts).
OWN_COMMANDS = {"info", "dbsize"}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class RedisMeter:
    """Snapshots of Redis' counters and CPU; the difference of two is a phase's load."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.client = redis.Redis.from_url(server.url)

    def snapshot(self) -> dict:
        stats = self.client.info("stats")
        commands = self.client.info("commandstats")
        return {
            "t": time.monotonic(),
            "cpu": cpu_seconds(self.server.proc.pid),
            "in": stats["total_net_input_bytes"],
            "out": stats["total_net_output_bytes"],
            "cmd": {
                name.removeprefix("cmdstat_"): (v["calls"], v["usec"])
                for name, v in commands.items()
            },
            "keys": self.client.dbsize(),
        }

    @staticmethod
    def delta(a: dict, b: dict) -> dict:
        """Rates between snapshots a and b (per second), this script's INFO left out."""
        seconds = b["t"] - a["t"]
        calls, usec = {}, {}
        for name, (c1, u1) in b["cmd"].items():
            if name in OWN_COMMANDS:
                continue
            c0, u0 = a["cmd"].get(name, (0, 0))
            if c1 > c0:
                calls[name] = (c1 - c0) / seconds
                usec[name] = (u1 - u0) / seconds
        # The bytes of this script's INFO replies (~10 KB a snapshot) stay in the byte
        # counts: under 1 % at these rates.
        return {
            "seconds": round(seconds, 1),
            "ops_per_s": calls,
            "usec_per_s": usec,
            "in_bytes_per_s": (b["in"] - a["in"]) / seconds,
            "out_bytes_per_s": (b["out"] - a["out"]) / seconds,
            "cpu_percent": 100 * (b["cpu"] - a["cpu"]) / seconds,
            "keys": b["keys"],
        }


def stored_sizes(url: str) -> dict:
    """Bytes of what the cluster keeps in Redis: node records, and the classroom events
    in the stream (the last 2000) by type: count and mean size of the signed entry."""
    client = redis.Redis.from_url(url)
    records = [client.strlen(k) for k in client.scan_iter(match="airclass:node:*")]
    events: dict[str, list[int]] = {}
    for _id, fields in client.xrevrange("airclass:classroom:events", count=2000):
        payload = fields.get(b"m", b"")
        try:
            kind = json.loads(payload).get("type", "?")
        except ValueError:
            kind = "?"
        events.setdefault(kind, []).append(len(payload) + len(fields.get(b"s", b"")))
    return {
        "node_record_bytes": round(sum(records) / len(records)) if records else 0,
        "events": {
            k: {"n": len(v), "mean_bytes": round(sum(v) / len(v))} for k, v in events.items()
        },
    }


def minus(x: dict, y: dict) -> dict:
    """Rates of phase x minus those of phase y (what x added)."""
    names = set(x["ops_per_s"]) | set(y["ops_per_s"])
    ops = {n: x["ops_per_s"].get(n, 0) - y["ops_per_s"].get(n, 0) for n in names}
    return {
        "ops_per_s": {n: v for n, v in ops.items() if abs(v) > 0.005},
        "in_bytes_per_s": x["in_bytes_per_s"] - y["in_bytes_per_s"],
        "out_bytes_per_s": x["out_bytes_per_s"] - y["out_bytes_per_s"],
        "cpu_percent": x["cpu_percent"] - y["cpu_percent"],
    }


def scaled(d: dict, factor: float) -> dict:
    ops = {n: round(v * factor, 2) for n, v in sorted(d["ops_per_s"].items())}
    return {
        "ops_per_s": round(sum(d["ops_per_s"].values()) * factor, 2),
        "by_command": ops,
        "in_bytes_per_s": round(d["in_bytes_per_s"] * factor),
        "out_bytes_per_s": round(d["out_bytes_per_s"] * factor),
        "redis_cpu_percent": round(d["cpu_percent"] * factor, 3),
    }


def report(phase: str, d: dict, **extra) -> None:
    print(
        json.dumps(
            {
                "phase": phase,
                **extra,
                "window_s": d["seconds"],
                "ops_per_s": round(sum(d["ops_per_s"].values()), 1),
                "by_command": {n: round(v, 2) for n, v in sorted(d["ops_per_s"].items())},
                "usec_per_call": {
                    n: round(d["usec_per_s"][n] / v, 1) for n, v in sorted(d["ops_per_s"].items())
                },
                "in_bytes_per_s": round(d["in_bytes_per_s"]),
                "out_bytes_per_s": round(d["out_bytes_per_s"]),
                "redis_cpu_percent": round(d["cpu_percent"], 2),
                "keys": d["keys"],
            }
        ),
        flush=True,
    )


async def measure(meter: RedisMeter, seconds: float) -> dict:
    before = await asyncio.to_thread(meter.snapshot)
    await asyncio.sleep(seconds)
    after = await asyncio.to_thread(meter.snapshot)
    return RedisMeter.delta(before, after)


class Student:
    """A class WebSocket client: presence every `every` s, chat now and then."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, index: int) -> None:
        self.ws = ws
        self.index = index
        self.visible = True
        self.sent = 0
        self.acks = 0
        self.quiz_id: str | None = None
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("type") == "quiz":
                self.quiz_id = data["quiz"]["id"]
            elif data.get("type") == "quiz_answer" and data.get("accepted"):
                self.acks += 1

    async def send(self, **message) -> None:
        self.sent += 1
        await self.ws.send_str(json.dumps(message))

    async def run(self, every: float, flip: float, chat_per_min: float, rng: random.Random):
        await asyncio.sleep(rng.uniform(0, every))  # students are not in step
        chat_p = chat_per_min * every / 60  # chance of a chat line per presence tick
        while True:
            if rng.random() < flip:
                self.visible = not self.visible
            await self.send(type="presence", playing=True, visible=self.visible)
            if rng.random() < chat_p:
                await self.send(
                    type="chat", text=f"student {self.index}: note {rng.randint(1, 40)}"
                )
            await asyncio.sleep(every)


async def run(args) -> None:
    rng = random.Random(1)
    env = {"AIRCLASS_CLUSTER_SECRET": SECRET}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        server = RedisServer(tmp_path).start()
        meter = RedisMeter(server)
        data_dir = tmp_path / "shared-data"
        common = ("--redis-url", server.url, "--data-dir", str(data_dir), "--workers", "1")
        common += ("--ip-rate-limit", "0", "--log-level", "WARNING")
        nodes: list[NodeProcess] = []
        publishers = []
        try:
            main = NodeProcess(tmp_path, "--role", "main", *common, env=env, name="main")
            nodes.append(main.start(timeout=60))
            for i in range(1, args.nodes):
                sub = NodeProcess(
                    tmp_path,
                    *("--role", "sub", "--main-url", main.url, "--capacity", "1000"),
                    *common,
                    env=env,
                    name=f"sub{i}",
                )
                nodes.append(sub.start(timeout=60))

            def registered():
                status, body, _ = http_json("GET", main.url + "/cluster/nodes")
                return status == 200 and len(body["nodes"]) == args.nodes

            wait_for(registered, 30, "every node in the registry")
            await asyncio.sleep(3)  # past start-up (first heartbeats, bus subscriptions)

            idle = await measure(meter, args.window)
            report("idle", idle, nodes=args.nodes)

            streams = 0
            if args.streams:
                for i in range(args.streams):
                    node = nodes[i % len(nodes)]
                    name = f"load{i}"
                    token = main.token(name, user_type="teacher", action="publish")["token"]
                    publishers.append(
                        ffmpeg_publish(
                            node.rtmp_url(name, token),
                            seconds=100000,
                            size=args.size,
                            rate=15,
                        )
                    )
                origins = redis.Redis.from_url(server.url)
                wait_for(
                    lambda: len(origins.keys("airclass:origin:load*")) == args.streams,
                    30,
                    "every stream to hold an origin lease",
                )
                streams = args.streams
                await asyncio.sleep(3)
            with_streams = await measure(meter, args.window)
            report("streams", with_streams, nodes=args.nodes, streams=streams)

            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as http:
                teacher_token = main.token("class", user_type="teacher", action="publish")["token"]
                auth = {"Authorization": f"Bearer {teacher_token}"}
                async with http.post(
                    main.url + "/api/sessions",
                    json={"title": "Redis load", "stream": "class"},
                    headers=auth,
                ) as r:
                    created = await r.json()
                    assert r.status in (200, 201), created
                sid, code = created["session_id"], created["join_code"]
                ws_of = lambda node: node.url.replace("http", "ws", 1)  # noqa: E731
                teacher_ws = await http.ws_connect(
                    f"{ws_of(main)}/ws/session/{sid}?token={teacher_token}", heartbeat=None
                )
                teacher = Teacher(teacher_ws)
                gate = asyncio.Semaphore(20)

                async def join(i: int) -> Student:
                    node = nodes[i % len(nodes)]
                    async with gate:
                        async with http.post(
                            main.url + "/api/sessions/join",
                            json={"join_code": code, "name": f"student {i}"},
                        ) as r:
                            token = (await r.json())["token"]
                        ws = await http.ws_connect(
                            f"{ws_of(node)}/ws/session/{sid}?token={token}", heartbeat=None
                        )
                        return Student(ws, i)

                students = await asyncio.gather(*(join(i) for i in range(args.students)))
                tasks = [
                    asyncio.create_task(s.run(args.presence, args.flip, args.chat, rng))
                    for s in students
                ]
                await asyncio.sleep(args.presence + 2)  # every student in its rhythm
                sent0 = sum(s.sent for s in students)
                with_students = await measure(meter, args.window)
                sent = sum(s.sent for s in students) - sent0
                report(
                    "students",
                    with_students,
                    nodes=args.nodes,
                    streams=streams,
                    students=args.students,
                    ws_messages_per_s=round(sent / with_students["seconds"], 1),
                )

                # Quiz: published by the teacher, answered by everyone across the window.
                quiz_id = await teacher.quiz(
                    question="Which planet is largest?",
                    options=["Mars", "Jupiter", "Venus", "Earth"],
                    correct=1,
                    time_limit=600,
                )
                await asyncio.sleep(2)  # the quiz reaches every student
                spread = args.window * 0.8

                async def answer(s: Student) -> None:
                    await asyncio.sleep(rng.uniform(0, spread))
                    await s.send(type="quiz_answer", quiz_id=quiz_id, answer=rng.randrange(4))

                answering = [asyncio.create_task(answer(s)) for s in students]
                with_quiz = await measure(meter, args.window)
                await asyncio.gather(*answering)
                acks = sum(s.acks for s in students)
                report(
                    "quiz",
                    with_quiz,
                    nodes=args.nodes,
                    streams=streams,
                    students=args.students,
                    answers_acknowledged=acks,
                )
                for task in tasks:
                    task.cancel()
                await teacher_ws.close()
                await asyncio.gather(*(s.ws.close() for s in students), return_exceptions=True)

            per_node = scaled(idle, 1 / args.nodes)
            summary = {
                "summary": True,
                "nodes": args.nodes,
                "per_node": per_node,
            }
            if streams:
                summary["per_stream"] = scaled(minus(with_streams, idle), 1 / streams)
            per100 = scaled(minus(with_students, with_streams), 100 / args.students)
            summary["per_100_students"] = per100
            quiz = minus(with_quiz, with_students)
            window = with_quiz["seconds"]
            summary["per_100_answers"] = {
                "ops": round(sum(quiz["ops_per_s"].values()) * window * 100 / args.students),
                "out_bytes": round(quiz["out_bytes_per_s"] * window * 100 / args.students),
                "redis_cpu_ms": round(quiz["cpu_percent"] * 10 * window * 100 / args.students),
            }
            summary["stored"] = stored_sizes(server.url)
            print(json.dumps(summary), flush=True)
        finally:
            for proc in publishers:
                stop_process(proc)
            for node in reversed(nodes):
                node.stop()
            server.stop()


class Teacher:
    """The teacher's class WebSocket: read continuously (it must not back up)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.created: asyncio.Future = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("type") == "quiz_created" and not self.created.done():
                self.created.set_result(data["quiz"]["id"])

    async def quiz(self, **spec) -> str:
        """Create a quiz and publish it; its id."""
        await self.ws.send_str(json.dumps({"type": "quiz_create", "quiz": spec}))
        quiz_id = await asyncio.wait_for(self.created, 20)
        await self.ws.send_str(json.dumps({"type": "quiz_publish", "quiz_id": quiz_id}))
        return quiz_id


# -- simulation: many nodes and students, the same Redis calls without the nodes ---------


async def simulate(args) -> None:
    """Replays what NODES nodes and STUDENTS students ask of Redis, with the sizes measured
    above, against a fresh redis-server, and measures it like the real run:

    - per node, every 2 s: SET of its signed record with a 6 s TTL (--record-bytes plus
      25 bytes per viewer id), SCAN + MGET of every record (its metrics view), one
      EVALSHA lease renewal per stream it holds (--streams-per-node);
      the main: one more SCAN + MGET every 2 s (routing);
    - classroom events at --events-per-100 a second per 100 students (XADD of
      --event-bytes, MAXLEN ~10000), read by every node (XREAD BLOCK, COUNT 500).
    Each simulated node has its own connections, as a node has."""
    from redis import asyncio as aioredis

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        meter = RedisMeter(server)
        try:
            for nodes in args.simulate:
                for students in args.sim_students:
                    meter.client.flushall()
                    result = await _simulate_one(aioredis, server, meter, nodes, students, args)
                    print(json.dumps(result), flush=True)
        finally:
            server.stop()


async def _simulate_one(aioredis, server, meter, nodes: int, students: int, args) -> dict:
    record = {
        i: ("x" * (args.record_bytes + 25 * args.viewers_per_node)).encode() for i in range(nodes)
    }
    lease = (
        "local cur = redis.call('GET', KEYS[1]) "
        "if cur then redis.call('PEXPIRE', KEYS[1], 6000) return 1 end return 0"
    )
    clients = [aioredis.Redis.from_url(server.url) for _ in range(nodes)]
    readers = [aioredis.Redis.from_url(server.url) for _ in range(nodes)]
    writer = aioredis.Redis.from_url(server.url)
    stream = "airclass:classroom:events"
    done = {"beats": 0, "events": 0, "read": 0}
    stop = asyncio.Event()

    async def node(i: int) -> None:
        r = clients[i]
        script = r.register_script(lease)
        held = [f"airclass:origin:s{i}-{k}" for k in range(args.streams_per_node)]
        for key in held:
            await r.set(key, "n 1 x" * 40, px=6000)
        await asyncio.sleep(2.0 * i / nodes)  # heartbeats are not in step
        while not stop.is_set():
            t = time.monotonic()
            await r.set(f"airclass:node:{i}", record[i], ex=6)
            for _ in range(2 if i == 0 else 1):  # the main also routes
                keys = [k async for k in r.scan_iter(match="airclass:node:*", count=200)]
                if keys:
                    await r.mget(keys)
            for key in held:
                await script(keys=[key])
            done["beats"] += 1
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t)))

    async def reader(i: int) -> None:
        r = readers[i]
        last = "$"
        while not stop.is_set():
            found = await r.xread({stream: last}, count=500, block=1000)
            for _, entries in found or ():
                last = entries[-1][0]
                done["read"] += len(entries)

    async def events() -> None:
        rate = students / 100 * args.events_per_100
        payload = {"m": b"e" * (args.event_bytes - 64), "s": b"s" * 64}
        started = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - started) * rate) - done["events"]
            if due > 0:
                async with writer.pipeline(transaction=False) as pipe:
                    for _ in range(due):
                        pipe.xadd(stream, payload, maxlen=10000, approximate=True)
                    await pipe.execute()
                done["events"] += due
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(node(i)) for i in range(nodes)]
    tasks += [asyncio.create_task(reader(i)) for i in range(nodes)]
    tasks.append(asyncio.create_task(events()))
    await asyncio.sleep(3)
    before = dict(done)
    d = await measure(meter, args.window)
    after = dict(done)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in (*clients, *readers, writer):
        await c.aclose()
    seconds = d["seconds"]
    return {
        "simulated_nodes": nodes,
        "students": students,
        "viewers_per_node": args.viewers_per_node,
        "record_bytes": len(record[0]),
        "heartbeats_per_s": round((after["beats"] - before["beats"]) / seconds, 1),
        "heartbeats_wanted_per_s": nodes / 2,
        "events_per_s": round((after["events"] - before["events"]) / seconds, 1),
        "events_read_per_s": round((after["read"] - before["read"]) / seconds, 1),
        "ops_per_s": round(sum(d["ops_per_s"].values()), 1),
        "by_command": {n: round(v, 1) for n, v in sorted(d["ops_per_s"].items())},
        "usec_per_s": {n: round(v) for n, v in sorted(d["usec_per_s"].items())},
        "in_bytes_per_s": round(d["in_bytes_per_s"]),
        "out_bytes_per_s": round(d["out_bytes_per_s"]),
        "redis_cpu_percent": round(d["cpu_percent"], 1),
    }


# -- ceilings: Redis' own cost per command at full speed (redis-benchmark, C) ------------


def ceilings(args) -> None:
    """CPU of redis-server per call of each command the cluster uses, with the sizes
    measured above, driven flat out by redis-benchmark (20 connections, no pipelining):
    what one core can do, whatever this shared machine lets the benchmark reach."""
    import shutil
    import subprocess

    exe = shutil.which("redis-benchmark")
    if exe is None:
        raise SystemExit("redis-benchmark not installed (Debian redis-tools)")
    record = "r" * (args.record_bytes + 25 * args.viewers_per_node)
    event = "e" * args.event_bytes
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        client = redis.Redis.from_url(server.url)
        try:
            for i in range(max(args.mget_keys)):
                client.set(f"airclass:node:{i}", record)
            client.set("airclass:origin:s", "n 1 " + "x" * 300)
            renew = client.script_load(
                "local cur = redis.call('GET', KEYS[1]) if cur then "
                "redis.call('PEXPIRE', KEYS[1], 6000) return 1 end return 0"
            )
            for _ in range(10000):
                client.xadd("airclass:bench", {"m": event[:-64], "s": "s" * 64}, maxlen=10000)
            cases = [
                ("SET record EX 6 (heartbeat)", ["SET", "airclass:node:0", record, "EX", "6"]),
                ("EVALSHA lease renewal", ["EVALSHA", renew, "1", "airclass:origin:s"]),
                (
                    "XADD event (MAXLEN ~10000)",
                    ["XADD", "airclass:bench", "MAXLEN", "~", "10000", "*", "m", event[:-64]],
                ),
                (
                    "XREAD one event (one node's delivery)",
                    ["XREAD", "COUNT", "1", "STREAMS", "airclass:bench", "0-0"],
                ),
            ]
            for k in args.mget_keys:
                keys = [f"airclass:node:{i}" for i in range(k)]
                cases.append((f"MGET {k} records (one node's registry read)", ["MGET", *keys]))
            for label, command in cases:
                n = args.ceiling_requests
                before = cpu_seconds(server.proc.pid)
                started = time.monotonic()
                subprocess.run(
                    [exe, "-h", "127.0.0.1", "-p", str(server.port), "-c", "20", "-n", str(n)]
                    + ["-q", *command],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                elapsed = time.monotonic() - started
                cpu = cpu_seconds(server.proc.pid) - before
                print(
                    json.dumps(
                        {
                            "ceiling": label,
                            "requests": n,
                            "calls_per_s_reached": round(n / elapsed),
                            "redis_cpu_us_per_call": round(1e6 * cpu / n, 1),
                            "calls_per_core_second": round(n / cpu) if cpu else None,
                        }
                    ),
                    flush=True,
                )
            for readers in args.fanout:
                print(json.dumps(fanout(exe, server, readers, event, args)), flush=True)
        finally:
            server.stop()


def fanout(exe: str, server: RedisServer, readers: int, event: str, args) -> dict:
    """The event bus at full speed: `readers` connections blocked in XREAD BLOCK 0 on the
    stream's end (as nodes are; each woken by a new entry asks again), one writer adding
    events as fast as it can. Redis' CPU per event and per delivery."""
    import subprocess

    stream = f"airclass:fanout{readers}"
    base = [exe, "-h", "127.0.0.1", "-p", str(server.port), "-q"]
    reading = subprocess.Popen(
        [*base, "-c", str(readers), "-n", "1000000000", "XREAD", "BLOCK", "0", "STREAMS"]
        + [stream, "$"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(server.url)
    try:
        wait_for(
            lambda: client.info("clients")["blocked_clients"] >= readers, 20, "readers blocked"
        )
        meter = RedisMeter(server)
        before = meter.snapshot()
        subprocess.run(
            [*base, "-c", "1", "-n", str(args.fanout_events), "XADD", stream, "MAXLEN", "~"]
            + ["10000", "*", "m", event[:-64]],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        d = RedisMeter.delta(before, meter.snapshot())
    finally:
        reading.terminate()
        reading.wait(10)
    xadd, xread = d["ops_per_s"].get("xadd", 0), d["ops_per_s"].get("xread", 0)
    cpu_us = d["cpu_percent"] * 1e4  # µs of CPU a second
    return {
        "fanout_readers": readers,
        "events_per_s": round(xadd),
        "deliveries_per_s": round(xread),
        "redis_cpu_percent": round(d["cpu_percent"], 1),
        "redis_cpu_us_per_event": round(cpu_us / xadd, 1) if xadd else None,
        "redis_cpu_us_per_delivery": round(cpu_us / xread, 2) if xread else None,
        "out_bytes_per_s": round(d["out_bytes_per_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="a main and NODES-1 subs")
    parser.add_argument("--streams", type=int, default=3, help="publishers (one per node)")
    parser.add_argument("--size", default="320x180", help="publishers' picture size")
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--presence", type=float, default=5.0, help="seconds between beats")
    parser.add_argument("--flip", type=float, default=0.1, help="P(state changes) per beat")
    parser.add_argument("--chat", type=float, default=0.5, help="chat lines/student/minute")
    parser.add_argument("--window", type=float, default=30.0)
    sim = parser.add_argument_group("simulation (no nodes: their Redis calls replayed)")
    sim.add_argument("--simulate", type=int, nargs="+", metavar="NODES", help="node counts")
    sim.add_argument("--sim-students", type=int, nargs="+", default=[1000])
    sim.add_argument("--viewers-per-node", type=int, default=250)
    sim.add_argument("--streams-per-node", type=int, default=1)
    sim.add_argument("--record-bytes", type=int, default=500, help="a record, no viewers")
    sim.add_argument("--events-per-100", type=float, default=4.0)
    sim.add_argument("--event-bytes", type=int, default=500)
    ceiling = parser.add_argument_group("ceilings (redis-benchmark)")
    ceiling.add_argument("--ceilings", action="store_true", help="measure them instead")
    ceiling.add_argument("--mget-keys", type=int, nargs="+", default=[3, 10, 30])
    ceiling.add_argument("--ceiling-requests", type=int, default=50000)
    ceiling.add_argument("--fanout", type=int, nargs="*", default=[3, 10, 30, 100])
    ceiling.add_argument("--fanout-events", type=int, default=20000)
    args = parser.parse_args()
    if args.ceilings:
        ceilings(args)
    else:
        asyncio.run(simulate(args) if args.simulate else run(args))


if __name__ == "__main__":
    main()
