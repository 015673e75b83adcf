"""HTML pages (jinja2 templates + static/)."""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from .auth import STREAM_NAME
from .node import node_of
from .token_routes import visible_streams


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict:
    node = node_of(request)
    visible = await visible_streams(request, [s.name for s in node.hub.streams()])
    streams = [s.status() for s in node.hub.streams() if s.name in visible]
    return {"streams": streams}


@aiohttp_jinja2.template("student.html")
async def student(request: web.Request) -> dict:
    stream = request.query.get("stream", "demo")
    if not STREAM_NAME.match(stream):
        stream = "demo"
    return {"stream": stream}


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/student", student)
