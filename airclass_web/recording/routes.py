"""Recording API (teacher) and VOD pages/files (teacher or signed link). Routes only: the
work is done by recorder.RecordingManager; signed links and URLs are in .service."""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Callable

import aiohttp_jinja2
from aiohttp import web

from recorder import metadata
from recorder.manager import Handoff, RecordingError, RecordingManager

from ..auth import STREAM_NAME, Claims
from ..classroom.sessions import class_title
from ..errors import ApiError
from ..http import STREAM_RULE, request_params, signed_in_teacher
from ..node import NODE, Node, node_of
from ..store import StoreError
from .service import RECORDER, metrics, settings_of, signature, signed_query, with_urls

ERROR_STATUS = {"not_found": 404, "conflict": 409, "not_live": 409, "disk_low": 507}
#: Longest validity of a shared VOD link.
MAX_SHARE_HOURS = 24 * 30


def manager_of(request: web.Request) -> RecordingManager:
    return request.app[RECORDER]


async def teacher(request: web.Request, stream: str | None = None) -> Claims:
    """A signed-in teacher's claims (401 without a valid or with a revoked token, 403
    otherwise); with `stream`, also 403 unless the teacher owns that stream."""
    claims = await signed_in_teacher(request)
    if stream is not None:
        if not claims.allows_stream(stream):
            raise ApiError(403, f"token is not valid for stream {stream}")
        await require_owner(request, stream, claims)
    return claims


async def require_owner(request: web.Request, stream: str, claims: Claims) -> None:
    """403 unless these claims' teacher owns the stream (recordings belong to the owner
    of their stream)."""
    await node_of(request).access.require_owner(stream, claims.user_id)


async def require_own_session(
    request: web.Request, session_id: str, stream: str, claims: Claims
) -> None:
    """A recording is filed under a class session only by that session's teacher and only
    for its stream: 404 unknown session, 403 another teacher's, 400 another stream's."""
    try:
        session = await node_of(request).store.get("sessions", session_id)
    except StoreError as exc:
        raise ApiError(503, f"store: {exc}") from exc
    if session is None:
        raise ApiError(404, f"unknown class session {session_id}")
    if session.get("teacher") != claims.user_id:
        raise ApiError(403, "this class session belongs to another teacher")
    if session.get("stream") != stream:
        raise ApiError(400, f"class session {session_id} is on stream {session.get('stream')}")


async def owned(request: web.Request, claims: Claims, docs: list[dict]) -> list[dict]:
    """The documents (with a "stream") whose stream this teacher owns."""
    access = node_of(request).access
    mine = []
    for doc in docs:
        stream = doc.get("stream", "")
        if claims.allows_stream(stream) and await access.owner(stream) in (None, claims.user_id):
            mine.append(doc)
    return mine


def failed(exc: RecordingError) -> ApiError:
    return ApiError(ERROR_STATUS.get(exc.code, 400), exc.message, code=exc.code, **exc.extra)


def check_signature(request: web.Request, recording_id: str) -> None:
    """401 unless the request carries a valid, unexpired signature for this recording."""
    try:
        expires = int(request.query.get("exp", ""))
    except ValueError:
        raise ApiError(401, "missing or bad link signature") from None
    given = request.query.get("sig", "")
    expected = signature(node_of(request), recording_id, expires)
    if not hmac.compare_digest(given, expected):
        raise ApiError(401, "missing or bad link signature")
    if expires < time.time():
        raise ApiError(401, "link expired")


# -- API ----------------------------------------------------------------------------------
async def start(request: web.Request) -> web.Response:
    params = await request_params(request)
    stream = str(params.get("stream", ""))
    if not STREAM_NAME.match(stream):
        raise ApiError(400, STREAM_RULE)
    claims = await teacher(request, stream)
    session_id = str(params.get("session_id") or claims.session_id or "")[:128]
    if session_id:
        await require_own_session(request, session_id, stream, claims)
    try:
        doc = await manager_of(request).start_recording(stream, session_id, reason="manual")
    except RecordingError as exc:
        raise failed(exc) from exc
    node = node_of(request)
    return web.json_response(with_urls(node, doc, node.config.token_ttl), status=201)


async def stop(request: web.Request) -> web.Response:
    params = await request_params(request)
    stream = str(params.get("stream") or "") or None
    recording_id = str(params.get("recording_id") or "") or None
    if stream is None and recording_id is None:
        raise ApiError(400, "give stream or recording_id")
    manager = manager_of(request)
    if stream is None:
        doc = await manager.get(recording_id)
        if doc is None:
            raise ApiError(404, f"unknown recording {recording_id}")
        stream = doc["stream"]
    await teacher(request, stream)
    try:
        doc = await manager.stop_recording(stream=stream, recording_id=recording_id)
    except RecordingError as exc:
        raise failed(exc) from exc
    node = node_of(request)
    return web.json_response(with_urls(node, doc, node.config.token_ttl))


async def status(request: web.Request) -> web.Response:
    claims = await teacher(request)
    body = manager_of(request).status()
    body["recordings"] = await owned(request, claims, body["recordings"])
    return web.json_response(body)


async def list_recordings(request: web.Request) -> web.Response:
    claims = await teacher(request)
    stream = request.query.get("stream") or None
    docs = await owned(request, claims, await manager_of(request).list(stream))
    node = node_of(request)
    ttl = node.config.token_ttl
    docs = [with_urls(node, await titled(node, d), ttl) for d in docs]
    return web.json_response({"recordings": docs})


async def titled(node: Node, doc: dict) -> dict:
    """The recording with its class's title (None when no class session is known)."""
    title = None
    with contextlib.suppress(StoreError):
        title = await class_title(
            node.store, doc.get("session_id") or "", doc["stream"], doc["started_at"] or 0
        )
    return {**doc, "title": title}


async def storage(request: web.Request) -> web.Response:
    await teacher(request)
    return web.json_response(await manager_of(request).storage())


async def _teacher_doc(request: web.Request) -> dict:
    claims = await teacher(request)
    doc = await manager_of(request).get(request.match_info["id"])
    if doc is None:
        raise ApiError(404, "unknown recording")
    if not claims.allows_stream(doc.get("stream", "")):
        raise ApiError(403, f"token is not valid for stream {doc.get('stream')}")
    await require_owner(request, doc.get("stream", ""), claims)
    return doc


async def get_recording(request: web.Request) -> web.Response:
    doc = await _teacher_doc(request)
    node = node_of(request)
    return web.json_response(with_urls(node, await titled(node, doc), node.config.token_ttl))


async def share(request: web.Request) -> web.Response:
    """A signed link to the VOD page for students: ?hours=N (default 24)."""
    doc = await _teacher_doc(request)
    try:
        hours = float(request.query.get("hours", 24))
    except ValueError:
        raise ApiError(400, "hours must be a number") from None
    hours = min(max(hours, 0.1), MAX_SHARE_HOURS)
    node = node_of(request)
    query = signed_query(node, doc["id"], hours * 3600)
    return web.json_response(
        {"url": f"/vod/{doc['id']}?{query}", "expires_at": int(time.time() + hours * 3600)}
    )


async def delete(request: web.Request) -> web.Response:
    doc = await _teacher_doc(request)
    try:
        await manager_of(request).delete(doc["id"])
    except RecordingError as exc:
        raise failed(exc) from exc
    return web.json_response({"deleted": doc["id"]})


# -- VOD pages and files -------------------------------------------------------------------
@aiohttp_jinja2.template("vod_list.html")
async def vod_list_page(request: web.Request) -> dict:
    return {}


@aiohttp_jinja2.template("vod.html")
async def vod_page(request: web.Request) -> dict:
    """The player page: only for a signed link (teachers' list links are signed too)."""
    rid = request.match_info["id"]
    if not metadata.RECORDING_ID.match(rid):
        raise ApiError(404, "unknown recording")
    check_signature(request, rid)
    return {"recording_id": rid}


async def vod_info(request: web.Request) -> web.Response:
    """Metadata for a signed link (the student VOD page)."""
    rid = request.match_info["id"]
    check_signature(request, rid)
    doc = await manager_of(request).get(rid)
    if doc is None:
        raise ApiError(404, "unknown recording")
    expires = int(request.query["exp"])
    node = node_of(request)
    return web.json_response(
        with_urls(node, await titled(node, doc), max(60, expires - time.time()))
    )


def _file(request: web.Request, name: str) -> web.FileResponse:
    rid = request.match_info["id"]
    check_signature(request, rid)
    directory = manager_of(request).directory(rid)
    path = directory / name if directory is not None else None
    if path is None or not path.is_file():
        raise ApiError(404, "no such file")
    return web.FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})


async def vod_mp4(request: web.Request) -> web.FileResponse:
    return _file(request, metadata.FINAL_FILE)


async def vod_segment(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if not metadata.SEGMENT_FILE.match(name):
        raise ApiError(404, "no such segment")
    return _file(request, name)


async def vod_shot(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if not metadata.SHOT_FILE.match(name):
        raise ApiError(404, "no such screenshot")
    return _file(request, f"shots/{name}")


def recording_manager(node: Node, handoff: Callable[[], Handoff | None]) -> RecordingManager:
    """The node's recorder; handoff: the cluster's (node.ClusterHooks.recording_handoff)."""
    return RecordingManager(
        node.hub,
        settings_of(node),
        node_id=node.config.node_id,
        store=node.store,
        handoff=handoff,
    )


def setup(app: web.Application, manager: RecordingManager) -> None:
    node = app[NODE]
    app[RECORDER] = manager
    node.add_service("recorder", manager.start, manager.stop)
    node.hub.add_listener(manager.on_stream_event)
    node.add_metrics(lambda: metrics(manager))
    r = app.router
    r.add_post("/api/recording/start", start)
    r.add_post("/api/recording/stop", stop)
    r.add_get("/api/recording/status", status)
    r.add_get("/api/recording/list", list_recordings)
    r.add_get("/api/recording/storage", storage)
    r.add_get("/api/recording/{id}", get_recording)
    r.add_get("/api/recording/{id}/share", share)
    r.add_delete("/api/recording/{id}", delete)
    r.add_get("/vod", vod_list_page)
    r.add_get("/vod/{id}", vod_page)
    r.add_get("/vod/{id}/info", vod_info)
    r.add_get("/vod/{id}/file.mp4", vod_mp4)
    r.add_get("/vod/{id}/segments/{name}", vod_segment)
    r.add_get("/vod/{id}/shots/{name}", vod_shot)
