"""Chat: stored messages, history, deletion, mutes, per-student rate and length limits."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..store import Store
from .errors import ClassroomError
from .sessions import new_id

MAX_LENGTH = 500
HISTORY = 50
#: Token bucket per student: BURST messages, then one every REFILL seconds.
BURST = 5
REFILL = 2.0


class RateLimiter:
    """Token buckets keyed by (session, user); in memory, per node (a student's socket
    lives on one node)."""

    def __init__(self, burst: int = BURST, refill: float = REFILL) -> None:
        self.burst, self.refill = burst, refill
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def available(self, key: tuple[str, str], now: float | None = None) -> bool:
        """Would allow() pass now? (consumes nothing)"""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) / self.refill) >= 1.0

    def allow(self, key: tuple[str, str], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) / self.refill)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # forget idle buckets
            cutoff = now - self.burst * self.refill
            self._buckets = {k: v for k, v in self._buckets.items() if v[1] > cutoff}
        return True

    def forget_session(self, session_id: str) -> None:
        for key in [k for k in self._buckets if k[0] == session_id]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def public_message(doc: dict) -> dict:
    keys = ("id", "session_id", "user_id", "name", "role", "text", "timestamp")
    return {k: doc.get(k) for k in keys}


class ChatService:
    def __init__(self, store: Store, publish: Callable[[dict], None]) -> None:
        self.store = store
        self.publish = publish
        self.limiter = RateLimiter()

    async def post(self, session: dict, *, user_id: str, name: str, role: str, text) -> dict:
        if role == "monitor":
            raise ClassroomError(403, "monitors are read-only")
        if session.get("status") != "active":
            raise ClassroomError(409, "the session has ended")
        if not isinstance(text, str) or not text.strip():
            raise ClassroomError(400, "text is required")
        text = text.strip()
        if len(text) > MAX_LENGTH:
            raise ClassroomError(413, f"message longer than {MAX_LENGTH} characters")
        if role == "student":
            if user_id in (session.get("muted") or []):
                raise ClassroomError(403, "you are muted", "muted")
            if not self.limiter.allow((session["id"], user_id)):
                raise ClassroomError(429, "too many messages; wait a moment")
        doc = {
            "id": new_id("msg"),
            "session_id": session["id"],
            "user_id": user_id,
            "name": name,
            "role": role,
            "text": text,
            "timestamp": time.time(),
            "deleted": False,
        }
        await self.store.insert("chat_messages", doc)
        self.publish(
            {
                "session_id": session["id"],
                "type": "chat",
                "to": "all",
                "message": public_message(doc),
            }
        )
        return doc

    def forget_session(self, session_id: str) -> None:
        """The session ended: drop its students' rate-limit buckets."""
        self.limiter.forget_session(session_id)

    def cache_sizes(self) -> dict[str, int]:
        return {"chat_buckets": len(self.limiter)}

    async def history(self, session_id: str, limit: int = HISTORY) -> list[dict]:
        """The last `limit` messages that are not deleted, oldest first."""
        limit = max(1, min(int(limit), 500))
        docs = await self.store.find(
            "chat_messages",
            {"session_id": session_id},
            order_by="timestamp",
            descending=True,
            limit=limit * 2,
        )
        kept = [public_message(d) for d in docs if not d.get("deleted")][:limit]
        return kept[::-1]

    async def delete(self, session: dict, message_id: str, by: str) -> None:
        doc = await self.store.get("chat_messages", str(message_id))
        if doc is None or doc.get("session_id") != session["id"]:
            raise ClassroomError(404, "no such message")
        await self.store.update(
            "chat_messages",
            doc["id"],
            {"deleted": True, "deleted_by": by, "deleted_at": time.time()},
        )
        self.publish(
            {
                "session_id": session["id"],
                "type": "chat_deleted",
                "to": "all",
                "message_id": doc["id"],
            }
        )
