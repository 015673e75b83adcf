"""The realtime channel: one WebSocket per client, rooms per session, bus fan-out.

Every message is JSON with a "type". Outgoing messages of one broadcast are serialised
once; each client has a bounded send queue drained by its own writer task, so a slow
client never delays the others (it is disconnected when its queue overflows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from ..access import AccessDenied
from ..auth import TokenError, token_from_request
from ..errors import json_error
from .errors import ClassroomError
from .quiz import staff_view, student_view
from .sessions import public_session, role_in_session

if TYPE_CHECKING:
    from .service import Classroom

log = logging.getLogger(__name__)

#: Largest message a client may send; larger ones get an `error` (connection kept).
MAX_MESSAGE = 8 * 1024
#: Hard limit of the WebSocket reader: past it aiohttp closes the connection (1009).
MAX_FRAME = 1024 * 1024
SEND_QUEUE = 1000
#: Each node republishes the presence of its students this often.
PRESENCE_EVERY = 15.0
#: A roster entry not refreshed for this long is shown offline (its node died).
PRESENCE_STALE = 3 * PRESENCE_EVERY + 5
STAFF = ("teacher", "monitor")


def dumps(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class Client:
    def __init__(
        self, ws: web.WebSocketResponse, session_id: str, role: str, user_id: str, name: str
    ) -> None:
        self.ws = ws
        self.session_id = session_id
        self.role = role
        self.user_id = user_id
        self.name = name
        self.playing = False
        self.visible = False
        self.last_seen = time.time()
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=SEND_QUEUE)
        self.closed = False

    def send(self, message: dict | str) -> None:
        if self.closed:
            return
        text = message if isinstance(message, str) else dumps(message)
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("client %s too slow: disconnecting", self.user_id)
            self.closed = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.get_nowait()
                self.queue.put_nowait(None)

    async def writer(self) -> None:
        try:
            while True:
                text = await self.queue.get()
                if text is None:
                    break
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.closed = True
            with contextlib.suppress(Exception):
                await self.ws.close()

    def presence(self, node_id: str, online: bool = True) -> dict:
        return {
            "student_id": self.user_id,
            "name": self.name,
            "online": online,
            "playing": self.playing,
            "visible": self.visible,
            "node": node_id,
            "last_seen": time.time(),
        }


class Room:
    """This node's clients of one session and the roster as this node knows it."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.clients: set[Client] = set()
        self.roster: dict[str, dict] = {}

    def roster_view(self) -> list[dict]:
        now = time.time()
        out = []
        for entry in self.roster.values():
            e = dict(entry)
            if e.get("online") and now - e.get("last_seen", 0) > PRESENCE_STALE:
                e["online"] = False
            out.append(e)
        return sorted(out, key=lambda e: e.get("name", ""))


class RealtimeHub:
    def __init__(self, classroom: Classroom) -> None:
        self.c = classroom
        self.rooms: dict[str, Room] = {}
        self.node_id = classroom.node.config.node_id

    # -- bus side ---------------------------------------------------------------------
    def deliver(self, event: dict) -> None:
        room = self.rooms.get(event.get("session_id", ""))
        if room is None:
            return
        kind = event.get("type")
        if kind == "presence":
            room.roster[event["presence"]["student_id"]] = event["presence"]
        elif kind == "presence_batch":
            for p in event["students"]:
                room.roster[p["student_id"]] = p
        elif kind == "presence_sync":
            self.publish_presence(room)
            return
        to = event.get("to", "all")
        payload = {k: v for k, v in event.items() if k != "to"}
        text = dumps(payload)
        for client in list(room.clients):
            if (
                to == "all"
                or (to == "staff" and client.role in STAFF)
                or (to == "students" and client.role == "student")
                or to == f"user:{client.user_id}"
            ):
                client.send(text)

    def publish_presence(self, room: Room) -> None:
        students = [c.presence(self.node_id) for c in room.clients if c.role == "student"]
        if students:
            self.c.publish(
                {
                    "session_id": room.session_id,
                    "type": "presence_batch",
                    "to": "staff",
                    "students": students,
                }
            )

    async def on_bus_connect(self) -> None:
        """After (re)subscribing: ask the other nodes for the presence we may have missed."""
        for room in list(self.rooms.values()):
            self.publish_presence(room)
            if any(c.role in STAFF for c in room.clients):
                self.c.publish({"session_id": room.session_id, "type": "presence_sync"})

    async def presence_loop(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_EVERY)
            for room in list(self.rooms.values()):
                self.publish_presence(room)

    def status(self) -> dict:
        return {
            "rooms": len(self.rooms),
            "clients": sum(len(r.clients) for r in self.rooms.values()),
        }

    # -- WebSocket side -----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        c = self.c
        try:
            claims = c.node.tokens.verify(token_from_request(request))
        except TokenError as exc:
            raise json_error(401, str(exc)) from exc
        try:
            session = await c.sessions.get(request.match_info["session_id"])
            role = role_in_session(claims, session)
            name = claims.user_id
            if role == "student":
                name = await c.sessions.student_name(session["id"], claims.user_id)
        except ClassroomError as exc:
            raise json_error(exc.status, exc.message) from exc
        try:
            await c.node.access.check_teacher_token(claims)  # revoked by a password change
        except AccessDenied as exc:
            raise json_error(exc.status, exc.message) from exc
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        client = Client(ws, session["id"], role, claims.user_id, name)
        writer = asyncio.create_task(client.writer(), name="ws-writer")
        room = self.rooms.get(session["id"])
        new_room = room is None
        if new_room:
            room = self.rooms[session["id"]] = Room(session["id"])
        room.clients.add(client)
        try:
            client.send(await self.welcome(client, session, room))
            if role == "student":
                await c.engagement.record(session["id"], client.user_id, "online")
                self.c.publish(
                    {
                        "session_id": session["id"],
                        "type": "presence",
                        "to": "staff",
                        "presence": client.presence(self.node_id),
                    }
                )
            elif new_room or role in STAFF:
                c.publish({"session_id": session["id"], "type": "presence_sync"})
            await self._read(client, ws)
        finally:
            room.clients.discard(client)
            client.closed = True
            writer.cancel()
            if not room.clients and self.rooms.get(session["id"]) is room:
                self.rooms.pop(session["id"], None)
            if role == "student" and not any(x.user_id == client.user_id for x in room.clients):
                self.c.publish(
                    {
                        "session_id": session["id"],
                        "type": "presence",
                        "to": "staff",
                        "presence": client.presence(self.node_id, online=False),
                    }
                )
                with contextlib.suppress(Exception):
                    await c.engagement.record(session["id"], client.user_id, "offline")
        return ws

    async def welcome(self, client: Client, session: dict, room: Room) -> dict:
        c = self.c
        quiz = await c.quizzes.open_quiz(session["id"])
        message = {
            "type": "welcome",
            "role": client.role,
            "user_id": client.user_id,
            "name": client.name,
            "node": self.node_id,
            "session": public_session(session),
            "chat": await c.chat.history(session["id"]),
            "quiz": None,
            "limits": {"message_bytes": MAX_MESSAGE, "chat_length": c.chat_max_length},
        }
        if client.role != "teacher":  # the join code is the teacher's to hand out
            message["session"].pop("join_code", None)
        if client.role == "student":
            message["muted"] = client.user_id in (session.get("muted") or [])
            if quiz:
                message["quiz"] = student_view(quiz)
                message["answered"] = bool(
                    await c.store.find_one(
                        "quiz_responses", {"quiz_id": quiz["id"], "student_id": client.user_id}
                    )
                )
        else:
            quizzes = await c.quizzes.for_session(session["id"])
            message["quizzes"] = [staff_view(q) for q in quizzes]
            message["roster"] = room.roster_view()
            message["muted"] = session.get("muted") or []
            if quiz:
                message["quiz"] = staff_view(quiz)
                message["stats"] = await c.quizzes.statistics(quiz)
        return message

    async def _read(self, client: Client, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    client.send(
                        {
                            "type": "error",
                            "code": "bad_request",
                            "message": "binary messages are not supported",
                        }
                    )
                continue
            if client.closed:
                break
            client.last_seen = time.time()
            if len(msg.data) > MAX_MESSAGE:
                client.send(
                    {
                        "type": "error",
                        "code": "too_large",
                        "message": f"message larger than {MAX_MESSAGE} bytes",
                    }
                )
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("type"), str):
                client.send(
                    {
                        "type": "error",
                        "code": "bad_request",
                        "message": "expected a JSON object with a type",
                    }
                )
                continue
            try:
                reply = await self.c.ws_action(client, data)
            except ClassroomError as exc:
                reply = {
                    "type": "error",
                    "code": exc.code,
                    "status": exc.status,
                    "message": exc.message,
                    "request": data["type"],
                }
            except Exception:
                log.exception("websocket %s failed", data["type"])
                reply = {
                    "type": "error",
                    "code": "internal",
                    "status": 500,
                    "message": "internal error",
                    "request": data["type"],
                }
            if reply is not None:
                if "ref" in data:
                    reply["ref"] = data["ref"]
                client.send(reply)
