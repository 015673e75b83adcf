"""`airclass backup` of a live node (teachers, class sessions, quiz answers, a recording of
an ffmpeg-published stream), its data wiped, `airclass restore`, and a new node that finds
everything; damaged archives and unconfirmed restores change nothing."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import aiohttp

from .classroom_support import Api, add_teacher
from .support import (
    ROOT,
    TEST_SECRET,
    NodeProcess,
    async_wait_for,
    ffmpeg_publish,
    stop_process,
)

STREAM = "backupclass"


def cli(*args: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=120, env=env,
    )  # fmt: skip


async def snapshot(api: Api, token: str, sid: str, quiz_id: str) -> dict:
    """What the node serves about the class, its quiz and its recordings."""
    sessions = await api.ok("GET", "/api/sessions", token=token)
    session = await api.ok("GET", f"/api/sessions/{sid}", token=token)
    stats = await api.ok("GET", f"/api/quiz/statistics/{quiz_id}", token=token)
    quizzes = await api.ok("GET", f"/api/sessions/{sid}/quizzes", token=token)
    recordings = await api.ok("GET", "/api/recording/list", token=token)
    return {
        "sessions": sessions,
        "session": session,
        "stats": stats,
        "quizzes": quizzes,
        "recordings": recordings,
    }


def unsigned(value):
    """The value with signed-link queries (expiry, signature: made per request) cut off."""
    if isinstance(value, dict):
        return {k: unsigned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsigned(v) for v in value]
    if isinstance(value, str) and "sig=" in value:
        return value.split("?", 1)[0]
    return value


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


async def test_backup_of_a_live_node_restores_exactly(tmp_path, node_factory, processes):
    node = node_factory("--workers", "1", "--record-segment-seconds", "2")
    data = node.data_dir
    assert add_teacher(data, "kim").returncode == 0
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        token = await api.login("kim")
        created = await api.ok(
            "POST", "/api/sessions", {"title": "Backup class", "stream": STREAM}, token=token
        )
        sid, code = created["session_id"], created["join_code"]
        students = [await api.join(code, name) for name in ("Ana", "Ben")]
        quiz = await api.ok(
            "POST",
            "/api/quiz/create",
            {
                "session_id": sid,
                "question": "2 + 2 = ?",
                "kind": "choice",
                "options": ["3", "4"],
                "correct": 1,
            },
            token=token,
        )
        quiz_id = quiz["quiz_id"]
        await api.ok("POST", "/api/quiz/publish", {"quiz_id": quiz_id}, token=token)
        for student, answer in zip(students, (1, 0), strict=True):
            await api.ok(
                "POST",
                "/api/quiz/response",
                {"quiz_id": quiz_id, "answer": answer},
                token=student["token"],
            )

        # A recording of the class stream.
        publisher = ffmpeg_publish(node.rtmp_url(STREAM, token), seconds=600, size="320x240")
        processes.append(publisher)

        async def live() -> bool:
            status, body = await api.call("GET", f"/api/streams/{STREAM}", token=token)
            return status == 200 and body.get("live")

        await async_wait_for(live, 20, "stream live")
        rec = await api.ok("POST", "/api/recording/start", {"stream": STREAM}, token=token)

        async def recorded() -> bool:
            body = await api.ok("GET", "/api/recording/status", token=token)
            return any(r["id"] == rec["id"] and r["duration"] >= 3 for r in body["recordings"])

        await async_wait_for(recorded, 30, "3 s recorded")
        await api.ok("POST", "/api/recording/stop", {"stream": STREAM}, token=token)

        async def complete() -> bool:
            body = await api.ok("GET", f"/api/recording/{rec['id']}", token=token)
            return body["status"] == "complete"

        await async_wait_for(complete, 30, "recording complete")
        stop_process(publisher)
        before = await snapshot(api, token, sid, quiz_id)
        assert before["stats"]["total"] == 2
        assert [r["id"] for r in before["recordings"]["recordings"]] == [rec["id"]]

        # Backup while the node runs; the environment has secrets that must stay out.
        archive = tmp_path / "backups" / "airclass.tar.gz"
        env = {**node.env, "AIRCLASS_LOG_LEVEL": "INFO"}
        done = cli(
            "backup", "--data-dir", str(data), "--out", str(archive), "--with-recordings", env=env
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    recordings_before = tree_digest(data / "recordings")
    node.stop()

    with tarfile.open(archive) as tar:
        config = json.loads(tar.extractfile("config.json").read())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert config["AIRCLASS_LOG_LEVEL"] == "INFO"
    assert not any(k in config for k in ("AIRCLASS_JWT_SECRET", "AIRCLASS_DATA_KEY"))
    assert TEST_SECRET.encode() not in gzip.decompress(archive.read_bytes())
    assert manifest["counts"]["quiz_responses"] == 2 and manifest["counts"]["teachers"] == 1
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    shutil.rmtree(data)
    # A damaged archive is refused and leaves nothing behind.
    damaged = tmp_path / "damaged.tar.gz"
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    refused = cli("restore", str(damaged), "--data-dir", str(data), "--yes", env=env)
    assert refused.returncode == 1 and "refusing" in refused.stderr, refused.stderr
    assert not data.exists()
    # Without --yes it asks, and anything but "yes" cancels.
    cancelled = cli("restore", str(archive), "--data-dir", str(data), stdin="no\n", env=env)
    assert cancelled.returncode == 1 and "cancelled" in cancelled.stderr
    assert not data.exists()
    # Restore checks the manifest's signature with the key the backup was made with.
    restored = cli("restore", str(archive), "--data-dir", str(data), stdin="yes\n", env=env)
    assert restored.returncode == 0, restored.stderr
    assert tree_digest(data / "recordings") == recordings_before

    again = NodeProcess(tmp_path, "--workers", "1", "--data-dir", str(data), name="restored")
    try:
        again.start()
        async with aiohttp.ClientSession() as http:
            api = Api(http, again.url)
            token = await api.login("kim")  # the account and its password came back
            after = await snapshot(api, token, sid, quiz_id)
            assert unsigned(after) == unsigned(before)
            mp4_url = after["recordings"]["recordings"][0]["mp4_url"]  # a signed link
            async with http.get(again.url + mp4_url) as resp:
                assert resp.status == 200
                mp4 = await resp.read()
            mp4_path = data / "recordings" / rec["id"] / "recording.mp4"
            assert mp4 == mp4_path.read_bytes()
    finally:
        again.stop()
