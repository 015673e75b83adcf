"""The store: one small async interface over documents, with two backends.

Documents are JSON-able dicts with a string ``"id"``. Each collection declares the fields
it is queried by (``SCHEMA``); backends index those and only those may appear in a
``where`` filter or an ``order_by``. Domain helpers (teachers, recordings, ...) are
written once here on top of the primitives.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

Doc = dict[str, Any]


class StoreError(Exception):
    """The store failed (connection, bad query)."""


class DuplicateError(StoreError):
    """A unique key (id, join code, one answer per student per quiz...) already exists."""


@dataclass(frozen=True)
class Collection:
    name: str
    #: Fields that may be filtered/sorted on (besides "id").
    fields: tuple[str, ...]
    unique: tuple[tuple[str, ...], ...] = ()
    indexes: tuple[tuple[str, ...], ...] = field(default_factory=tuple)


SCHEMA: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection("teachers", ("username", "created_at"), unique=(("username",),)),
        Collection(
            "sessions",
            ("join_code", "teacher", "stream", "status", "started_at"),
            unique=(("join_code",),),
            indexes=(("teacher", "started_at"), ("stream", "started_at")),
        ),
        Collection(
            "quizzes",
            ("session_id", "status", "created_at"),
            indexes=(("session_id", "created_at"),),
        ),
        Collection(
            "quiz_responses",
            ("quiz_id", "session_id", "student_id", "timestamp"),
            unique=(("quiz_id", "student_id"),),
            indexes=(("session_id", "timestamp"), ("quiz_id", "timestamp")),
        ),
        Collection(
            "chat_messages",
            ("session_id", "user_id", "timestamp"),
            indexes=(("session_id", "timestamp"),),
        ),
        Collection(
            "engagement_events",
            ("session_id", "student_id", "kind", "timestamp"),
            indexes=(("session_id", "timestamp"), ("session_id", "student_id", "timestamp")),
        ),
        Collection(
            "streams", ("owner", "public", "claimed_at"), indexes=(("owner", "claimed_at"),)
        ),
        # Teachers' RTMP stream keys (classroom/stream_keys.py): id is the key's SHA-256.
        Collection("stream_keys", ("teacher", "created_at"), indexes=(("teacher",),)),
        Collection(
            "recordings",
            ("stream", "session_id", "started_at"),
            indexes=(("stream", "started_at"), ("session_id", "started_at")),
        ),
        # AI (airclass_web/ai): per-teacher provider keys (encrypted), cached results
        # (expire_at checked on read), session reports.
        Collection("ai_keys", ("teacher", "provider", "updated_at"), indexes=(("teacher",),)),
        Collection("ai_cache", ("task", "expires_at"), indexes=(("expires_at",),)),
        Collection(
            "ai_reports",
            ("session_id", "generated_at"),
            indexes=(("session_id", "generated_at"),),
        ),
    )
}


def check_query(collection: str, where: dict | None, order_by: str | None) -> Collection:
    """The collection's schema; ValueError for an unknown collection or field."""
    try:
        coll = SCHEMA[collection]
    except KeyError:
        raise ValueError(f"unknown collection {collection!r}") from None
    allowed = {"id", *coll.fields}
    for key in [*(where or {}), *([order_by] if order_by else [])]:
        if key not in allowed:
            raise ValueError(f"{collection}: {key!r} is not an indexed field")
    return coll


class Store(abc.ABC):
    """Async document store. Subclasses implement the primitives."""

    kind = "abstract"

    # -- primitives ---------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create collections/indexes (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def insert(self, collection: str, doc: Doc) -> Doc:
        """Insert a new document; DuplicateError when its id or a unique key exists.

        Returns only once the document is durably written.
        """

    @abc.abstractmethod
    async def upsert(self, collection: str, doc: Doc) -> Doc:
        """Insert or replace the document with this id."""

    @abc.abstractmethod
    async def get(self, collection: str, doc_id: str) -> Doc | None: ...

    @abc.abstractmethod
    async def find(
        self,
        collection: str,
        where: dict | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        """Documents whose indexed fields equal ``where``'s values."""

    @abc.abstractmethod
    async def find_one(self, collection: str, where: dict) -> Doc | None: ...

    @abc.abstractmethod
    async def count(self, collection: str, where: dict | None = None) -> int: ...

    @abc.abstractmethod
    async def update(self, collection: str, doc_id: str, fields: dict) -> Doc | None:
        """Set these fields; the updated document, or None when there is none."""

    @abc.abstractmethod
    async def delete(self, collection: str, doc_id: str) -> bool: ...

    # -- teachers -----------------------------------------------------------------
    async def get_teacher(self, username: str) -> Doc | None:
        return await self.find_one("teachers", {"username": username})

    async def count_teachers(self) -> int:
        return await self.count("teachers")

    # -- streams: who owns a stream name, is it public --------------------------------
    async def claim_stream(self, name: str, owner: str, now: float) -> Doc:
        """The stream's document; the first claimer becomes its owner (atomic: a unique
        id), a later claimer gets the existing document back unchanged."""
        doc = {"id": name, "owner": owner, "claimed_at": now, "public": False}
        try:
            return await self.insert("streams", doc)
        except DuplicateError:
            existing = await self.get("streams", name)
            return existing if existing is not None else doc

    async def get_stream(self, name: str) -> Doc | None:
        return await self.get("streams", name)

    async def set_stream_public(self, name: str, public: bool) -> Doc | None:
        return await self.update("streams", name, {"public": bool(public)})

    async def public_streams(self) -> list[Doc]:
        return await self.find("streams", {"public": True})

    # -- recordings (used by the recorder) ------------------------------------------
    async def save_recording(self, doc: Doc) -> Doc:
        """Create or replace a recording document (needs "id"; "stream", "session_id",
        "started_at" are indexed)."""
        if not doc.get("id"):
            raise ValueError("a recording needs an id")
        doc = {"stream": "", "session_id": "", "started_at": 0.0, **doc}
        return await self.upsert("recordings", doc)

    async def get_recording(self, recording_id: str) -> Doc | None:
        return await self.get("recordings", recording_id)

    async def list_recordings(
        self, *, stream: str | None = None, session_id: str | None = None, limit: int = 1000
    ) -> list[Doc]:
        """Newest first."""
        where: dict = {}
        if stream is not None:
            where["stream"] = stream
        if session_id is not None:
            where["session_id"] = session_id
        return await self.find(
            "recordings", where, order_by="started_at", descending=True, limit=limit
        )

    async def delete_recording(self, recording_id: str) -> bool:
        return await self.delete("recordings", recording_id)
