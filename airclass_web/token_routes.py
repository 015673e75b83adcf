"""POST /api/token: tokens for students, teachers and monitors."""

from __future__ import annotations

import hmac
import logging
import secrets

from aiohttp import web

from .auth import STREAM_NAME
from .errors import json_error
from .node import Node, node_of

log = logging.getLogger(__name__)

USER_TYPES = ("student", "teacher", "monitor")


#: The one identity the interim shared password (AIRCLASS_TEACHER_PASSWORD) stands for.
BOOTSTRAP_TEACHER = "teacher"


async def check_teacher_password(node: Node, request: web.Request, params: dict) -> str | None:
    """Interim teacher credential: the node's AIRCLASS_TEACHER_PASSWORD.

    Returns the identity it proves (always BOOTSTRAP_TEACHER), or None."""
    expected = node.config.teacher_password
    given = str(params.get("password", ""))
    if expected and hmac.compare_digest(given.encode(), expected.encode()):
        return BOOTSTRAP_TEACHER
    return None


async def request_params(request: web.Request) -> dict:
    """Query parameters, overlaid by a JSON or form body when there is one."""
    params: dict = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise json_error(400, "body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise json_error(400, "JSON body must be an object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            params.update(await request.post())
    return params


def public_base_url(node: Node, request: web.Request) -> str:
    """Base URL clients use for this node: --public-url, else the URL they called."""
    if node.config.public_url:
        return node.config.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


async def viewer_whep_url(node: Node, request: web.Request, user_id: str, stream: str) -> str:
    """WHEP URL a viewer should use: a sub node chosen by the cluster router, else this one.
    The router may raise 503 (every node full) before any token is issued."""
    base = None
    if node.viewer_router is not None:
        base = await node.viewer_router(user_id, stream)
    return f"{base or public_base_url(node, request)}/live/{stream}/whep"


async def issue_token(request: web.Request) -> web.Response:
    node = node_of(request)
    params = await request_params(request)
    user_type = str(params.get("user_type", "student"))
    action = str(params.get("action", "read"))
    stream = str(params.get("stream", ""))
    user_id = str(params.get("user_id") or f"{user_type}-{secrets.token_hex(4)}")
    if user_type not in USER_TYPES:
        raise json_error(400, f"user_type must be one of {', '.join(USER_TYPES)}")
    if action not in ("read", "publish"):
        raise json_error(400, "action must be read or publish")
    if not STREAM_NAME.match(stream):
        raise json_error(400, "stream must be 1-64 letters, digits, '_' or '-'")
    if len(user_id) > 128:
        raise json_error(400, "user_id too long")
    if action == "publish" and user_type != "teacher":
        raise json_error(403, "only teachers may publish")
    if user_type == "teacher":
        # A teacher token's identity comes only from verified credentials, never from the
        # caller's user_id. Under --dev a caller without credentials may name itself.
        identity = await node.teacher_auth(node, request, params)
        if identity is None and not node.config.dev:
            raise json_error(401, "teacher credentials required")
        user_id = identity or user_id
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
    if action == "publish":
        host = request.host.rsplit(":", 1)[0] if not node.config.public_url else None
        rtmp_host = host or node.config.advertised_host
        body["rtmp_url"] = f"rtmp://{rtmp_host}:{node.config.rtmp_port}/live/{stream}?token={token}"
    log.info("token: %s %s %s on %s", user_type, user_id, action, stream)
    return web.json_response(body)


def setup(app: web.Application) -> None:
    from .node import NODE

    node = app[NODE]
    if node.teacher_auth is None:
        node.teacher_auth = check_teacher_password
    app.router.add_post("/api/token", issue_token)
