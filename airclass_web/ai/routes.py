"""HTTP API of the AI analysis. Handlers only translate HTTP <-> AIService."""

from __future__ import annotations

from aiohttp import web

from ..classroom.errors import ClassroomError
from ..classroom.service import classroom_of
from ..http import EVERY_ROLE, claims_of, request_params, signed_in_teacher
from .service import ai_of


async def set_key(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    params = await request_params(request)
    status = await ai_of(request).set_key(claims.user_id, request.match_info["provider"], params)
    return web.json_response(status, status=201)


async def key_status(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    return web.json_response(
        await ai_of(request).key_status(claims.user_id, request.match_info["provider"])
    )


async def delete_key(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    deleted = await ai_of(request).delete_key(claims.user_id, request.match_info["provider"])
    return web.json_response({"deleted": deleted})


async def analyze_slide(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    if request.content_type != "image/jpeg":
        raise ClassroomError(415, "Content-Type must be image/jpeg")
    image = await request.read()
    return web.json_response(await ai_of(request).analyze_slide(claims.user_id, image))


async def analyze_chat(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    params = await request_params(request)
    return web.json_response(
        await ai_of(request).analyze_chat(claims.user_id, params.get("messages"))
    )


async def session_report(request: web.Request) -> web.Response:
    session, _ = await classroom_of(request).session_for(
        await claims_of(request), request.match_info["session_id"], ("teacher", "monitor")
    )
    fresh = request.query.get("fresh") == "1"
    return web.json_response(await ai_of(request).session_report(session, fresh=fresh))


async def session_privacy(request: web.Request) -> web.Response:
    """Whether this class's data goes to an external provider (shown on the student page)."""
    session, _ = await classroom_of(request).session_for(
        await claims_of(request), request.match_info["session_id"], EVERY_ROLE
    )
    return web.json_response(await ai_of(request).external(session["teacher"]))


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/ai/keys/{provider}", set_key)
    r.add_get("/api/ai/keys/{provider}/status", key_status)
    r.add_delete("/api/ai/keys/{provider}", delete_key)
    r.add_post("/api/ai/analyze/slide", analyze_slide)
    r.add_post("/api/ai/analyze/chat", analyze_chat)
    r.add_get("/api/ai/session/{session_id}/report", session_report)
    r.add_get("/api/ai/session/{session_id}/privacy", session_privacy)
