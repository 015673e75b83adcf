"""HTTP side of the cluster: node list, the relay WebSocket, relay admin."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSCloseCode, WSMsgType, web

from airclass_media.ladder import is_rendition
from relay.server import DEFAULT_KINDS, on_downstream_message

from ..auth import STREAM_NAME
from ..errors import ApiError
from ..http import visible_streams
from ..node import node_of
from .registry import RegistryError
from .service import CLUSTER
from .signing import SignatureError

log = logging.getLogger(__name__)


def verify_node(request: web.Request) -> str:
    """The calling node's id, or 401 (and a log line) for a bad signature."""
    cluster = request.app[CLUSTER]
    try:
        return cluster.signer.verify_request(request.method, request.path, request.headers)
    except SignatureError as exc:
        log.warning(
            "cluster: refused %s %s from %s: %s", request.method, request.path, request.remote, exc
        )
        raise ApiError(401, f"cluster signature required: {exc}") from exc


async def list_nodes(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    try:
        nodes = await cluster.nodes()
    except RegistryError as exc:
        raise ApiError(503, f"registry unreachable: {exc}") from exc
    nodes.sort(key=lambda n: (n.role != "main", n.role, n.url))
    records = [n.public() for n in nodes]
    visible = await visible_streams(request, sorted({s for r in records for s in r["streams"]}))
    for record in records:  # private streams are not listed to strangers
        record["streams"] = [s for s in record["streams"] if s in visible]
    body = {"self": node_of(request).config.node_id, "nodes": records}
    return web.json_response(body)


def _stream_name(request: web.Request) -> str:
    name = request.match_info["stream"]
    if not STREAM_NAME.match(name) and not is_rendition(name):  # class1 or class1~540p
        raise ApiError(400, "bad stream name")
    return name


async def relay_stream(request: web.Request) -> web.StreamResponse:
    """WebSocket: the encoded packets of one stream, for a sub node (main only)."""
    cluster = request.app[CLUSTER]
    sub_id = verify_node(request)
    if cluster.relay_server is None:
        raise ApiError(404, "only a main node relays streams")
    name = _stream_name(request)
    stream = node_of(request).hub.get(name)
    if stream is None:
        raise ApiError(404, f"unknown stream {name}")
    kinds = [k for k in request.query.get("kinds", ",".join(DEFAULT_KINDS)).split(",") if k]
    ws = web.WebSocketResponse(heartbeat=5.0, compress=False, max_msg_size=64 * 1024)
    await ws.prepare(request)
    log.info("relay %s: sub %s from %s", name, sub_id, request.remote)
    serving = asyncio.ensure_future(cluster.relay_server.serve(stream, ws.send_bytes, kinds))
    # When the sender stops (admin reset, node stopping), close: the sub reconnects.
    serving.add_done_callback(lambda _: asyncio.ensure_future(ws.close()))
    clean = False
    try:
        while True:  # only keyframe requests come from the sub: wait for it to leave
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                on_downstream_message(stream, msg.data)
                continue
            if msg.type == WSMsgType.CLOSE:
                clean = msg.data == WSCloseCode.OK
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    finally:
        # Not closed by the sub nor by us: it vanished (killed, network), maybe dead.
        # (aiohttp cancels this handler when the connection drops.)
        if not clean and not _closed_by_us(serving):
            cluster.suspect(sub_id)
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await serving
        await ws.close()
    return ws


def _closed_by_us(serving: asyncio.Future) -> bool:
    """Did the relay end by an admin reset / shutdown (not a transport failure)?"""
    if not serving.done() or serving.cancelled() or serving.exception() is not None:
        return False
    return bool(serving.result())


async def reset_relay(request: web.Request) -> web.Response:
    """Signed admin call: close a stream's relay connections (subs reconnect)."""
    cluster = request.app[CLUSTER]
    verify_node(request)
    if cluster.relay_server is None:
        raise ApiError(404, "only a main node relays streams")
    closed = cluster.relay_server.reset(_stream_name(request))
    return web.json_response({"closed": closed})


async def relay_status(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    body: dict = {"role": cluster.role}
    if cluster.relay_server is not None:
        body["serving"] = cluster.relay_server.status()
    if cluster.relays is not None:
        body["pulling"] = cluster.relays.status()
    names = sorted({r["stream"] for key in ("serving", "pulling") for r in body.get(key, [])})
    visible = await visible_streams(request, names)
    for key in ("serving", "pulling"):  # private streams are not listed to strangers
        if key in body:
            body[key] = [r for r in body[key] if r["stream"] in visible]
    return web.json_response(body)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/cluster/nodes", list_nodes)
    app.router.add_get("/cluster/relays", relay_status)
    app.router.add_get("/cluster/relay/{stream}", relay_stream)
    app.router.add_delete("/cluster/relay/{stream}", reset_relay)
