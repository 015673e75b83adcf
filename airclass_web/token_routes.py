"""POST /api/token: tokens for students, teachers and monitors; stream claims and the
public flag."""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from .access import AccessDenied
from .auth import STREAM_NAME
from .delivery.ice_servers import ice_servers_json
from .errors import ApiError
from .http import (
    STREAM_RULE,
    access_of,
    guards_of,
    public_base_url,
    request_params,
    rtmp_base,
    signed_in_teacher,
    stream_param,
    viewer_whep_url,
)
from .identifiers import USER_ID_RULE, valid_user_id
from .node import node_of

log = logging.getLogger(__name__)

USER_TYPES = ("student", "teacher", "monitor")
#: Under --dev, a teacher token asked for without credentials nor user_id is for this one.
DEV_TEACHER = "dev-teacher"


async def issue_token(request: web.Request) -> web.Response:
    """Rate-limited per client address; refused requests count more (IpRateLimit)."""
    guards = guards_of(request)
    ip = guards.ip(request)
    guards.token_rate.check(ip, "token")
    try:
        return await _issue_token(request)
    except (web.HTTPException, ApiError) as exc:
        if 400 <= exc.status < 500:
            guards.token_rate.refused(ip)
        raise


async def _issue_token(request: web.Request) -> web.Response:
    node = node_of(request)
    params = await request_params(request)
    user_type = str(params.get("user_type", "student"))
    action = str(params.get("action", "read"))
    stream = str(params.get("stream", ""))
    user_id = str(params.get("user_id") or f"{user_type}-{secrets.token_hex(4)}")
    if user_type not in USER_TYPES:
        raise ApiError(400, f"user_type must be one of {', '.join(USER_TYPES)}")
    if action not in ("read", "publish"):
        raise ApiError(400, "action must be read or publish")
    if not STREAM_NAME.match(stream):
        raise ApiError(400, STREAM_RULE)
    if not valid_user_id(user_id):
        raise ApiError(400, USER_ID_RULE)  # no newline nor escape reaches a log line
    if action == "publish" and user_type != "teacher":
        raise ApiError(403, "only teachers may publish")
    access = node.access
    if user_type == "teacher":
        # A teacher token's identity comes only from verified credentials, never from the
        # caller's user_id. Under --dev a caller without credentials may name itself.
        identity = await node.teacher_auth(node, request, params)
        if identity is None and not node.config.dev:
            raise ApiError(401, "teacher credentials required")
        user_id = identity or str(params.get("user_id") or DEV_TEACHER)
    if action == "publish":
        await access.claim(stream, user_id)  # 403: another teacher's stream
    elif user_type == "teacher":
        if not await access.is_public(stream):
            await access.require_owner(stream, user_id)
    elif not await access.is_public(stream):
        if await access.stream(stream) is None and node.hub.get(stream) is None:
            raise AccessDenied(404, f"there is no stream named {stream}")  # a typo?
        raise AccessDenied(
            403,
            f"stream {stream} is private: join its class session, or its teacher marks it public",
        )
    if action == "publish":
        node.hub.stream(stream)  # announce: viewers may now wait for it
    if action == "read":
        whep_url = await viewer_whep_url(node, request, user_id, stream)
    else:
        whep_url = f"{public_base_url(node, request)}/live/{stream}/whep"
    token, expires_at = node.tokens.issue(
        role=user_type, user_id=user_id, action=action, stream=stream
    )
    body = {"token": token, "expires_at": expires_at, "user_id": user_id, "stream": stream}
    body["whep_url"] = whep_url
    if action == "read":
        body["ice_servers"] = ice_servers_json(node.config, user_id)
    if action == "publish":
        body["rtmp_url"] = f"{rtmp_base(node, request)}/{stream}?token={token}"
        body["whip_url"] = f"{public_base_url(node, request)}/live/{stream}/whip"
    log.info("token: %s %s %s on %s", user_type, user_id, action, stream)
    return web.json_response(body)


def stream_view(doc: dict) -> dict:
    return {"stream": doc["id"], "owner": doc["owner"], "public": bool(doc.get("public"))}


async def claim_stream(request: web.Request) -> web.Response:
    """POST /api/streams/NAME/claim (teacher): make an unclaimed stream yours."""
    claims = await signed_in_teacher(request)
    doc = await access_of(request).claim(stream_param(request), claims.user_id)
    return web.json_response(stream_view(doc))


async def set_public(request: web.Request) -> web.Response:
    """PUT /api/streams/NAME/public {"public": bool} (its owner): anyone may watch it."""
    claims = await signed_in_teacher(request)
    params = await request_params(request)
    public = params.get("public", True)
    if not isinstance(public, bool):
        public = str(public).lower() in ("1", "true", "yes", "on")
    doc = await access_of(request).set_public(stream_param(request), claims.user_id, public)
    return web.json_response(stream_view(doc))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/token", issue_token)
    app.router.add_post("/api/streams/{stream}/claim", claim_stream)
    app.router.add_put("/api/streams/{stream}/public", set_public)
