"""Dashboard pages and API. Handlers only translate HTTP <-> DashboardService."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from ..classroom.service import classroom_of
from ..http import claims_of, signed_in_teacher
from .service import DASHBOARD, DashboardService

STAFF = ("teacher", "monitor")


async def _session(request: web.Request) -> dict:
    session, _ = await classroom_of(request).session_for(
        await claims_of(request), request.match_info["session_id"], STAFF
    )
    return session


def _svc(request: web.Request) -> DashboardService:
    return request.app[DASHBOARD]


async def overview(request: web.Request) -> web.Response:
    return web.json_response(await _svc(request).overview(await _session(request)))


async def students(request: web.Request) -> web.Response:
    return web.json_response(await _svc(request).students(await _session(request)))


async def alerts(request: web.Request) -> web.Response:
    return web.json_response(await _svc(request).alerts(await _session(request)))


async def slides(request: web.Request) -> web.Response:
    return web.json_response(await _svc(request).slides(await _session(request)))


async def export_csv(request: web.Request) -> web.Response:
    session = await _session(request)
    body = await _svc(request).export_csv(session)
    return web.Response(
        text=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{session["id"]}.csv"'},
    )


async def sessions(request: web.Request) -> web.Response:
    claims = await signed_in_teacher(request)
    return web.json_response({"sessions": await _svc(request).sessions(claims.user_id)})


@aiohttp_jinja2.template("dashboard_list.html")
async def list_page(request: web.Request) -> dict:
    return {}


@aiohttp_jinja2.template("dashboard.html")
async def session_page(request: web.Request) -> dict:
    return {"session_id": request.match_info["session_id"][:64]}


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/dashboard/sessions", sessions)
    r.add_get("/api/dashboard/session/{session_id}/overview", overview)
    r.add_get("/api/dashboard/session/{session_id}/students", students)
    r.add_get("/api/dashboard/session/{session_id}/alerts", alerts)
    r.add_get("/api/dashboard/session/{session_id}/slides", slides)
    r.add_get("/api/dashboard/session/{session_id}/export.csv", export_csv)
    r.add_get("/dashboard", list_page)
    r.add_get("/dashboard/{session_id}", session_page)
