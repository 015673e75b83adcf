"""POST /api/token: tokens for students, teachers and monitors; stream claims and the
public flag; the admission guards (client address, rate limits, password attempts)."""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

from aiohttp import web

from .access import AccessDenied, StreamAccess
from .auth import STREAM_NAME, Claims, TokenError, require, token_from_request
from .delivery.ice_servers import ice_servers_json
from .errors import json_error
from .identifiers import USER_ID_RULE, valid_user_id
from .limits import IpRateLimit, Network, PasswordLimiter, TokenBuckets, client_ip, parse_networks
from .node import Node, node_of

log = logging.getLogger(__name__)

USER_TYPES = ("student", "teacher", "monitor")


#: The one identity the interim shared password (AIRCLASS_TEACHER_PASSWORD) stands for.
BOOTSTRAP_TEACHER = "teacher"
#: Under --dev, a teacher token asked for without credentials nor user_id is for this one.
DEV_TEACHER = "dev-teacher"
#: Wrong join codes per client address: 10, then one every 3 s (guessing an 8-character
#: code from 31 letters at that rate takes longer than a school exists).
JOIN_FAIL_BURST, JOIN_FAIL_REFILL = 10, 3.0


@dataclass
class Guards:
    """The node's admission guards, shared by every route."""

    trusted: list[Network]
    passwords: PasswordLimiter
    token_rate: IpRateLimit
    join_rate: IpRateLimit
    join_failures: TokenBuckets

    def ip(self, request: web.Request) -> str:
        return client_ip(request, self.trusted)


GUARDS = web.AppKey("guards", Guards)


def guards_of(request: web.Request) -> Guards:
    return request.app[GUARDS]


def access_of(request: web.Request) -> StreamAccess:
    return node_of(request).access


def denied(exc: AccessDenied) -> web.HTTPException:
    return json_error(exc.status, exc.message)


def optional_claims(request: web.Request) -> Claims | None:
    """The request's token claims, or None (anonymous, bad or expired token)."""
    token = token_from_request(request)
    if not token:
        return None
    try:
        return node_of(request).tokens.verify(token)
    except TokenError:
        return None


async def visible_streams(request: web.Request, names: list[str]) -> set[str]:
    """The stream names this caller may see listed: public ones (every one under --dev),
    a signed-in teacher's own, a class member's stream."""
    return await access_of(request).visible(names, optional_claims(request))


async def signed_in_teacher(request: web.Request) -> Claims:
    """The claims of a signed-in teacher's token (publish/admin action, not revoked):
    401 without a valid token, 403 for another role or a read-only teacher token."""
    claims = require(request, node_of(request).tokens, roles=("teacher",))
    if claims.action not in ("publish", "admin"):
        raise json_error(403, "sign in as a teacher (this token may only read)")
    try:
        await access_of(request).check_teacher_token(claims)
    except AccessDenied as exc:
        raise denied(exc) from exc
    return claims


async def check_teacher_password(node: Node, request: web.Request, params: dict) -> str | None:
    """Interim teacher credential: the node's AIRCLASS_TEACHER_PASSWORD.

    Returns the identity it proves (always BOOTSTRAP_TEACHER), or None. The attempt
    counts on the password limiter first."""
    expected = node.config.teacher_password
    given = str(params.get("password", ""))
    if not expected or not given:
        return None
    keys = guards_of(request).passwords.attempt(guards_of(request).ip(request), BOOTSTRAP_TEACHER)
    if hmac.compare_digest(given.encode(), expected.encode()):
        guards_of(request).passwords.succeeded(keys)
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
    """Rate-limited per client address; refused requests count more (IpRateLimit)."""
    guards = guards_of(request)
    ip = guards.ip(request)
    guards.token_rate.check(ip, "token")
    try:
        return await _issue_token(request)
    except web.HTTPException as exc:
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
        raise json_error(400, f"user_type must be one of {', '.join(USER_TYPES)}")
    if action not in ("read", "publish"):
        raise json_error(400, "action must be read or publish")
    if not STREAM_NAME.match(stream):
        raise json_error(400, "stream must be 1-64 letters, digits, '_' or '-'")
    if not valid_user_id(user_id):
        raise json_error(400, USER_ID_RULE)  # no newline nor escape reaches a log line
    if action == "publish" and user_type != "teacher":
        raise json_error(403, "only teachers may publish")
    access = node.access
    if user_type == "teacher":
        # A teacher token's identity comes only from verified credentials, never from the
        # caller's user_id. Under --dev a caller without credentials may name itself.
        identity = await node.teacher_auth(node, request, params)
        if identity is None and not node.config.dev:
            raise json_error(401, "teacher credentials required")
        user_id = identity or str(params.get("user_id") or DEV_TEACHER)
    try:
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
                f"stream {stream} is private: join its class session, or its teacher "
                "marks it public",
            )
    except AccessDenied as exc:
        raise denied(exc) from exc
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
        host = request.host.rsplit(":", 1)[0] if not node.config.public_url else None
        rtmp_host = host or node.config.advertised_host
        body["rtmp_url"] = f"{node.config.rtmp_base(rtmp_host)}/{stream}?token={token}"
        body["whip_url"] = f"{public_base_url(node, request)}/live/{stream}/whip"
    log.info("token: %s %s %s on %s", user_type, user_id, action, stream)
    return web.json_response(body)


def _stream_param(request: web.Request) -> str:
    stream = request.match_info["stream"]
    if not STREAM_NAME.match(stream):
        raise json_error(400, "stream must be 1-64 letters, digits, '_' or '-'")
    return stream


def stream_view(doc: dict) -> dict:
    return {"stream": doc["id"], "owner": doc["owner"], "public": bool(doc.get("public"))}


async def claim_stream(request: web.Request) -> web.Response:
    """POST /api/streams/NAME/claim (teacher): make an unclaimed stream yours."""
    claims = await signed_in_teacher(request)
    try:
        doc = await access_of(request).claim(_stream_param(request), claims.user_id)
    except AccessDenied as exc:
        raise denied(exc) from exc
    return web.json_response(stream_view(doc))


async def set_public(request: web.Request) -> web.Response:
    """PUT /api/streams/NAME/public {"public": bool} (its owner): anyone may watch it."""
    claims = await signed_in_teacher(request)
    params = await request_params(request)
    public = params.get("public", True)
    if not isinstance(public, bool):
        public = str(public).lower() in ("1", "true", "yes", "on")
    try:
        doc = await access_of(request).set_public(_stream_param(request), claims.user_id, public)
    except AccessDenied as exc:
        raise denied(exc) from exc
    return web.json_response(stream_view(doc))


def setup(app: web.Application) -> None:
    from .node import NODE

    node = app[NODE]
    config = node.config
    node.access = StreamAccess(lambda: node.store, config.dev)
    app[GUARDS] = Guards(
        trusted=parse_networks(config.trusted_proxies),
        passwords=PasswordLimiter(),
        token_rate=IpRateLimit(config.ip_rate_limit),
        join_rate=IpRateLimit(config.ip_rate_limit),
        join_failures=TokenBuckets(JOIN_FAIL_BURST, JOIN_FAIL_REFILL),
    )
    if node.teacher_auth is None:
        node.teacher_auth = check_teacher_password
    app.router.add_post("/api/token", issue_token)
    app.router.add_post("/api/streams/{stream}/claim", claim_stream)
    app.router.add_put("/api/streams/{stream}/public", set_public)
