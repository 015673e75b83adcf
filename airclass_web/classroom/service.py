"""The classroom of a node: store, event bus and services wired together.

Routes and the WebSocket hub call these methods; they hold the business rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth import Claims
from ..node import Node
from ..store import Store
from .chat import MAX_LENGTH, ChatService
from .engagement import EngagementService
from .errors import ClassroomError
from .events import EventBus, make_bus
from .quiz import QuizService
from .realtime import Client, RealtimeHub
from .sessions import SessionService, role_in_session
from .stream_keys import StreamKeys
from .teachers import TeacherService

log = logging.getLogger(__name__)


class Classroom:
    chat_max_length = MAX_LENGTH

    def __init__(
        self, node: Node, store: Store, teachers: TeacherService, stream_keys: StreamKeys
    ) -> None:
        self.node = node
        self.store = store
        self.bus: EventBus = make_bus(
            node.config.node_id,
            self.on_event,
            node.config.redis_url,
            node.config.cluster_secret or node.config.jwt_secret,
        )
        self.teachers = teachers
        self.stream_keys = stream_keys
        self.sessions = SessionService(self.store)
        self.chat = ChatService(self.store, self.publish)
        self.engagement = EngagementService(self.store, self.publish)
        self.quizzes = QuizService(
            self.store, self.publish, node.spawn, on_answer=self.engagement.on_answer
        )
        self.hub = RealtimeHub(self)
        self.bus.on_connect = self.hub.on_bus_connect

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        await self.bus.start()
        self.node.spawn(self.hub.presence_loop(), "classroom-presence")
        log.info("classroom: %s store, %s event bus", self.store.kind, self.bus.kind)

    async def stop(self) -> None:
        await self.hub.finish_departures()  # their "offline" records need the store
        await self.bus.stop()
        await self.store.close()

    def publish(self, event: dict) -> None:
        self.bus.publish(event)

    def on_event(self, event: dict) -> None:
        """Every event, local or from another node: refresh caches, then fan out."""
        kind = event.get("type")
        if kind in ("session_update", "session_ended"):
            self.sessions.forget(event["session_id"])
        elif kind in ("quiz", "quiz_closed"):
            self.quizzes.forget(event["quiz"]["id"])
        self.hub.deliver(event)
        if kind == "session_ended":
            self.forget_session(event["session_id"])

    def forget_session(self, session_id: str) -> None:
        """A session ended (here or on another node): evict its caches and name tables."""
        self.sessions.forget(session_id)
        self.sessions.forget_names(session_id)
        self.quizzes.forget_session(session_id)
        self.chat.forget_session(session_id)
        self.engagement.forget_session(session_id)
        self.hub.forget_session(session_id)

    def cache_sizes(self) -> dict[str, int]:
        """Entries of the per-session caches (they shrink when sessions end)."""
        return {
            "sessions": len(self.sessions._cache),
            "names": self.sessions.names_cached(),
            **self.quizzes.cache_sizes(),
            **self.chat.cache_sizes(),
            **self.engagement.cache_sizes(),
        }

    # -- shared by REST and WebSocket ---------------------------------------------------
    async def session_for(self, claims: Claims, session_id: str, roles: tuple[str, ...]):
        """(session, role) when these claims may act in this session with one of roles."""
        session = await self.sessions.get(str(session_id or ""))
        role = role_in_session(claims, session)
        if role not in roles:
            raise ClassroomError(403, f"a {role} may not do this")
        return session, role

    async def quiz_for(self, claims: Claims, quiz_id, roles: tuple[str, ...]):
        quiz = await self.quizzes.get(quiz_id)
        session, role = await self.session_for(claims, quiz["session_id"], roles)
        return quiz, session, role

    async def create_quiz(self, session: dict, spec: dict, by: str) -> dict:
        quiz = await self.quizzes.create(session, spec, by)
        self.publish(
            {"session_id": session["id"], "type": "quiz_created", "to": "staff", "quiz": quiz}
        )
        return quiz

    async def answer(self, quiz: dict, session: dict, student_id: str, answer) -> dict:
        if session.get("status") != "active":
            raise ClassroomError(409, "the session has ended")
        name = await self.sessions.student_name(session["id"], student_id)
        return await self.quizzes.answer(quiz, student_id=student_id, name=name, answer=answer)

    async def post_chat(self, session: dict, user_id: str, name: str, role: str, text) -> dict:
        session = await self.sessions.get(session["id"])  # fresh mute list (cached briefly)
        doc = await self.chat.post(session, user_id=user_id, name=name, role=role, text=text)
        self.node.spawn(self.engagement.on_chat(doc), "chat-confusion")
        return doc

    async def set_muted(self, session: dict, student_id, muted: bool) -> dict:
        if not isinstance(student_id, str) or not student_id:
            raise ClassroomError(400, "student_id is required")
        doc = await self.sessions.set_muted(session, student_id, bool(muted))
        self.publish(
            {
                "session_id": session["id"],
                "type": "session_update",
                "to": "staff",
                "muted": doc["muted"],
            }
        )
        self.publish(
            {
                "session_id": session["id"],
                "type": "muted",
                "to": f"user:{student_id}",
                "muted": bool(muted),
            }
        )
        return doc

    async def end_session(self, session: dict) -> dict:
        doc = await self.sessions.end(session)
        self.publish(
            {
                "session_id": session["id"],
                "type": "session_ended",
                "to": "all",
                "ended_at": doc.get("ended_at"),
            }
        )
        return doc

    # -- WebSocket actions ----------------------------------------------------------------
    async def ws_action(self, client: Client, data: dict) -> dict | None:
        """Handle one client message (WS_ACTIONS); the reply to send back (or None)."""
        kind = data["type"]
        session = await self.sessions.get(client.session_id)
        action = WS_ACTIONS.get(kind)
        if action is None:
            raise ClassroomError(400, f"unknown message type {kind[:40]!r}", "unknown_type")
        roles, handler = action
        if client.role not in roles:
            raise ClassroomError(403, f"a {client.role} may not send {kind}")
        return await handler(self, client, session, data)

    async def _quiz_of(self, session: dict, data: dict, *, fresh: bool = False) -> dict:
        """The message's quiz, which must belong to this session (else 404)."""
        quiz = await self.quizzes.get(data.get("quiz_id"), fresh=fresh)
        if quiz["session_id"] != session["id"]:
            raise ClassroomError(404, "no such quiz in this session")
        return quiz

    # -- WebSocket message handlers: (self, client, session, message) -> reply or None ----
    async def _ws_ping(self, client: Client, session: dict, data: dict) -> dict:
        return {"type": "pong", "t": data.get("t")}

    async def _ws_chat(self, client: Client, session: dict, data: dict) -> None:
        await self.post_chat(session, client.user_id, client.name, client.role, data.get("text"))

    async def _ws_presence(self, client: Client, session: dict, data: dict) -> None:
        await self.presence(client, data)

    async def _ws_quiz_answer(self, client: Client, session: dict, data: dict) -> dict:
        quiz = await self._quiz_of(session, data)
        doc = await self.answer(quiz, session, client.user_id, data.get("answer"))
        return {
            "type": "quiz_answer",
            "quiz_id": quiz["id"],
            "accepted": True,
            "response_id": doc["id"],
            "answer": doc["answer"],
        }

    async def _ws_quiz_stats(self, client: Client, session: dict, data: dict) -> dict:
        quiz = await self._quiz_of(session, data)
        return {"type": "quiz_stats", "stats": await self.quizzes.statistics(quiz)}

    async def _ws_chat_delete(self, client: Client, session: dict, data: dict) -> None:
        await self.chat.delete(session, data.get("message_id"), client.user_id)

    async def _ws_mute(self, client: Client, session: dict, data: dict) -> None:
        await self.set_muted(session, data.get("student_id"), data.get("muted", True))

    async def _ws_end_session(self, client: Client, session: dict, data: dict) -> None:
        await self.end_session(session)

    async def _ws_quiz_create(self, client: Client, session: dict, data: dict) -> dict:
        spec = data.get("quiz") if isinstance(data.get("quiz"), dict) else data
        return {
            "type": "quiz_created",
            "quiz": await self.create_quiz(session, spec, client.user_id),
        }

    async def _ws_quiz_publish(self, client: Client, session: dict, data: dict) -> None:
        await self.quizzes.publish_quiz(await self._quiz_of(session, data, fresh=True))

    async def _ws_quiz_close(self, client: Client, session: dict, data: dict) -> None:
        await self.quizzes.close(await self._quiz_of(session, data, fresh=True))

    async def presence(self, client: Client, data: dict) -> None:
        """Coalesced: stored and pushed to the staff at most once a second per student."""
        self.hub.presence_changed(client, bool(data.get("playing")), bool(data.get("visible")))


EVERYONE = ("teacher", "student", "monitor")
STAFF_VIEW = ("teacher", "monitor")
#: WebSocket message type -> (roles that may send it, handler).
WS_ACTIONS: dict[str, tuple[tuple[str, ...], Callable[..., Awaitable[dict | None]]]] = {
    "ping": (EVERYONE, Classroom._ws_ping),
    "chat": (EVERYONE, Classroom._ws_chat),
    "presence": (("student",), Classroom._ws_presence),
    "quiz_answer": (("student",), Classroom._ws_quiz_answer),
    "quiz_stats": (STAFF_VIEW, Classroom._ws_quiz_stats),
    "chat_delete": (("teacher",), Classroom._ws_chat_delete),
    "mute": (("teacher",), Classroom._ws_mute),
    "end_session": (("teacher",), Classroom._ws_end_session),
    "quiz_create": (("teacher",), Classroom._ws_quiz_create),
    "quiz_publish": (("teacher",), Classroom._ws_quiz_publish),
    "quiz_close": (("teacher",), Classroom._ws_quiz_close),
}


CLASSROOM = web.AppKey("classroom", Classroom)


def classroom_of(request: web.Request) -> Classroom:
    """The classroom of the node serving this request."""
    return request.app[CLASSROOM]
