"""The node's teacher check (`node.teacher_auth`): which teacher do a request's
credentials prove? Built by the composition root before the node (`teacher_check`)."""

from __future__ import annotations

from aiohttp import web

from ..access import AccessDenied
from ..auth import TokenError, token_from_request
from ..http import check_teacher_password, guards_of
from ..node import TeacherAuth
from .sessions import is_teacher_claims
from .teachers import TeacherService


def teacher_check(teachers: TeacherService) -> TeacherAuth:
    """The node's teacher check (node.teacher_auth) over these teacher accounts."""

    async def teacher_auth(node, request: web.Request, params: dict) -> str | None:
        return await _teacher_auth(teachers, node, request, params)

    return teacher_auth


async def _teacher_auth(
    teachers: TeacherService, node, request: web.Request, params: dict
) -> str | None:
    """Which teacher do this request's credentials prove?

    A signed-in teacher's Bearer token proves its own subject; username + password prove
    that account. AIRCLASS_TEACHER_PASSWORD is honoured only while no account exists.
    None when nothing is proven.
    """
    token = token_from_request(request)
    if token:
        try:
            claims = node.tokens.verify(token)
            if is_teacher_claims(claims):
                await node.access.check_teacher_token(claims)
                return claims.user_id
        except (TokenError, AccessDenied):
            pass
    username, password = str(params.get("username", "")), str(params.get("password", ""))
    if username and password:
        guards = guards_of(request)
        keys = guards.passwords.attempt(guards.ip(request), username)  # counts first
        teacher = await teachers.authenticate(username, password)
        if teacher is not None:
            guards.passwords.succeeded(keys)
            return teacher["username"]
    if await teachers.count() == 0:
        return await check_teacher_password(node, request, params)
    return None
