"""WHIP (RFC 9725) endpoints: a teacher publishes from the browser (or OBS) over WebRTC.

POST /live/NAME/whip (publish token as Bearer, application/sdp) -> 201 + Location +
answer; PATCH (trickle), DELETE and OPTIONS on the session as for WHEP. The ingest itself
is `airclass_media.whip`; it runs in the node process next to the RTMP ingest, so media
workers, relays and the recorder take the stream from the hub as they do for RTMP.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

from airclass_media.ice import restrict_host_addresses, restrict_udp_ports
from airclass_media.whip import KEYFRAME_INTERVAL, BadOffer, StreamBusy, WhipIngest

from ..errors import ApiError
from ..http import authorize
from ..node import NODE, cluster_hooks_of, node_of
from .shared import MEDIA, add_session_routes, ice_etag, ice_link_headers, trickle

WHIP = web.AppKey("whip", WhipIngest)
#: Seconds between the keyframes a WHIP publisher is asked for (browsers make none unasked).
KEYFRAME_INTERVAL_ENV = "AIRCLASS_WHIP_KEYFRAME_INTERVAL"


async def whip_options(request: web.Request) -> web.Response:
    headers = [("Accept-Post", "application/sdp")]
    return web.Response(status=204, headers=headers + _links(request))


def _links(request: web.Request) -> list[tuple[str, str]]:
    media = request.app.get(MEDIA)
    return ice_link_headers(media) if media is not None else []


async def whip_offer(request: web.Request) -> web.Response:
    node = node_of(request)
    name = request.match_info["stream"]
    if node.config.role == "sub":
        raise ApiError(403, "publish to the main node; sub nodes relay its streams")
    # A revoked token, or another teacher's stream: refused (as for RTMP publish).
    claims = await authorize(request, name, "publish")
    if request.content_type != "application/sdp":
        raise ApiError(415, "WHIP offers must be Content-Type: application/sdp")
    offer = await request.text()
    claim_origin = cluster_hooks_of(request).claim_origin
    if claim_origin is not None:  # a cluster: one origin per stream
        holder = await claim_origin(name)
        if holder is not None:
            raise ApiError(409, f"stream {name} is live on {holder}")
    try:
        session = await request.app[WHIP].open(node.hub.stream(name), offer, claims.user_id)
    except BadOffer as exc:
        raise ApiError(400, f"malformed SDP offer: {exc}") from exc
    except StreamBusy as exc:
        raise ApiError(409, f"stream {name} already has a publisher") from exc
    resource = request.app[MEDIA].urls.resource_id("whip", name, session.id)
    headers = [
        ("Location", f"/live/{name}/whip/{resource}"),
        ("Content-Type", "application/sdp"),
        ("Accept-Patch", "application/trickle-ice-sdpfrag"),
        ("ETag", ice_etag(session.answer_sdp)),
        *_links(request),
    ]
    return web.Response(status=201, body=session.answer_sdp.encode(), headers=headers)


def _session(request: web.Request):
    """The session its Location names: 404 unknown, 403 a session id without its secret."""
    name = request.match_info["stream"]
    session_id, proven = request.app[MEDIA].urls.check("whip", name, request.match_info["session"])
    session = request.app[WHIP].get(session_id, name)
    if session is None:
        raise ApiError(404, "unknown WHIP session")
    if not proven:
        raise ApiError(403, "use the session's own URL (its Location) to change or end it")
    return session


async def whip_delete(request: web.Request) -> web.Response:
    session = _session(request)
    await request.app[WHIP].close(session.id)
    return web.Response(status=200)


async def whip_patch(request: web.Request) -> web.Response:
    session, ingest = _session(request), request.app[WHIP]
    return await trickle(
        request,
        lambda fragment, if_match: ingest.add_candidates(session.id, fragment, if_match),
        "unknown WHIP session",
    )


async def whip_status(request: web.Request) -> web.Response:
    """The publisher session's counters (frames, keyframes, keyframe requests): the
    stream's owner, with the session's Location."""
    await authorize(request, request.match_info["stream"], "manage")
    return web.json_response(_session(request).status())


def setup(app: web.Application) -> None:
    """After media_routes.setup: WHIP ingest in the node process (as RTMP)."""
    node = app[NODE]
    config = node.config
    interval = float(os.environ.get(KEYFRAME_INTERVAL_ENV) or KEYFRAME_INTERVAL)
    ingest = WhipIngest(
        config.ice_servers, public_ips=config.ice_public_ips, keyframe_interval=interval
    )
    app[WHIP] = ingest

    async def start() -> None:
        if config.workers > 1:  # with --workers 1, media_routes applied them already
            restrict_host_addresses(config.ice_hosts)
            if config.udp_ports:
                restrict_udp_ports(asyncio.get_running_loop(), *config.udp_ports)

    node.add_service("whip", start, ingest.close_all)
    whip = "/live/{stream:[A-Za-z0-9_-]{1,64}}/whip"
    add_session_routes(
        app,
        whip,
        offer=whip_offer,
        options=whip_options,
        delete=whip_delete,
        patch=whip_patch,
    )
    app.router.add_get(whip + "/{session}", whip_status)
