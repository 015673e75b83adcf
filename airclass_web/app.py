"""Build a node and its aiohttp application: one `setup(app)` call per feature."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import (
    ai,
    classroom,
    cluster,
    dashboard,
    metrics,
    ops,
    pages,
    recording_routes,
    security_headers,
    token_routes,
)
from .config import Config
from .delivery import hls_routes, media_routes, whip_routes
from .errors import json_errors_middleware
from .node import NODE, Node

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def create_node(config: Config) -> tuple[Node, web.Application]:
    node = Node(config)
    app = web.Application(
        client_max_size=config.max_body,
        middlewares=[json_errors_middleware],
    )
    app[NODE] = node
    security_headers.setup(app)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)))
    app.router.add_static("/static", STATIC_DIR, name="static")
    # Order matters only for start-up: media first, then what uses it.
    media_routes.setup(app)
    hls_routes.setup(app)  # HLS fallback (after media: the same stream hub)
    whip_routes.setup(app)  # WHIP ingest, next to RTMP's
    token_routes.setup(app)
    cluster.setup(app)
    classroom.setup(app)
    recording_routes.setup(app)
    ai.setup(app)  # after classroom and recorder
    dashboard.setup(app)
    pages.setup(app)
    metrics.setup(app)
    ops.setup(app)  # after metrics: registers into its registry
    return node, app
