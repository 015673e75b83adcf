"""The node's teacher check (`node.teacher_auth`): which teacher do a request's
credentials prove?"""

from __future__ import annotations

from aiohttp import web

from ..access import AccessDenied
from ..auth import TokenError, token_from_request
from ..http import check_teacher_password, guards_of
from .service import CLASSROOM, Classroom
from .sessions import is_teacher_claims


async def teacher_auth(node, request: web.Request, params: dict) -> str | None:
    """Which teacher do this request's credentials prove? (node.teacher_auth)

    A signed-in teacher's Bearer token proves its own subject; username + password prove
    that account. AIRCLASS_TEACHER_PASSWORD is honoured only while no account exists.
    None when nothing is proven.
    """
    classroom: Classroom = request.app[CLASSROOM]
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
        teacher = await classroom.teachers.authenticate(username, password)
        if teacher is not None:
            guards.passwords.succeeded(keys)
            return teacher["username"]
    if await classroom.teachers.count() == 0:
        return await check_teacher_password(node, request, params)
    return None
