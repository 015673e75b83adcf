"""docker-compose.yml's Redis with Sentinel, run without docker: the commands of its
services redis, redis-replica and sentinel1..3 (deploy/redis/sentinel.sh) are taken from
the file, with its variables filled in, and run with Debian's redis-server in the test's
network namespace (they bind the fixed ports 6379, 6380, 26379-26381 of 127.0.0.1). A node
given the compose file's AIRCLASS_REDIS_URL reaches Redis through the Sentinels; the master
is killed with kill -9 and the Sentinels promote the replica; the old master, started
again with its compose command, becomes the new master's replica; a Sentinel restarted
from its kept configuration names the current master."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from airclass_web.redis_client import parse_sentinel_url, redis_client

from .support import ROOT, TEST_HOST, NodeProcess, http_json, wait_for

PASSWORD = "0f" * 32  # URL-safe, like secrets.token_hex(32)
ENV = {
    "AIRCLASS_JWT_SECRET": "j" * 40,
    "AIRCLASS_CLUSTER_SECRET": "c" * 40,
    "AIRCLASS_PUBLIC_HOST": "10.0.0.5",
    "AIRCLASS_REDIS_PASSWORD": PASSWORD,
    "AIRCLASS_MONGO_PASSWORD": "m" * 20,
    "AIRCLASS_TURN_SECRET": "t" * 40,
    "AIRCLASS_GRAFANA_PASSWORD": "g" * 20,
    "AIRCLASS_METRICS_TOKEN": "x" * 40,
}
REDIS_SERVICES = ("redis", "redis-replica", "sentinel1", "sentinel2", "sentinel3")
VARIABLE = re.compile(r"\$\$|\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.skipif(
        TEST_HOST.startswith("127."),
        reason="binds the compose file's fixed ports: run in the private network namespace "
        "(scripts/run-tests.sh)",
    ),
]


def interpolate(value, env: dict):
    """docker compose's variable substitution (${V}, ${V:-d}, ${V:?msg}, $$)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name, "")
        if op in (":?", "?") and not got:
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and not got:
            return arg
        return got

    return VARIABLE.sub(one, value)


def compose() -> dict:
    """docker-compose.yml parsed by PyYAML: the virtualenv's, else Debian's python3-yaml."""
    path = ROOT / "docker-compose.yml"
    try:
        import yaml
    except ImportError:
        script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"
        try:
            out = subprocess.run(
                ["/usr/bin/python3", "-c", script, str(path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            pytest.skip(f"no PyYAML to read docker-compose.yml ({exc})")
        return json.loads(out.stdout)
    return yaml.safe_load(path.read_text())


def ping(port: int) -> bool:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"],
        env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        capture_output=True,
        text=True,
        timeout=5,
    )
    return out.stdout.strip() == "PONG"


def cli(port: int, *args: str) -> list[str]:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        env={**os.environ, "REDISCLI_AUTH": PASSWORD},
        capture_output=True,
        text=True,
        timeout=5,
    )
    return out.stdout.split()


class ComposeRedis:
    """The compose file's Redis services as local processes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.doc = interpolate(compose(), ENV)
        self.procs: dict[str, subprocess.Popen] = {}

    def command(self, name: str) -> tuple[list[str], dict, Path]:
        """The service's command, environment and working directory, its volumes mapped
        to directories of the test."""
        service = self.doc["services"][name]
        assert service["network_mode"] == "host" and service["image"].startswith("redis:7")
        env = {**os.environ, **{k: str(v) for k, v in service["environment"].items()}}
        command = list(service["command"])
        cwd = self.tmp
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("./"):  # the bind-mounted deploy/redis
                command = [c.replace(target, str(ROOT / source[2:])) for c in command]
            else:  # the service's own named volume (its /data)
                cwd = self.tmp / source
                cwd.mkdir(exist_ok=True)
                command = [c.replace(target, str(cwd)) for c in command]
                env["SENTINEL_DIR"] = str(cwd)
        return command, env, cwd

    def start(self, name: str) -> None:
        command, env, cwd = self.command(name)
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[name] = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
        )

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def master_port(sentinel_port: int) -> int | None:
    reply = cli(sentinel_port, "SENTINEL", "get-master-addr-by-name", "airclass")
    return int(reply[1]) if len(reply) == 2 else None


@pytest.fixture
def compose_redis(tmp_path):
    stack = ComposeRedis(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def test_compose_file_wires_every_node_to_the_sentinels():
    doc = compose()
    services = doc["services"]
    for name in ("main", "sub", "coturn", "mongo", "prometheus", "grafana", *REDIS_SERVICES):
        assert name in services, name
    for name in services:
        for dep in services[name].get("depends_on", []):
            assert dep in services, (name, dep)
        for volume in services[name].get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in doc["volumes"], (name, source)
    resolved = interpolate(doc, ENV)
    for name in ("main", "sub"):
        url = resolved["services"][name]["environment"]["AIRCLASS_REDIS_URL"]
        spec = parse_sentinel_url(url)
        assert spec.sentinels == (("127.0.0.1", 26379), ("127.0.0.1", 26380), ("127.0.0.1", 26381))
        assert spec.master == "airclass"
        assert spec.password == PASSWORD and spec.sentinel_password == PASSWORD
        assert {"sentinel1", "sentinel2", "sentinel3"} <= set(services[name]["depends_on"])


async def test_compose_redis_fails_over_and_nodes_follow(compose_redis, tmp_path):
    stack = compose_redis
    for name in REDIS_SERVICES:
        stack.start(name)
    wait_for(lambda: all(ping(p) for p in (6379, 6380, 26379, 26380, 26381)), 20, "redis up")
    wait_for(lambda: cli(6380, "ROLE")[:1] == ["slave"], 10, "replica attached")

    def sentinels_ready() -> bool:
        """Every Sentinel knows the replica and the two other Sentinels (before that a
        dead master could not be failed over)."""
        for port in (26379, 26380, 26381):
            reply = cli(port, "SENTINEL", "master", "airclass")
            if _field(reply, "num-slaves") != "1" or _field(reply, "num-other-sentinels") != "2":
                return False
        return True

    wait_for(sentinels_ready, 30, "the Sentinels to know the replica and each other")

    url = stack.doc["services"]["main"]["environment"]["AIRCLASS_REDIS_URL"]
    client = redis_client(url, socket_timeout=2, socket_connect_timeout=2)
    await client.set("airclass:compose-check", "before")
    assert cli(6379, "GET", "airclass:compose-check") == ["before"]

    # A master that crashes and is restarted at once (Docker's restart policy), before the
    # Sentinels call it down, comes back with its data (append-only file), and its
    # replica keeps it instead of copying an empty master.
    await asyncio.sleep(1.5)  # appendfsync everysec
    stack.kill("redis")
    stack.start("redis")
    wait_for(lambda: ping(6379), 10, "the master restarted")
    assert cli(6379, "GET", "airclass:compose-check") == ["before"]
    wait_for(
        lambda: "master_link_status:up" in cli(6380, "INFO", "replication"),
        20,
        "the replica to sync again",
    )
    assert cli(6380, "GET", "airclass:compose-check") == ["before"]
    assert master_port(26379) == 6379  # too short to be called down: no failover

    # A node on the compose URL: ready (Redis reachable through the Sentinels).
    node = NodeProcess(
        tmp_path, "--redis-url", url, env={"AIRCLASS_CLUSTER_SECRET": "c" * 40}, name="a"
    ).start()
    try:
        status, body, _ = http_json("GET", node.url + "/ready")
        assert status == 200, body

        stack.kill("redis")
        killed = time.monotonic()
        wait_for(lambda: master_port(26379) == 6380, 20, "the Sentinels to promote the replica")
        promoted = time.monotonic() - killed

        async def write() -> bool:
            try:
                await client.set("airclass:compose-check", "after")
                return True
            except Exception:  # noqa: BLE001 - the old master is gone: ask again
                return False

        deadline = time.monotonic() + 20
        while not await write():
            assert time.monotonic() < deadline, "no write through the Sentinels' new master"
            await asyncio.sleep(0.1)
        writable = time.monotonic() - killed
        print(f"compose Redis: promoted after {promoted:.1f} s, written after {writable:.1f} s")
        assert cli(6380, "GET", "airclass:compose-check") == ["after"]
        wait_for(lambda: http_json("GET", node.url + "/ready")[0] == 200, 20, "node ready again")
    finally:
        node.stop()
        await client.aclose()

    # The old master comes back with its compose command: made a replica of the new one.
    stack.start("redis")
    wait_for(
        lambda: cli(6379, "ROLE")[:3] == ["slave", "127.0.0.1", "6380"], 30, "old master demoted"
    )
    # A Sentinel restarted resumes from its rewritten configuration: the current master.
    stack.kill("sentinel1")
    stack.start("sentinel1")
    wait_for(lambda: ping(26379), 10, "sentinel1 back")
    assert master_port(26379) == 6380


def _field(reply: list[str], name: str) -> str | None:
    """A value from SENTINEL MASTER's flat name/value reply."""
    try:
        return reply[reply.index(name) + 1]
    except (ValueError, IndexError):
        return None
