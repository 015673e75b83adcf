"""The HTTP toolkit of every route module: request parameters, token claims, the
admission guards, URL helpers. A refused request raises `errors.ApiError` (or a kind of
it: AccessDenied, ClassroomError); the app's middleware answers it as JSON."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from .access import NEED_ROLES, Grant, Need, StreamAccess
from .auth import STREAM_NAME, Claims, TokenError, require, token_from_request
from .config import Config
from .errors import ApiError
from .limits import IpRateLimit, Network, PasswordLimiter, TokenBuckets, client_ip, parse_networks
from .node import Node, cluster_hooks_of, node_of
from .store import StoreError

EVERY_ROLE = ("teacher", "student", "monitor")
STREAM_RULE = "stream must be 1-64 letters, digits, '_' or '-'"
#: The one identity the interim shared password (AIRCLASS_TEACHER_PASSWORD) stands for.
BOOTSTRAP_TEACHER = "teacher"
#: Wrong join codes per client address: 10, then one every 3 s (guessing an 8-character
#: code from 31 letters at that rate takes longer than a school exists).
JOIN_FAIL_BURST, JOIN_FAIL_REFILL = 10, 3.0


# -- admission guards -----------------------------------------------------------------------
@dataclass
class Guards:
    """The node's admission guards, shared by every route."""

    trusted: list[Network]
    passwords: PasswordLimiter
    token_rate: IpRateLimit
    join_rate: IpRateLimit
    join_failures: TokenBuckets

    @classmethod
    def for_config(cls, config: Config) -> Guards:
        return cls(
            trusted=parse_networks(config.trusted_proxies),
            passwords=PasswordLimiter(),
            token_rate=IpRateLimit(config.ip_rate_limit),
            join_rate=IpRateLimit(config.ip_rate_limit),
            join_failures=TokenBuckets(JOIN_FAIL_BURST, JOIN_FAIL_REFILL),
        )

    def ip(self, request: web.Request) -> str:
        return client_ip(request, self.trusted)


GUARDS = web.AppKey("guards", Guards)


def guards_of(request: web.Request) -> Guards:
    return request.app[GUARDS]


def access_of(request: web.Request) -> StreamAccess:
    return node_of(request).access


# -- request parameters -----------------------------------------------------------------------
async def request_params(request: web.Request) -> dict:
    """Query parameters, overlaid by a JSON or form body when there is one."""
    params: dict = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, "body is not valid JSON") from exc
            if not isinstance(body, dict):
                raise ApiError(400, "JSON body must be an object")
            params.update(body)
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            params.update(await request.post())
    return params


def stream_param(request: web.Request) -> str:
    """The path's {stream}: 400 unless it is a valid stream name."""
    stream = request.match_info["stream"]
    if not STREAM_NAME.match(stream):
        raise ApiError(400, STREAM_RULE)
    return stream


# -- claims ----------------------------------------------------------------------------------
def optional_claims(request: web.Request) -> Claims | None:
    """The request's token claims, or None (anonymous, bad or expired token)."""
    token = token_from_request(request)
    if not token:
        return None
    try:
        return node_of(request).tokens.verify(token)
    except TokenError:
        return None


async def claims_of(request: web.Request, *roles: str) -> Claims:
    """The token's claims (of one of `roles`, any by default); a teacher token revoked by
    a password change gets 401."""
    claims = require(request, node_of(request).tokens, roles=roles or EVERY_ROLE)
    await access_of(request).check_teacher_token(claims)
    return claims


async def signed_in_teacher(request: web.Request) -> Claims:
    """The claims of a signed-in teacher's token (publish/admin action, not revoked):
    401 without a valid token, 403 for another role or a read-only teacher token."""
    claims = require(request, node_of(request).tokens, roles=("teacher",))
    if claims.action not in ("publish", "admin"):
        raise ApiError(403, "sign in as a teacher (this token may only read)")
    await access_of(request).check_teacher_token(claims)
    return claims


async def visible_streams(request: web.Request, names: list[str]) -> set[str]:
    """The stream names this caller may see listed: public ones (every one under --dev),
    a signed-in teacher's own, a class member's stream."""
    return await access_of(request).visible(names, optional_claims(request))


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


# -- URLs --------------------------------------------------------------------------------------
def public_base_url(node: Node, request: web.Request) -> str:
    """Base URL clients use for this node: --public-url, else the URL they called."""
    if node.config.public_url:
        return node.config.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


async def viewer_whep_url(node: Node, request: web.Request, user_id: str, stream: str) -> str:
    """WHEP URL a viewer should use: a sub node chosen by the cluster router, else this one.
    The router may raise 503 (every node full) before any token is issued."""
    base = None
    router = cluster_hooks_of(request).viewer_router
    if router is not None:
        base = await router(user_id, stream)
    return f"{base or public_base_url(node, request)}/live/{stream}/whep"


def rtmp_base(node: Node, request: web.Request) -> str:
    """rtmp(s)://HOST:PORT/live for publishers: the host they called, unless --public-url."""
    host = request.host.rsplit(":", 1)[0] if not node.config.public_url else None
    return node.config.rtmp_base(host or node.config.advertised_host)


async def authorize(request: web.Request, name: str, need: Need = "watch") -> Claims:
    """The access check of every media route: the request's token claims, or a JSON 401
    (no, bad, expired or revoked token), 403 (not allowed now) or 503 (store down)."""
    node = node_of(request)
    claims = require(request, node.tokens, roles=NEED_ROLES[need])
    name = name.partition("~")[0]  # a rendition (NAME~RUNG) has its source's rule
    if not STREAM_NAME.match(name):
        raise ApiError(400, "stream must be 1-64 letters, digits, '_' or '-'")
    grant = Grant(name, claims, token_from_request(request))
    try:
        await node.access.decide(node.config, grant, need)  # AccessDenied: 401, 403
    except StoreError as exc:
        raise ApiError(503, f"store: {exc}") from exc
    return claims
