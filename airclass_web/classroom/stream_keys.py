"""Teachers' RTMP stream keys: one per teacher, lasting until the teacher rotates it.

A stream key is what OBS or a phone RTMP app keeps between classes (like YouTube's or
Twitch's), so unlike the short-lived API tokens it does not expire. It is a 192-bit random
secret; the store keeps its SHA-256 (to find the teacher at publish time) and, when the
node has AIRCLASS_DATA_KEY, an encrypted copy so the teacher page can show it again.
Rotating deletes the old one: a publisher using it is refused from then on.

In an RTMP URL the key follows the stream name like a token does: ``NAME?key=sk_...``
or, for apps that cannot send a query, ``NAME.sk_...``.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from ..auth import STREAM_KEY_PREFIX as PREFIX
from ..store import Store
from .errors import ClassroomError
from .teachers import TeacherService


def looks_like_stream_key(secret: str) -> bool:
    return secret.startswith(PREFIX) and 20 < len(secret) <= 80


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class StreamKeys:
    def __init__(self, store: Store, teachers: TeacherService) -> None:
        self.store = store
        self.teachers = teachers

    async def current(self, teacher: str) -> dict:
        """The teacher's key ({key, created_at}); made on first use. `key` is None when
        it was made on a node without AIRCLASS_DATA_KEY (it was shown once: rotate)."""
        docs = await self.store.find("stream_keys", {"teacher": teacher}, order_by="created_at")
        if not docs:
            return await self.rotate(teacher)
        doc = docs[-1]
        key = None
        if doc.get("key_encrypted"):
            key = self.teachers.decrypt_secret(doc["key_encrypted"])
        return {"key": key, "created_at": doc["created_at"]}

    async def rotate(self, teacher: str) -> dict:
        """A new key for the teacher; every older one stops working at once."""
        key = PREFIX + secrets.token_urlsafe(24)
        doc = {"id": _digest(key), "teacher": teacher, "created_at": time.time()}
        try:
            doc["key_encrypted"] = self.teachers.encrypt_secret(key)
        except ClassroomError:
            pass  # no AIRCLASS_DATA_KEY: the key is shown this once only
        for old in await self.store.find("stream_keys", {"teacher": teacher}):
            await self.store.delete("stream_keys", old["id"])
        await self.store.insert("stream_keys", doc)
        return {"key": key, "created_at": doc["created_at"]}

    async def teacher_of(self, key: str) -> str | None:
        """The teacher this key belongs to, None for an unknown or rotated key."""
        if not looks_like_stream_key(key):
            return None
        doc = await self.store.get("stream_keys", _digest(key))
        if doc is None:
            return None
        if await self.store.get_teacher(doc["teacher"]) is None:
            return None  # the account was removed
        return doc["teacher"]
