"""HTTP API and pages of the classroom. Handlers only translate HTTP <-> services."""

from __future__ import annotations

import logging
import time

import aiohttp_jinja2
from aiohttp import web

from ..auth import STREAM_NAME
from ..delivery.ice_servers import ice_servers_json
from ..errors import ApiError
from ..http import (
    EVERY_ROLE,
    claims_of,
    guards_of,
    public_base_url,
    request_params,
    rtmp_base,
    signed_in_teacher,
    viewer_whep_url,
)
from ..limits import too_many
from ..node import node_of
from .errors import ClassroomError
from .go_live import publish_details, qr_svg, valid_join_code
from .quiz import staff_view
from .service import classroom_of
from .sessions import public_session

log = logging.getLogger(__name__)


# -- auth -------------------------------------------------------------------------------
async def login(request: web.Request) -> web.Response:
    c = classroom_of(request)
    params = await request_params(request)
    username = str(params.get("username", ""))[:64]
    guards = guards_of(request)
    keys = guards.passwords.attempt(guards.ip(request), username)  # counts before checking
    teacher = await c.teachers.authenticate(username, str(params.get("password", "")))
    if teacher is None:
        raise ClassroomError(401, "wrong username or password")
    guards.passwords.succeeded(keys)
    token, expires_at = c.node.tokens.issue(
        role="teacher", user_id=teacher["username"], action="publish", stream="*"
    )
    log.info("teacher %s signed in", teacher["username"])
    return web.json_response(
        {"token": token, "expires_at": expires_at, "username": teacher["username"]}
    )


async def me(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    c = classroom_of(request)
    teacher = await c.store.get_teacher(claims.user_id)
    return web.json_response({"username": claims.user_id, "account": teacher is not None})


# -- sessions ---------------------------------------------------------------------------
async def create_session(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    c = classroom_of(request)
    params = await request_params(request)
    stream = params.get("stream")
    if isinstance(stream, str) and STREAM_NAME.match(stream):
        await c.node.access.claim(stream, claims.user_id)  # 403: another's stream
    session = await c.sessions.create(claims.user_id, params.get("title"), stream)
    c.node.hub.stream(session["stream"])  # announce: students may wait for it
    return web.json_response(
        {
            "session_id": session["id"],
            "join_code": session["join_code"],
            "session": public_session(session),
        },
        status=201,
    )


async def list_sessions(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    return web.json_response(
        {"sessions": await classroom_of(request).sessions.list_for_teacher(claims.user_id)}
    )


async def get_session(request: web.Request) -> web.Response:
    c = classroom_of(request)
    session, role = await c.session_for(
        await claims_of(request), request.match_info["session_id"], EVERY_ROLE
    )
    body = public_session(session)
    if role == "monitor":
        body.pop("join_code", None)
    return web.json_response(body)


async def join_session(request: web.Request) -> web.Response:
    c = classroom_of(request)
    node = c.node
    guards = guards_of(request)
    ip = guards.ip(request)
    guards.join_rate.check(ip, "join")
    params = await request_params(request)
    # Wrong codes from this address are limited (a good code costs nothing, so a class
    # behind one NAT joins at once); parallel guesses are bounded by join_rate above.
    wait = guards.join_failures.wait(ip)
    if wait:
        raise too_many("too many wrong join codes from this address; wait", wait)
    try:
        session, student_id, name = await c.sessions.join(
            params.get("join_code"), params.get("name")
        )
    except ClassroomError as exc:
        if exc.status == 404:
            guards.join_failures.take(ip)
        raise
    stream = session["stream"]
    whep_url = await viewer_whep_url(node, request, student_id, stream)
    token, expires_at = node.tokens.issue(
        role="student",
        user_id=student_id,
        action="read",
        stream=stream,
        session_id=session["id"],
    )
    return web.json_response(
        {
            "token": token,
            "expires_at": expires_at,
            "session_id": session["id"],
            "student_id": student_id,
            "name": name,
            "title": session["title"],
            "stream": stream,
            "whep_url": whep_url,
            "ice_servers": ice_servers_json(node.config, student_id),
        }
    )


async def end_session(request: web.Request) -> web.Response:
    c = classroom_of(request)
    session, _ = await c.session_for(
        await signed_in_teacher(request), request.match_info["session_id"], ("teacher",)
    )
    return web.json_response(public_session(await c.end_session(session)))


async def monitor_token(request: web.Request) -> web.Response:
    c = classroom_of(request)
    claims = await signed_in_teacher(request)
    session, _ = await c.session_for(claims, request.match_info["session_id"], ("teacher",))
    token, expires_at = c.node.tokens.issue(
        role="monitor",
        user_id=f"monitor-{claims.user_id}",
        action="read",
        stream=session["stream"],
        session_id=session["id"],
    )
    base = public_base_url(c.node, request)
    return web.json_response(
        {
            "token": token,
            "expires_at": expires_at,
            "url": f"{base}/monitor?session={session['id']}#token={token}",
        }
    )


async def chat_history(request: web.Request) -> web.Response:
    c = classroom_of(request)
    session, _ = await c.session_for(
        await claims_of(request), request.match_info["session_id"], EVERY_ROLE
    )
    try:
        limit = int(request.query.get("limit", 50))
    except ValueError as exc:
        raise ClassroomError(400, "limit must be a number") from exc
    return web.json_response({"messages": await c.chat.history(session["id"], limit)})


async def post_chat(request: web.Request) -> web.Response:
    c = classroom_of(request)
    claims = await claims_of(request)
    session, role = await c.session_for(
        claims, request.match_info["session_id"], ("teacher", "student")
    )
    params = await request_params(request)
    name = claims.user_id
    if role == "student":
        name = await c.sessions.student_name(session["id"], claims.user_id)
    doc = await c.post_chat(session, claims.user_id, name, role, params.get("text"))
    return web.json_response({"id": doc["id"], "timestamp": doc["timestamp"]}, status=201)


# -- quizzes ----------------------------------------------------------------------------
async def quiz_create(request: web.Request) -> web.Response:
    c = classroom_of(request)
    claims = await claims_of(request)
    params = await request_params(request)
    session, _ = await c.session_for(claims, params.get("session_id"), ("teacher",))
    quiz = await c.create_quiz(session, params, claims.user_id)
    return web.json_response({"quiz_id": quiz["id"], "quiz": quiz}, status=201)


async def quiz_publish(request: web.Request) -> web.Response:
    c = classroom_of(request)
    params = await request_params(request)
    quiz, _, _ = await c.quiz_for(await claims_of(request), params.get("quiz_id"), ("teacher",))
    quiz = await c.quizzes.publish_quiz(await c.quizzes.get(quiz["id"], fresh=True))
    return web.json_response({"quiz": staff_view(quiz)})


async def quiz_close(request: web.Request) -> web.Response:
    c = classroom_of(request)
    params = await request_params(request)
    quiz, _, _ = await c.quiz_for(await claims_of(request), params.get("quiz_id"), ("teacher",))
    quiz = await c.quizzes.close(await c.quizzes.get(quiz["id"], fresh=True))
    return web.json_response({"quiz": staff_view(quiz), "stats": await c.quizzes.statistics(quiz)})


async def quiz_response(request: web.Request) -> web.Response:
    c = classroom_of(request)
    claims = await claims_of(request)
    params = await request_params(request)
    quiz, session, _ = await c.quiz_for(claims, params.get("quiz_id"), ("student",))
    doc = await c.answer(quiz, session, claims.user_id, params.get("answer"))
    return web.json_response(
        {
            "accepted": True,
            "response_id": doc["id"],
            "quiz_id": quiz["id"],
            "answer": doc["answer"],
        },
        status=201,
    )


async def quiz_statistics(request: web.Request) -> web.Response:
    c = classroom_of(request)
    quiz, _, _ = await c.quiz_for(
        await claims_of(request), request.match_info["quiz_id"], ("teacher", "monitor")
    )
    return web.json_response(await c.quizzes.statistics(quiz))


async def quiz_list(request: web.Request) -> web.Response:
    c = classroom_of(request)
    session, _ = await c.session_for(
        await claims_of(request), request.match_info["session_id"], ("teacher", "monitor")
    )
    quizzes = await c.quizzes.for_session(session["id"])
    return web.json_response({"quizzes": [staff_view(q) for q in quizzes]})


# -- engagement -------------------------------------------------------------------------
async def engagement_session(request: web.Request) -> web.Response:
    c = classroom_of(request)
    session, _ = await c.session_for(
        await claims_of(request), request.match_info["session_id"], ("teacher", "monitor")
    )
    return web.json_response(await c.engagement.session_report(session))


async def engagement_student(request: web.Request) -> web.Response:
    c = classroom_of(request)
    session, _ = await c.session_for(
        await claims_of(request), request.match_info["session_id"], ("teacher", "monitor")
    )
    report = await c.engagement.student_report(session, request.match_info["student_id"])
    if report is None:
        raise ClassroomError(404, "no such student in this session")
    return web.json_response(report)


async def status(request: web.Request) -> web.Response:
    c = classroom_of(request)
    return web.json_response(
        {
            "node_id": c.node.config.node_id,
            "store": c.store.kind,
            "bus": c.bus.status(),
            **c.hub.status(),
            "time": time.time(),
        }
    )


async def websocket(request: web.Request) -> web.StreamResponse:
    return await classroom_of(request).hub.handle(request)


# -- pages ------------------------------------------------------------------------------
@aiohttp_jinja2.template("teacher.html")
async def teacher_page(request: web.Request) -> dict:
    return {"rtmp_port": node_of(request).config.rtmp_port}


# -- going live: stream key, encoder settings, QR codes -----------------------------------
async def go_live(request: web.Request) -> web.Response:
    """GET /api/sessions/ID/go-live (its teacher): what OBS, a phone app or WHIP needs."""
    c = classroom_of(request)
    claims = await signed_in_teacher(request)
    session, _ = await c.session_for(claims, request.match_info["session_id"], ("teacher",))
    key = await c.stream_keys.current(claims.user_id)
    body = publish_details(rtmp_base(c.node, request), session["stream"], key["key"])
    whip_token, expires_at = c.node.tokens.issue(
        role="teacher", user_id=claims.user_id, action="publish", stream=session["stream"]
    )
    body |= {
        "stream": session["stream"],
        "key_created_at": key["created_at"],
        "whip_url": f"{public_base_url(c.node, request)}/live/{session['stream']}/whip",
        "whip_token": whip_token,
        "whip_token_expires_at": expires_at,
    }
    return web.json_response(body)


async def rotate_stream_key(request: web.Request) -> web.Response:
    """POST /api/stream-key/rotate (teacher): a new key; the old one is refused at once."""
    c = classroom_of(request)
    claims = await signed_in_teacher(request)
    key = await c.stream_keys.rotate(claims.user_id)
    log.info("teacher %s rotated the stream key", claims.user_id)
    return web.json_response({"rotated": True, "key_created_at": key["created_at"]})


async def go_live_qr(request: web.Request) -> web.Response:
    """GET /api/sessions/ID/go-live/qr?app=larix|rtmp (its teacher): the QR as SVG."""
    c = classroom_of(request)
    claims = await signed_in_teacher(request)
    session, _ = await c.session_for(claims, request.match_info["session_id"], ("teacher",))
    key = await c.stream_keys.current(claims.user_id)
    details = publish_details(rtmp_base(c.node, request), session["stream"], key["key"])
    what = request.query.get("app", "larix")
    if what not in ("larix", "rtmp"):
        raise ApiError(400, "app must be larix or rtmp")
    text = details["larix_url" if what == "larix" else "rtmp_url"]
    if text is None:
        raise ClassroomError(409, "rotate the stream key to see it", code="key_hidden")
    return web.Response(
        body=qr_svg(text), content_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )


async def join_qr(request: web.Request) -> web.Response:
    """GET /join/CODE/qr.svg: the join link of a code as a QR code (for the projector)."""
    code = request.match_info["code"].upper()
    if not valid_join_code(code):
        raise ApiError(400, "not a join code")
    url = f"{public_base_url(node_of(request), request)}/join?code={code}"
    return web.Response(body=qr_svg(url), content_type="image/svg+xml")


@aiohttp_jinja2.template("present.html")
async def present_page(request: web.Request) -> dict:
    """/present?code=CODE: the join code and its QR, full screen, for the classroom."""
    code = request.query.get("code", "").upper()[:16]
    if not valid_join_code(code):
        raise web.HTTPBadRequest(text="not a join code")
    base = public_base_url(node_of(request), request)
    return {"code": code, "join_url": f"{base}/join?code={code}", "join_host": base}


@aiohttp_jinja2.template("monitor.html")
async def monitor_page(request: web.Request) -> dict:
    return {}


@aiohttp_jinja2.template("join.html")
async def join_page(request: web.Request) -> dict:
    return {"code": request.query.get("code", "")[:16]}


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/auth/login", login)
    r.add_get("/api/auth/me", me)
    r.add_post("/api/sessions", create_session)
    r.add_get("/api/sessions", list_sessions)
    r.add_post("/api/sessions/join", join_session)
    r.add_get("/api/sessions/{session_id}", get_session)
    r.add_get("/api/sessions/{session_id}/go-live", go_live)
    r.add_get("/api/sessions/{session_id}/go-live/qr", go_live_qr)
    r.add_post("/api/stream-key/rotate", rotate_stream_key)
    r.add_get("/join/{code}/qr.svg", join_qr)
    r.add_get("/present", present_page)
    r.add_post("/api/sessions/{session_id}/end", end_session)
    r.add_post("/api/sessions/{session_id}/monitor-token", monitor_token)
    r.add_get("/api/sessions/{session_id}/chat", chat_history)
    r.add_post("/api/sessions/{session_id}/chat", post_chat)
    r.add_get("/api/sessions/{session_id}/quizzes", quiz_list)
    r.add_post("/api/quiz/create", quiz_create)
    r.add_post("/api/quiz/publish", quiz_publish)
    r.add_post("/api/quiz/close", quiz_close)
    r.add_post("/api/quiz/response", quiz_response)
    r.add_get("/api/quiz/statistics/{quiz_id}", quiz_statistics)
    r.add_get("/api/engagement/session/{session_id}", engagement_session)
    r.add_get("/api/engagement/student/{session_id}/{student_id}", engagement_student)
    r.add_get("/api/classroom/status", status)
    r.add_get("/ws/session/{session_id}", websocket)
    r.add_get("/teacher", teacher_page)
    r.add_get("/monitor", monitor_page)
    r.add_get("/join", join_page)
