"""Issue 17, round three (items 1, 7, 8, 9), each as an attacker would go about it:

1. a crafted backup (correct SHA-256s) whose member `recordings//<abs path>` escaped the
   staging directory, fed to the real `airclass restore`;
7. a local user reading the live store, the recordings and the backups of a real node
   (real stat() of what it wrote), and secrets in a backup's config.json;
8. a signed chat event captured from real redis-server and XADDed again while a real
   WebSocket client listens (also after its node restarted), and an old signed event;
9. newlines in a user_id and in a URL path to forge lines in the node's log.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import aiohttp
import pytest

from .classroom_support import WS, Api, add_teacher
from .support import (
    ROOT,
    TEST_SECRET,
    NodeProcess,
    async_wait_for,
    ffmpeg_publish,
    stop_process,
)


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120, env=env,
    )  # fmt: skip


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def write_archive(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()):
    """A tar.gz of these regular files (in order) plus raw members (links, devices)."""
    with tarfile.open(path, "w:gz") as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))


def forge(original: dict[str, bytes], add: dict[str, bytes]) -> dict[str, bytes]:
    """The backup with members added and the manifest's checksums made to match (what an
    attacker can do without any key). The signature, if any, is left as it was."""
    manifest = json.loads(original["manifest.json"])
    files = {k: v for k, v in original.items() if not k.startswith("manifest.")}
    files.update(add)
    for name, data in add.items():
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    out = {**files, "manifest.json": json.dumps(manifest, indent=1).encode()}
    if "manifest.sig" in original:
        out["manifest.sig"] = original["manifest.sig"]
    return out


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- item 1: restore writes only inside the data directory ---------------------------------
async def test_crafted_backup_cannot_write_outside_the_data_dir(tmp_path, node_factory):
    node = node_factory()
    assert add_teacher(node.data_dir, "kim").returncode == 0
    archive = tmp_path / "backups" / "airclass.tar.gz"
    made = cli(
        "backup", "--data-dir", str(node.data_dir), "--out", str(archive), "--with-recordings",
        env=node.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    node.stop()
    original = members(archive)
    store = node.data_dir / "airclass.sqlite3"
    store_before = digest(store)

    # The reviewer's archive: `recordings//<absolute path>` passes "no '..', not absolute"
    # and becomes an absolute path once "recordings/" is cut off.
    target = tmp_path / "outside" / "pwned"
    target.parent.mkdir()
    slip = {f"recordings/{target}": b"owned\n"}  # "recordings//tmp/.../pwned"
    assert "//" in next(iter(slip))
    crafted = tmp_path / "crafted.tar.gz"
    write_archive(crafted, forge(original, slip))
    done = cli("restore", str(crafted), "--data-dir", str(node.data_dir), "--yes", env=node.env)
    assert not target.exists(), "restore wrote outside the data directory"
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refusing to restore" in done.stderr
    assert digest(store) == store_before  # nothing was touched

    # Altered content with matching checksums: the manifest's signature no longer holds.
    altered = forge(original, {"config.json": b'{"AIRCLASS_HOST": "0.0.0.0"}'})
    write_archive(crafted, altered)
    done = cli("restore", str(crafted), "--data-dir", str(node.data_dir), "--yes", env=node.env)
    assert done.returncode == 1 and "signature does not match" in done.stderr, done.stderr
    # No signature at all.
    write_archive(crafted, {k: v for k, v in altered.items() if k != "manifest.sig"})
    done = cli("restore", str(crafted), "--data-dir", str(node.data_dir), "--yes", env=node.env)
    assert done.returncode == 1 and "not signed" in done.stderr, done.stderr
    # The genuine archive without the key it was made with.
    other = {**node.env, "AIRCLASS_DATA_KEY": "", "AIRCLASS_JWT_SECRET": "x" * 40}
    done = cli("restore", str(archive), "--data-dir", str(node.data_dir), "--yes", env=other)
    assert done.returncode == 1 and "signature does not match" in done.stderr, done.stderr

    # Even a manifest signed with the operator's own key cannot carry a path out, a link
    # or a device (the path checks stand on their own).
    from airclass_web.ops.backup import sign_manifest

    def signed(files: dict[str, bytes]) -> dict[str, bytes]:
        return {**files, "manifest.sig": sign_manifest(files["manifest.json"], node.env)}

    link = tarfile.TarInfo("recordings/link")
    link.type, link.linkname = tarfile.SYMTYPE, str(target)
    hard = tarfile.TarInfo("recordings/hard")
    hard.type, hard.linkname = tarfile.LNKTYPE, "config.json"
    device = tarfile.TarInfo("recordings/dev")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    evil = [
        (forge(original, slip), []),
        (forge(original, {"recordings/a/../../../escape": b"x"}), []),
        (forge(original, {"recordings/./x": b"x"}), []),
        (forge(original, {"store/../../escape": b"x"}), []),
        (forge(original, {"recordings/new\nline": b"x"}), []),
        (original, [link]),
        (original, [hard]),
        (original, [device]),
    ]
    for files, extra in evil:
        write_archive(crafted, signed(files), extra)
        done = cli("restore", str(crafted), "--data-dir", str(node.data_dir), "--yes", env=node.env)
        assert done.returncode == 1, (extra, done.stdout + done.stderr)
        assert "refusing to restore" in done.stderr
        assert not target.exists() and not (tmp_path / "escape").exists()
        assert digest(store) == store_before
    assert list(target.parent.iterdir()) == []

    # The genuine archive restores, into private files.
    done = cli("restore", str(archive), "--data-dir", str(node.data_dir), "--yes", env=node.env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700


# -- item 7: what a local user can read --------------------------------------------------
def not_private(root: Path) -> list[str]:
    """Every file or directory under root (root too) that group or others may use."""
    found = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        if st.st_mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {stat.filemode(st.st_mode)}")
    return found


async def test_node_files_and_backups_are_private(tmp_path, node_factory, processes):
    data = tmp_path / "data-private"
    assert add_teacher(data, "kim").returncode == 0
    # As an older version left them: world-readable directory and store.
    data.chmod(0o755)
    for path in data.iterdir():
        path.chmod(0o644)
    node = node_factory("--data-dir", str(data), "--workers", "1", "--record-segment-seconds", "1")
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        token = await api.login("kim")
        await api.ok("POST", "/api/sessions", {"title": "Modes", "stream": "modes"}, token=token)
        publisher = ffmpeg_publish(node.rtmp_url("modes", token), 60, size="320x240")
        processes.append(publisher)

        async def live() -> bool:
            status, body = await api.call("GET", "/api/streams/modes", token=token)
            return status == 200 and body.get("live")

        await async_wait_for(live, 20, "stream live")
        rec = await api.ok("POST", "/api/recording/start", {"stream": "modes"}, token=token)

        async def recorded() -> bool:
            body = await api.ok("GET", "/api/recording/status", token=token)
            return any(r["id"] == rec["id"] and r["duration"] >= 2 for r in body["recordings"])

        await async_wait_for(recorded, 30, "2 s recorded")
        await api.ok("POST", "/api/recording/stop", {"stream": "modes"}, token=token)

        async def complete() -> bool:
            body = await api.ok("GET", f"/api/recording/{rec['id']}", token=token)
            return body["status"] == "complete"

        await async_wait_for(complete, 30, "recording complete")
        stop_process(publisher)

        # While the node runs: the store with its WAL, the recordings (worker sockets are
        # under run/ when the path is short enough for a unix socket, else in a mkdtemp).
        names = {p.relative_to(data).as_posix() for p in data.rglob("*")}
        assert {"airclass.sqlite3", "airclass.sqlite3-wal", "recordings"} <= names
        assert any(n.endswith(".mp4") for n in names), names
        assert not_private(data) == []

        # A backup made with secrets and credential-carrying URLs in the environment.
        env = {
            **node.env,
            "AIRCLASS_ALERT_WEBHOOK": "https://hooks.example.invalid/services/T000/B000/XXXX",
            "AIRCLASS_REDIS_URL": "redis://:redis-pass-123@127.0.0.1:1/0",
            "AIRCLASS_MAIN_URL": "https://user:main-pass-123@main.invalid",
            "AIRCLASS_ICE_SERVERS": "turn:u:ice-pass-123@turn.invalid",
            "AIRCLASS_LOG_LEVEL": "INFO",
        }
        backups = tmp_path / "backups"
        archive = backups / "nightly.tar.gz"
        done = cli(
            "backup", "--data-dir", str(data), "--out", str(archive), "--with-recordings", env=env
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(backups.stat().st_mode) == 0o700
    config = json.loads(members(archive)["config.json"])
    assert config.get("AIRCLASS_LOG_LEVEL") == "INFO"
    leaked = [k for k in config if k.removeprefix("AIRCLASS_") in (
        "ALERT_WEBHOOK", "REDIS_URL", "MONGO_URL", "MAIN_URL", "ICE_SERVERS", "JWT_SECRET",
        "DATA_KEY",
    )]  # fmt: skip
    assert leaked == []
    text = json.dumps(config)
    assert "hooks.example" not in text and "pass-123" not in text
    node.stop()
    assert not_private(data) == []


# -- item 8: replayed bus events ---------------------------------------------------------
@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def chat_texts(ws: WS) -> list[str]:
    return [m["message"]["text"] for m in ws.of("chat")]


async def test_replayed_bus_events_are_dropped(tmp_path, redis_server, http):
    import redis.asyncio as aioredis

    from airclass_web.classroom.events import STREAM, bus_key, sign

    shared = tmp_path / "shared"
    assert add_teacher(shared, "kim").returncode == 0
    extra = ("--redis-url", redis_server.url, "--data-dir", str(shared))
    a = NodeProcess(tmp_path, *extra, name="a").start()
    b = NodeProcess(tmp_path, *extra, name="b").start()
    r = aioredis.from_url(redis_server.url)
    try:
        api_a, api_b = Api(http, a.url), Api(http, b.url)
        token = await api_a.login("kim")
        created = await api_a.ok(
            "POST", "/api/sessions", {"title": "Replay", "stream": "replay"}, token=token
        )
        sid = created["session_id"]
        teacher = await WS.connect(http, a.url, sid, token, "teacher@A")
        student = await api_b.join(created["join_code"], "Ana")
        listener = await WS.connect(http, b.url, sid, student["token"], "student@B")

        async def say(text: str, ws: WS) -> None:
            await teacher.send(type="chat", text=text)
            await ws.wait("chat", lambda m: m["message"]["text"] == text)

        await say("original", listener)
        # The attacker (access to Redis, not to the secret) captures the signed entry.
        entries = await r.xrange(STREAM)
        (captured,) = [f for _, f in entries if b'"original"' in f[b"m"]]

        # Replayed at once: dropped (the node saw its id).
        await r.xadd(STREAM, captured)
        await say("marker 1", listener)  # the stream is read in order: replay handled
        assert chat_texts(listener).count("original") == 1

        # Node B restarts (an update, a crash); the client reconnects; replayed again.
        await listener.close()
        b.stop()
        b.start()
        listener = await WS.connect(http, b.url, sid, student["token"], "student@B again")
        await r.xadd(STREAM, captured)
        await say("marker 2", listener)
        assert "original" not in chat_texts(listener), "replayed event delivered after restart"

        # An event signed long ago (as if captured an hour before) is too old; the same
        # event signed now is delivered, so the envelope itself is right.
        key = bus_key(TEST_SECRET)
        event = json.loads(captured[b"m"])

        def signed_copy(text: str, event_id: str, ts: float) -> dict[bytes, bytes]:
            copy = {**event, "_id": event_id, "_ts": ts}
            copy["message"] = {**event["message"], "id": event_id, "text": text}
            payload = json.dumps(copy).encode()
            return {b"m": payload, b"s": sign(key, payload)}

        await r.xadd(STREAM, signed_copy("an hour old", "old-1", time.time() - 3600))
        await r.xadd(STREAM, signed_copy("just now", "new-1", time.time()))
        await listener.wait("chat", lambda m: m["message"]["text"] == "just now")
        assert "an hour old" not in chat_texts(listener)
        status, body = await api_b.call("GET", "/api/classroom/status")
        assert status == 200 and body["bus"]["replayed"] >= 1, body  # counted
        await teacher.close()
        await listener.close()
    finally:
        await r.aclose()
        a.stop()
        b.stop()


# -- item 9: forged log lines ------------------------------------------------------------
async def test_user_ids_and_paths_cannot_forge_log_lines(tmp_path, node_factory, http):
    from airclass_web.auth import TokenService

    node = node_factory()
    forged = "2026-01-01 00:00:00,000 WARNING airclass: FORGED admin password changed"
    for user_id in (f"kim\n{forged}", f"kim\r{forged}", "kim\x1b[2Jx", "kim lee", "a:b", "x" * 129):
        async with http.post(
            node.url + "/api/token", params={"stream": "logs", "user_id": user_id}
        ) as resp:
            body = await resp.json()
            assert resp.status == 400, (user_id, body)
            assert "user_id must be" in body["error"]
    async with http.post(
        node.url + "/api/token", params={"stream": "logs", "user_id": "kim.lee@school-1_a"}
    ) as resp:
        assert resp.status == 200
    # A token minted before this check (signed, so it verifies) is refused on the WS.
    old = TokenService(TEST_SECRET, 600).issue(
        role="student", user_id=f"kim\n{forged}", action="read", stream="logs"
    )[0]
    async with http.get(node.url + "/ws/session/any", params={"token": old}) as resp:
        assert resp.status == 400
    # Text that still reaches a log line (the path of an unknown page) is escaped.
    async with http.get(node.url + "/nothing%0A" + forged.replace(" ", "%20")) as resp:
        assert resp.status == 404

    def escaped_in_log() -> bool:
        return "nothing\\x0a2026-01-01" in node.log()

    await async_wait_for(escaped_in_log, 10, "the 404 logged")
    node.stop()
    lines = node.log().splitlines()
    assert not [line for line in lines if line.startswith("2026-01-01")], "a forged line"
    assert all("\x1b" not in line and "\r" not in line for line in lines)
