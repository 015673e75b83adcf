"""Class sessions: create with a join code, join as a student, end; who may do what."""

from __future__ import annotations

import secrets
import time

from ..auth import STREAM_NAME, Claims
from ..store import DuplicateError, Store
from .errors import ClassroomError

#: Join codes: 8 characters without look-alikes (0/O, 1/I/L): 31^8 ~ 8.5e11 codes, so
#: guessing one at the limited rate of wrong codes (http.JOIN_FAIL_*) is hopeless.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
MAX_TITLE = 200
MAX_NAME = 40
#: Cached session documents are re-read after this many seconds.
CACHE_TTL = 5.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def is_teacher_claims(claims: Claims) -> bool:
    """A signed-in teacher: role teacher with a publish (or admin) token.

    Anyone may get a *read* token with role teacher from /api/token; those are refused.
    """
    return claims.role == "teacher" and claims.action in ("publish", "admin")


def role_in_session(claims: Claims, session: dict) -> str:
    """teacher / student / monitor for this session, else ClassroomError 403."""
    if claims.role == "teacher":
        if is_teacher_claims(claims) and session.get("teacher") == claims.user_id:
            return "teacher"
        raise ClassroomError(403, "this session belongs to another teacher")
    if claims.role in ("student", "monitor"):
        if claims.session_id == session["id"]:
            return claims.role
        raise ClassroomError(403, f"this {claims.role} token is for another session")
    raise ClassroomError(403, f"role {claims.role} may not join a session")


def public_session(session: dict) -> dict:
    keys = ("id", "title", "stream", "teacher", "join_code", "status", "started_at", "ended_at")
    return {k: session.get(k) for k in keys}


async def class_title(store, session_id: str, stream: str, at: float) -> str | None:
    """The title of the class a recording belongs to: its session's, else the newest
    session on its stream that had started by then (auto-recorded streams)."""
    if session_id:
        session = await store.get("sessions", session_id)
        if session is not None:
            return session.get("title")
    for session in await store.find(
        "sessions", {"stream": stream}, order_by="started_at", descending=True, limit=20
    ):
        if (session.get("started_at") or 0) <= at + 60:
            return session.get("title")
    return None


class SessionService:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._cache: dict[str, tuple[float, dict]] = {}
        self._names: dict[tuple[str, str], str] = {}

    async def create(self, teacher: str, title: str, stream: str) -> dict:
        title = str(title or "").strip()
        if not title or len(title) > MAX_TITLE:
            raise ClassroomError(400, f"title: 1-{MAX_TITLE} characters")
        if not isinstance(stream, str) or not STREAM_NAME.match(stream):
            raise ClassroomError(400, "stream must be 1-64 letters, digits, '_' or '-'")
        for _ in range(10):
            doc = {
                "id": new_id("ses"),
                "title": title,
                "stream": stream,
                "teacher": teacher,
                "join_code": "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH)),
                "status": "active",
                "started_at": time.time(),
                "ended_at": None,
                "muted": [],
            }
            try:
                await self.store.insert("sessions", doc)
            except DuplicateError:
                continue  # join code taken: draw another
            self._cache[doc["id"]] = (time.monotonic(), doc)
            return doc
        raise ClassroomError(503, "could not allocate a join code")

    async def get(self, session_id: str, *, fresh: bool = False) -> dict:
        """The session document (cached briefly); ClassroomError 404 if unknown."""
        cached = self._cache.get(session_id)
        if cached and not fresh and time.monotonic() - cached[0] < CACHE_TTL:
            return cached[1]
        doc = await self.store.get("sessions", session_id) if len(session_id) < 100 else None
        if doc is None:
            raise ClassroomError(404, "no such session")
        self._cache[session_id] = (time.monotonic(), doc)
        return doc

    def forget(self, session_id: str) -> None:
        """Drop the cached copy (another node changed the session)."""
        self._cache.pop(session_id, None)

    def forget_names(self, session_id: str) -> None:
        """Drop the session's student names (the session ended)."""
        for key in [k for k in self._names if k[0] == session_id]:
            del self._names[key]

    def names_cached(self) -> int:
        return len(self._names)

    async def by_code(self, code: str) -> dict:
        code = str(code or "").strip().upper().replace(" ", "").replace("-", "")
        if not code:
            raise ClassroomError(400, "join_code is required")
        if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
            raise ClassroomError(404, "no session with this join code")
        doc = await self.store.find_one("sessions", {"join_code": code})
        if doc is None or doc.get("status") != "active":
            raise ClassroomError(404, "no active session with this join code")
        return doc

    async def join(self, code: str, name: str) -> tuple[dict, str, str]:
        """(session, student_id, name) for a student joining by code."""
        name = " ".join(str(name or "").split())
        if not name or len(name) > MAX_NAME:
            raise ClassroomError(400, f"name: 1-{MAX_NAME} characters")
        session = await self.by_code(code)
        student_id = new_id("stu")
        now = time.time()
        await self.store.insert(
            "engagement_events",
            {
                "id": new_id("ev"),
                "session_id": session["id"],
                "student_id": student_id,
                "kind": "join",
                "timestamp": now,
                "name": name,
            },
        )
        self._names[(session["id"], student_id)] = name
        return session, student_id, name

    async def student_name(self, session_id: str, student_id: str) -> str:
        key = (session_id, student_id)
        if key not in self._names:
            doc = await self.store.find_one(
                "engagement_events",
                {"session_id": session_id, "student_id": student_id, "kind": "join"},
            )
            self._names[key] = doc.get("name", student_id) if doc else student_id
        return self._names[key]

    async def end(self, session: dict) -> dict:
        if session.get("status") != "active":
            return session
        doc = await self.store.update(
            "sessions", session["id"], {"status": "ended", "ended_at": time.time()}
        )
        self._cache[session["id"]] = (time.monotonic(), doc)
        return doc

    async def set_muted(self, session: dict, student_id: str, muted: bool) -> dict:
        fresh = await self.get(session["id"], fresh=True)
        current = set(fresh.get("muted") or [])
        current.add(student_id) if muted else current.discard(student_id)
        doc = await self.store.update("sessions", session["id"], {"muted": sorted(current)})
        self._cache[session["id"]] = (time.monotonic(), doc)
        return doc

    async def list_for_teacher(self, teacher: str, limit: int = 100) -> list[dict]:
        docs = await self.store.find(
            "sessions", {"teacher": teacher}, order_by="started_at", descending=True, limit=limit
        )
        return [public_session(d) for d in docs]
