"""The realtime channel: one WebSocket per client, rooms per session, bus fan-out.

Every message is JSON with a "type". Outgoing messages of one broadcast are serialised
once; each client has a bounded send queue drained by its own writer task, so a slow
client never delays the others (it is disconnected when its queue overflows).

Limits: every incoming message, whatever its type, takes a token from the connection's
bucket (WS_BURST, then WS_RATE a second; chat has its own stricter limit on top); a client
that keeps flooding is disconnected. A user has at most MAX_SOCKETS_PER_USER sockets on a
node. Presence changes are coalesced: stored and pushed to the staff at most once per
PRESENCE_COALESCE seconds per student, with the latest state and the time it changed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import Protocol

from aiohttp import WSMsgType, web

from ..auth import TokenError, token_from_request
from ..errors import ApiError
from ..identifiers import USER_ID_RULE, valid_user_id
from ..node import Node
from ..store import Store
from .chat import ChatService
from .engagement import EngagementService
from .errors import ClassroomError
from .quiz import QuizService, staff_view, student_view
from .sessions import SessionService, public_session, role_in_session

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
#: Per-connection token bucket for every message type.
WS_BURST = 40
WS_RATE = 20.0
#: Messages refused in a row before the connection is closed (1008).
WS_FLOOD_CLOSE = 200
#: WebSocket connections one user may hold on one node.
MAX_SOCKETS_PER_USER = 5
#: A student's presence is stored and pushed at most this often.
PRESENCE_COALESCE = 1.0


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
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=SEND_QUEUE)
        self.closed = False
        self._tokens = float(WS_BURST)
        self._refill_at = time.monotonic()
        self.refused = 0  # messages refused in a row by the rate limit
        #: Presence as last stored/pushed, and when the current state began.
        self.recorded: tuple[bool, bool] | None = None
        self.changed_at = time.time()
        self.presence_task: asyncio.Task | None = None

    def allow(self) -> bool:
        """Take a token for one incoming message (any type)."""
        now = time.monotonic()
        self._tokens = min(float(WS_BURST), self._tokens + (now - self._refill_at) * WS_RATE)
        self._refill_at = now
        if self._tokens < 1.0:
            self.refused += 1
            return False
        self._tokens -= 1.0
        self.refused = 0
        return True

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
                self.queue.task_done()
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


class HubClassroom(Protocol):
    """What the hub uses of its classroom (classroom.service.Classroom, which owns the
    hub): the node, the store and services, event publishing, WebSocket actions."""

    node: Node
    store: Store
    sessions: SessionService
    chat: ChatService
    chat_max_length: int
    quizzes: QuizService
    engagement: EngagementService

    def publish(self, event: dict) -> None: ...

    def cache_sizes(self) -> dict[str, int]: ...

    async def ws_action(self, client: Client, data: dict) -> dict | None: ...


class RealtimeHub:
    def __init__(self, classroom: HubClassroom) -> None:
        self.c = classroom
        self.rooms: dict[str, Room] = {}
        self.node_id = classroom.node.config.node_id
        #: Open sockets per user id on this node.
        self.sockets: collections.Counter[str] = collections.Counter()
        #: Departures of closed sockets still being stored (kept so they finish).
        self._departures: set[asyncio.Future] = set()
        self.rate_limited = 0
        self.refused_sockets = 0
        self.proxied_sockets = 0

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
            "rate_limited": self.rate_limited,
            "refused_sockets": self.refused_sockets,
            "proxied_to_main": self.proxied_sockets,
            "caches": self.c.cache_sizes(),
        }

    def forget_session(self, session_id: str) -> None:
        """The session ended: its room's roster goes (clients still connected keep it)."""
        room = self.rooms.get(session_id)
        if room is not None and not room.clients:
            self.rooms.pop(session_id, None)

    # -- WebSocket side -----------------------------------------------------------------
    @property
    def proxied(self) -> bool:
        """A sub node without a shared store (MongoDB) knows no class session: its class
        WebSockets are served by the main node, through this node."""
        config = self.c.node.config
        return config.role == "sub" and not config.mongo_url and bool(config.main_url)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.proxied:
            return await self.proxy_to_main(request)
        c = self.c
        try:
            claims = c.node.tokens.verify(token_from_request(request))
        except TokenError as exc:
            raise ApiError(401, str(exc)) from exc
        if not valid_user_id(claims.user_id):
            raise ApiError(400, USER_ID_RULE)
        try:
            session = await c.sessions.get(request.match_info["session_id"])
            role = role_in_session(claims, session)
            name = claims.user_id
            if role == "student":
                name = await c.sessions.student_name(session["id"], claims.user_id)
        except ClassroomError as exc:  # the handshake's refusal carries no "code"
            raise ApiError(exc.status, exc.message) from exc
        await c.node.access.check_teacher_token(claims)  # revoked by a password change
        if self.sockets[claims.user_id] >= MAX_SOCKETS_PER_USER:
            self.refused_sockets += 1
            raise ApiError(429, f"at most {MAX_SOCKETS_PER_USER} connections per user")
        self.sockets[claims.user_id] += 1
        try:
            return await self._serve(request, c, session, role, claims.user_id, name)
        finally:
            self.sockets[claims.user_id] -= 1
            if self.sockets[claims.user_id] <= 0:
                del self.sockets[claims.user_id]

    async def _serve(
        self,
        request: web.Request,
        c: HubClassroom,
        session: dict,
        role: str,
        user_id: str,
        name: str,
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME)
        await ws.prepare(request)
        client = Client(ws, session["id"], role, user_id, name)
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
            if client.presence_task is not None:
                client.presence_task.cancel()
            if not room.clients and self.rooms.get(session["id"]) is room:
                self.rooms.pop(session["id"], None)
            # aiohttp cancels this handler when the peer closes cleanly: the departure runs
            # in its own task so that a cancellation cannot skip the "offline" record.
            leaving = asyncio.ensure_future(self._depart(c, room, client))
            self._departures.add(leaving)
            leaving.add_done_callback(self._departures.discard)
            await asyncio.shield(leaving)
        return ws

    async def finish_departures(self, timeout: float = 5.0) -> None:
        """Shutting down: let the departures of closed sockets store their records."""
        if self._departures:
            await asyncio.wait(set(self._departures), timeout=timeout)

    async def _depart(self, c: HubClassroom, room: Room, client: Client) -> None:
        """A socket closed: store its last presence, then mark the student offline if
        this was the student's last socket in the room."""
        with contextlib.suppress(Exception):
            await self.flush_presence(client)  # the last state, before "offline"
        if client.role != "student" or any(x.user_id == client.user_id for x in room.clients):
            return
        self.c.publish(
            {
                "session_id": client.session_id,
                "type": "presence",
                "to": "staff",
                "presence": client.presence(self.node_id, online=False),
            }
        )
        try:
            await c.engagement.record(client.session_id, client.user_id, "offline")
        except Exception:
            log.exception("could not store that %s went offline", client.user_id)

    # -- presence (coalesced) -------------------------------------------------------------
    def presence_changed(self, client: Client, playing: bool, visible: bool) -> None:
        """A student's playing/visible state changed: store and push it soon, once."""
        if (playing, visible) == (client.playing, client.visible):
            return  # a heartbeat: nothing changed
        client.playing, client.visible = playing, visible
        client.changed_at = time.time()
        if client.presence_task is None or client.presence_task.done():
            client.presence_task = asyncio.ensure_future(self._presence_later(client))

    async def _presence_later(self, client: Client) -> None:
        await asyncio.sleep(PRESENCE_COALESCE)
        await self.flush_presence(client)

    async def flush_presence(self, client: Client) -> None:
        """Store and push the current presence if it differs from the last one stored."""
        state = (client.playing, client.visible)
        if state == client.recorded:
            return
        client.recorded = state
        await self.c.engagement.record(
            client.session_id,
            client.user_id,
            "presence",
            playing=state[0],
            visible=state[1],
            timestamp=client.changed_at,
        )
        self.c.publish(
            {
                "session_id": client.session_id,
                "type": "presence",
                "to": "staff",
                "presence": client.presence(self.node_id),
            }
        )

    async def proxy_to_main(self, request: web.Request) -> web.StreamResponse:
        """Relay this class WebSocket to the same path on the main node, both ways. The main
        checks the token and applies every limit; its refusal is answered as is."""
        import aiohttp

        base = self.c.node.config.main_url.rstrip("/")
        url = "ws" + base[len("http") :] + request.path_qs if base.startswith("http") else base
        headers = {}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        async with aiohttp.ClientSession() as http:
            try:
                upstream = await http.ws_connect(
                    url, headers=headers, heartbeat=30, max_msg_size=MAX_FRAME
                )
            except aiohttp.WSServerHandshakeError as exc:
                raise ApiError(exc.status, f"main node: {exc.message}") from None
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise ApiError(502, f"main node not reachable ({exc})") from None
            ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME)
            await ws.prepare(request)
            self.proxied_sockets += 1

            async def pump(src, dst) -> None:
                async for msg in src:
                    if msg.type == WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    elif msg.type == WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    else:
                        break

            tasks = [
                asyncio.create_task(pump(ws, upstream), name="ws-proxy-up"),
                asyncio.create_task(pump(upstream, ws), name="ws-proxy-down"),
            ]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        await task
                self.proxied_sockets -= 1
                with contextlib.suppress(Exception):
                    await upstream.close()
                with contextlib.suppress(Exception):
                    await ws.close()
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
            if not client.allow():
                self.rate_limited += 1
                if client.refused >= WS_FLOOD_CLOSE:
                    log.warning("client %s floods its WebSocket: disconnecting", client.user_id)
                    # What was queued (the rate_limited error among it) goes out first.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(client.queue.join(), 2)
                    await ws.close(code=1008, message=b"too many messages")
                    break
                if client.refused == 1:  # one error per burst, not one per message
                    client.send(
                        {
                            "type": "error",
                            "code": "rate_limited",
                            "status": 429,
                            "message": "too many messages; slow down",
                        }
                    )
                continue
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
