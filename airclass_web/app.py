"""The composition root: build a node and its aiohttp application. What features share is
built here first and passed in (store, stream rules, teacher check, the cluster's hooks,
the media services); each feature's `setup` then adds its services and routes."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from airclass_media.ladder import parse_ladder

from . import ai, classroom, cluster, dashboard, metrics, ops, pages, security_headers, token_routes
from .access import StreamAccess
from .ai import routes as ai_routes
from .ai.egress import Allowlist
from .classroom import Classroom
from .classroom import routes as classroom_routes
from .classroom.stream_keys import StreamKeys
from .classroom.teacher_auth import teacher_check
from .classroom.teachers import TeacherService
from .cluster import Cluster
from .cluster import routes as cluster_routes
from .config import Config, ConfigError
from .crypto import DataKeyError, data_cipher
from .dashboard import routes as dashboard_routes
from .delivery import hls_routes, media_routes, whip_routes
from .delivery.media import MediaServices
from .errors import json_errors_middleware
from .http import GUARDS, Guards
from .limits import parse_networks
from .node import CLUSTER_HOOKS, NODE, Node
from .recording import routes as recording_routes
from .store import make_store
from .tls import TlsError, check_files

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


def node_config(config: Config) -> Config:
    """The config a node starts with: `Config.resolved()`, and the values that features
    parse checked by their parsers. ConfigError names what is wrong; nothing changes."""
    resolved = config.resolved()
    try:
        if resolved.data_keys:
            data_cipher(resolved.data_keys)
        if resolved.tls_cert:
            check_files(resolved.tls_cert, resolved.tls_key)
    except (DataKeyError, TlsError) as exc:
        raise ConfigError(str(exc)) from exc
    for what, check, value in (
        ("--trusted-proxy", parse_networks, resolved.trusted_proxies),
        (
            "--ai-allowed-base-url / --gemini-base-url",
            Allowlist,
            [*resolved.ai_allowed_base_urls, resolved.gemini_base_url],
        ),
        ("--ladder", parse_ladder, resolved.ladder),
    ):
        try:
            check(value)
        except ValueError as exc:
            raise ConfigError(f"{what}: {exc}") from exc
    return resolved


def create_node(config: Config) -> tuple[Node, web.Application]:
    """The node and its application; `config` as `node_config` returns it."""
    store = make_store(config)  # opened by the classroom's start
    teachers = TeacherService(
        store, config.data_keys, dev_key_dir=config.data_dir if config.dev else None
    )
    stream_keys = StreamKeys(store, teachers)
    node = Node(
        config,
        store=store,
        access=StreamAccess(store, config.dev),
        stream_keys=stream_keys,
        teacher_auth=teacher_check(teachers),
    )
    app = web.Application(
        client_max_size=config.max_body,
        middlewares=[json_errors_middleware],
    )
    app[NODE] = node
    app[GUARDS] = Guards.for_config(config)
    # The cluster lends its hooks (origin claims, relays, viewer routing, recording
    # handoff) to the media services and routes built after it; it reports the media's
    # viewers and drops a publisher whose stream moved (serve): the one cycle.
    cluster_service = Cluster(node)
    hooks = cluster_service.hooks()
    app[CLUSTER_HOOKS] = hooks
    media = MediaServices(node, hooks)
    cluster_service.serve(media)
    security_headers.setup(app)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)))
    app.router.add_static("/static", STATIC_DIR, name="static")
    # Services start in the order they are added (media first) and stop in reverse.
    media_routes.setup(app, media)
    hls_routes.setup(app)  # HLS fallback (the same stream hub)
    whip_routes.setup(app)  # WHIP ingest, next to RTMP's
    token_routes.setup(app)
    cluster.setup(app, cluster_service)
    cluster_routes.setup_routes(app)
    classroom_service = Classroom(node, store, teachers, stream_keys)
    classroom.setup(app, classroom_service)
    classroom_routes.setup_routes(app)
    recorder = recording_routes.recording_manager(node, hooks.recording_handoff)
    recording_routes.setup(app, recorder)
    ai_service = ai.setup(app, classroom_service, recorder)
    ai_routes.setup_routes(app)
    dashboard.setup(app, classroom_service, ai_service)
    dashboard_routes.setup_routes(app)
    pages.setup(app)
    ops.setup(app, metrics.setup(app))  # ops adds its collectors to the /metrics registry
    node.install(app)  # start/stop of every service added above, through app.cleanup_ctx
    return node, app
