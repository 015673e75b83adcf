"""One contract, every store backend: SQLite always, MongoDB when AIRCLASS_TEST_MONGO_URL."""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest

from airclass_web.store import DuplicateError, Store
from airclass_web.store.sqlite import SQLiteStore

MONGO_URL = os.environ.get("AIRCLASS_TEST_MONGO_URL", "")


@pytest.fixture(params=["sqlite", "mongo"])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s: Store = SQLiteStore(tmp_path / "store.sqlite3")
    else:
        if not MONGO_URL:
            pytest.skip("MongoDB contract run skipped: AIRCLASS_TEST_MONGO_URL is not set")
        from airclass_web.store.mongo import MongoStore

        s = MongoStore(MONGO_URL, database="airclass_test_" + secrets.token_hex(4))
    await s.open()
    yield s
    if request.param == "mongo":
        await s._client.drop_database(s._db.name)
    await s.close()


async def test_insert_get_update_delete(store: Store):
    doc = {
        "id": "s1",
        "title": "Algebra",
        "join_code": "ABC123",
        "teacher": "kim",
        "stream": "math",
        "status": "active",
        "started_at": 10.5,
        "muted": [],
    }
    await store.insert("sessions", doc)
    assert await store.get("sessions", "s1") == doc
    assert await store.get("sessions", "nope") is None
    updated = await store.update("sessions", "s1", {"status": "ended", "ended_at": 20.0})
    assert updated["status"] == "ended" and updated["title"] == "Algebra"
    assert (await store.find_one("sessions", {"status": "ended"}))["id"] == "s1"
    assert await store.find("sessions", {"status": "active"}) == []
    assert await store.update("sessions", "nope", {"status": "x"}) is None
    assert await store.delete("sessions", "s1") is True
    assert await store.delete("sessions", "s1") is False


async def test_duplicate_id_and_unique_keys(store: Store):
    await store.insert("sessions", {"id": "a", "join_code": "CODE1"})
    with pytest.raises(DuplicateError):
        await store.insert("sessions", {"id": "a", "join_code": "OTHER"})
    with pytest.raises(DuplicateError):
        await store.insert("sessions", {"id": "b", "join_code": "CODE1"})
    await store.insert("teachers", {"id": "t1", "username": "kim"})
    with pytest.raises(DuplicateError):
        await store.insert("teachers", {"id": "t2", "username": "kim"})


async def test_one_answer_per_student_per_quiz_under_concurrency(store: Store):
    async def answer(i: int, student: str):
        doc = {
            "id": f"r{i}",
            "quiz_id": "q1",
            "session_id": "s",
            "student_id": student,
            "timestamp": float(i),
            "answer": i,
        }
        try:
            await store.insert("quiz_responses", doc)
            return True
        except DuplicateError:
            return False

    # 50 students, each answering 3 times at once: exactly one answer each is stored.
    results = await asyncio.gather(*(answer(i, f"st{i % 50}") for i in range(150)))
    assert sum(results) == 50
    assert await store.count("quiz_responses", {"quiz_id": "q1"}) == 50
    # The same student may answer another quiz.
    await store.insert("quiz_responses", {"id": "x", "quiz_id": "q2", "student_id": "st0"})
    assert await store.count("quiz_responses") == 51


async def test_find_order_limit_and_count(store: Store):
    for i in range(30):
        await store.insert(
            "chat_messages",
            {
                "id": f"m{i:02d}",
                "session_id": "s1" if i % 3 else "s2",
                "user_id": f"u{i % 2}",
                "timestamp": 1000.0 + i,
                "text": f"hello {i} 안녕",
            },
        )
    last = await store.find(
        "chat_messages", {"session_id": "s1"}, order_by="timestamp", descending=True, limit=5
    )
    assert [m["id"] for m in last] == ["m29", "m28", "m26", "m25", "m23"]
    assert last[0]["text"] == "hello 29 안녕"
    first = await store.find(
        "chat_messages", {"session_id": "s1", "user_id": "u0"}, order_by="timestamp", limit=2
    )
    assert [m["id"] for m in first] == ["m02", "m04"]
    assert await store.count("chat_messages", {"session_id": "s1"}) == 20
    assert await store.count("chat_messages", {"session_id": "none"}) == 0
    with pytest.raises(ValueError):
        await store.find("chat_messages", {"text": "hello"})
    with pytest.raises(ValueError):
        await store.find("no_such_collection")


async def test_every_collection_round_trips(store: Store):
    from airclass_web.store import SCHEMA

    assert set(SCHEMA) == {
        "sessions",
        "quizzes",
        "quiz_responses",
        "chat_messages",
        "engagement_events",
        "recordings",
        "teachers",
        "streams",
        "ai_keys",
        "ai_cache",
        "ai_reports",
        "stream_keys",
    }
    for name, coll in SCHEMA.items():
        doc = {"id": f"{name}-1", **{f: f"v-{f}" for f in coll.fields}, "extra": {"n": [1, 2]}}
        await store.insert(name, doc)
        assert await store.get(name, doc["id"]) == doc
        assert await store.count(name) == 1


async def test_recordings_for_the_recorder(store: Store):
    rec = {
        "id": "rec1",
        "stream": "math",
        "session_id": "s1",
        "started_at": 100.0,
        "path": "recordings/math/rec1.mp4",
        "duration": None,
    }
    await store.save_recording(rec)
    await store.save_recording({"id": "rec2", "stream": "math", "started_at": 200.0})
    await store.save_recording(
        {"id": "rec3", "stream": "art", "session_id": "s1", "started_at": 150.0}
    )
    assert await store.get_recording("rec1") == rec
    assert [r["id"] for r in await store.list_recordings(stream="math")] == ["rec2", "rec1"]
    assert [r["id"] for r in await store.list_recordings(session_id="s1")] == ["rec3", "rec1"]
    assert len(await store.list_recordings()) == 3
    # save again replaces (e.g. the recorder fills in the duration at the end).
    await store.save_recording({**rec, "duration": 12.5})
    assert (await store.get_recording("rec1"))["duration"] == 12.5
    assert await store.delete_recording("rec1") is True
    assert await store.get_recording("rec1") is None
    with pytest.raises(ValueError):
        await store.save_recording({"stream": "x"})


async def test_teacher_helpers(store: Store):
    assert await store.count_teachers() == 0
    await store.insert("teachers", {"id": "kim", "username": "kim", "password_hash": "h"})
    assert (await store.get_teacher("kim"))["password_hash"] == "h"
    assert await store.get_teacher("lee") is None
    assert await store.count_teachers() == 1


async def test_stream_claims_first_wins_and_public_flag(store: Store):
    claims = await asyncio.gather(*(store.claim_stream("math", f"t{i}", 1.0) for i in range(8)))
    owners = {c["owner"] for c in claims}
    assert len(owners) == 1  # one owner under concurrency, everyone sees the same
    assert (await store.get_stream("math"))["owner"] in owners
    assert await store.public_streams() == []
    await store.set_stream_public("math", True)
    assert [d["id"] for d in await store.public_streams()] == ["math"]
    assert await store.set_stream_public("nope", True) is None


async def test_data_survives_reopen(tmp_path):
    path = tmp_path / "persist.sqlite3"
    s = SQLiteStore(path)
    await s.open()
    await s.insert("quizzes", {"id": "q", "session_id": "s", "created_at": 1.0})
    await s.close()
    s2 = SQLiteStore(path)
    await s2.open()
    assert (await s2.get("quizzes", "q"))["session_id"] == "s"
    await s2.close()
