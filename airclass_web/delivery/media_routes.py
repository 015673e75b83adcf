"""WHEP (draft-ietf-wish-whep) endpoints and stream status."""

from __future__ import annotations

from aiohttp import web

from airclass_media.webrtc import BadOffer, Overloaded

from ..access import Grant
from ..auth import token_from_request
from ..errors import ApiError
from ..http import authorize, viewer_whep_url, visible_streams
from ..limits import client_ip
from ..node import NODE, node_of
from .ice_servers import ice_servers_json
from .media import MediaServices
from .shared import (
    MEDIA,
    add_session_routes,
    hls_viewer_count,
    ice_etag,
    ice_link_headers,
    trickle,
)
from .workers.admission import AdmissionRefused

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch",
}


@web.middleware
async def whep_cors(request: web.Request, handler):
    """CORS on every WHEP response, errors included: students' pages may live on the main
    node while their WHEP session is on a sub (another origin)."""
    if not request.path.startswith("/live/"):
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(CORS_HEADERS)
        raise
    response.headers.update(CORS_HEADERS)
    return response


async def whep_options(request: web.Request) -> web.Response:
    media = request.app[MEDIA]
    headers = [("Accept-Post", "application/sdp")]
    return web.Response(status=204, headers=headers + ice_link_headers(media))


async def whep_offer(request: web.Request) -> web.Response:
    node = node_of(request)
    media = request.app[MEDIA]
    name = request.match_info["stream"]
    claims = await authorize(request, name, "watch")
    if request.content_type != "application/sdp":
        raise ApiError(415, "WHEP offers must be Content-Type: application/sdp")
    offer = await request.text()
    stream = node.hub.get(name)
    if stream is None and media.cluster.stream_resolver is not None:
        stream = await media.cluster.stream_resolver(name)
    if stream is None:
        raise ApiError(404, f"unknown stream {name}")
    try:
        ip = client_ip(request, media.trusted_proxies)
        session = await media.open_viewer(stream, offer, claims.user_id, ip)
    except BadOffer as exc:
        raise ApiError(400, f"malformed SDP offer: {exc}") from exc
    except (Overloaded, AdmissionRefused) as exc:
        status = exc.status if isinstance(exc, AdmissionRefused) else 503
        message = f"node is full: {exc}" if status == 503 else str(exc)
        raise ApiError(status, message, headers={"Retry-After": "5"}) from exc
    if media.viewers.active(session.id, name):  # asked again while it lasts
        media.grants.add(session.id, Grant(name, claims, token_from_request(request)))
    location = f"/live/{name}/whep/{media.urls.resource_id('whep', name, session.id)}"
    headers = [
        ("Location", location),
        ("Content-Type", "application/sdp"),
        ("Accept-Patch", "application/trickle-ice-sdpfrag"),
        ("ETag", ice_etag(session.answer_sdp)),
        *ice_link_headers(media, claims.user_id),
    ]
    return web.Response(status=201, text=session.answer_sdp, headers=headers)


def whep_session(request: web.Request) -> str:
    """The public id of the session a PATCH/DELETE URL names: 404 for no such session,
    403 for a known session without its secret (its id from the viewer listing)."""
    media = request.app[MEDIA]
    name = request.match_info["stream"]
    session_id, proven = media.urls.check("whep", name, request.match_info["session"])
    if proven:
        return session_id
    if media.viewers.active(session_id, name) or media.viewers.ended.has(session_id, name):
        raise ApiError(403, "use the session's own URL (its Location) to change or end it")
    raise ApiError(404, "unknown WHEP session")


async def whep_delete(request: web.Request) -> web.Response:
    """Ends the session; 200 also for one that ended lately (the WHEP reference client
    closes its peer connection before it sends DELETE)."""
    session_id = whep_session(request)
    if not await request.app[MEDIA].viewers.close(session_id, request.match_info["stream"]):
        raise ApiError(404, "unknown WHEP session")
    return web.Response(status=200)


async def whep_patch(request: web.Request) -> web.Response:
    media = request.app[MEDIA]
    session_id, name = whep_session(request), request.match_info["stream"]
    if not media.viewers.active(session_id, name):
        raise ApiError(404, "unknown WHEP session")
    return await trickle(
        request,
        lambda fragment, if_match: media.viewers.add_candidates(
            session_id, name, fragment, if_match
        ),
        "unknown WHEP session",
    )


async def list_streams(request: web.Request) -> web.Response:
    node = node_of(request)
    media = request.app[MEDIA]
    streams = []
    visible = await visible_streams(request, [s.name for s in node.hub.streams()])
    for stream in node.hub.streams():
        if stream.name not in visible:  # private streams: only their owner and class
            continue
        status = stream.status()
        status["viewers"] = media.viewers.viewers_of(stream.name)
        status["viewers"] += hls_viewer_count(request.app, stream.name)
        streams.append(status)
    return web.json_response({"streams": streams})


async def stream_status(request: web.Request) -> web.Response:
    node = node_of(request)
    stream = node.hub.get(request.match_info["stream"])
    if stream is None or not await visible_streams(request, [stream.name]):
        raise ApiError(404, "unknown stream")
    status = stream.status()
    status["viewers"] = request.app[MEDIA].viewers.viewers_of(stream.name)
    status["viewers"] += hls_viewer_count(request.app, stream.name)  # HLS fallback
    return web.json_response(status)


async def stream_route(request: web.Request) -> web.Response:
    """GET /api/streams/NAME/route (a viewer's token): where to watch from now.

    A page asks again whenever playback fails, so a viewer whose node died is sent to a
    live one (the cluster router never hands out a node that left the registry) instead
    of retrying a stored address."""
    name = request.match_info["stream"]
    claims = await authorize(request, name, "watch")
    node = node_of(request)
    return web.json_response(
        {
            "whep_url": await viewer_whep_url(node, request, claims.user_id, name),
            "ice_servers": ice_servers_json(node.config, claims.user_id),
        }
    )


async def stream_viewers(request: web.Request) -> web.Response:
    """Every viewer session of a stream (its owner's or an admin's token): status, and
    worker if any. Ids are public ids: they cannot end or change a session."""
    node = node_of(request)
    name = request.match_info["stream"]
    await authorize(request, name, "manage")
    if node.hub.get(name) is None:
        raise ApiError(404, "unknown stream")
    sessions = await request.app[MEDIA].viewers.statuses(name)
    return web.json_response({"stream": name, "viewers": sessions})


async def stream_access(request: web.Request) -> web.Response:
    """GET /api/streams/NAME/access?need=watch|manage with the caller's token: 204 when
    allowed, else 401/403 (the error says why). Sub nodes without a shared store ask it."""
    need = request.query.get("need", "watch")
    if need not in ("watch", "manage"):
        raise ApiError(400, "need must be watch or manage")
    await authorize(request, request.match_info["stream"], need)
    return web.Response(status=204)


def setup(app: web.Application, media: MediaServices) -> None:
    node = app[NODE]
    app[MEDIA] = media
    node.add_service("media", media.start, media.stop)
    node.add_metrics(media.metrics)
    app.middlewares.insert(0, whep_cors)  # outermost: also covers JSON errors
    whep = "/live/{stream:[A-Za-z0-9_-]{1,64}}/whep"
    add_session_routes(
        app,
        whep,
        offer=whep_offer,
        options=whep_options,
        delete=whep_delete,
        patch=whep_patch,
    )
    app.router.add_get("/api/streams", list_streams)
    app.router.add_get("/api/streams/{stream}", stream_status)
    app.router.add_get("/api/streams/{stream}/viewers", stream_viewers)
    app.router.add_get("/api/streams/{stream}/access", stream_access)
    app.router.add_get("/api/streams/{stream}/route", stream_route)
