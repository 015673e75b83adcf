"""What the delivery routes share: the app keys of the media services and the HLS origin,
the HLS viewer count the stream listing shows, the ICE Link headers and the trickle PATCH
of WHEP and WHIP alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from airclass_media.hls import HlsOrigin
from airclass_media.webrtc import ice_etag

from ..errors import ApiError
from .ice_servers import link_header, viewer_ice_servers
from .media import MediaServices
from .workers.viewers import BadCandidate, SessionNotFound, StaleIceState

MEDIA = web.AppKey("media", MediaServices)
HLS = web.AppKey("hls", HlsOrigin)


def hls_viewer_count(app: web.Application, stream: str) -> int:
    """Distinct clients that asked for the stream's playlist lately."""
    origin = app.get(HLS)
    return origin.viewers_of(stream) if origin is not None else 0


def ice_link_headers(media: MediaServices, user_id: str | None = None) -> list[tuple[str, str]]:
    """STUN/TURN servers; TURN credentials only for a viewer with a valid token."""
    return [link_header(s) for s in viewer_ice_servers(media.node.config, user_id)]


SDPFRAG = "application/trickle-ice-sdpfrag"


async def trickle(
    request: web.Request, add: Callable[[str, str | None], Awaitable[str | None]], unknown: str
) -> web.Response:
    """PATCH for WHEP and WHIP alike (RFC 9725 section 4.3): trickled candidates 204; an
    ICE restart (new `a=ice-ufrag`) 200 with our answer fragment and its ETag; 415 (not an
    sdpfrag), 404 (session gone: `add` raised KeyError or SessionNotFound), 412 (If-Match
    neither "*" nor the session's ETag), 400 (bad line or credentials). `add(fragment,
    if_match)`."""
    if request.content_type != SDPFRAG:
        raise ApiError(415, f"PATCH takes {SDPFRAG}")
    fragment = await request.text()
    try:
        answer = await add(fragment, request.headers.get("If-Match"))
    except (KeyError, SessionNotFound) as exc:
        raise ApiError(404, unknown) from exc
    except StaleIceState as exc:
        raise ApiError(412, str(exc)) from exc
    except BadCandidate as exc:
        raise ApiError(400, f"bad candidate: {exc}") from exc
    if answer is None:
        return web.Response(status=204)
    headers = {"ETag": ice_etag(answer)}
    return web.Response(status=200, text=answer, content_type=SDPFRAG, headers=headers)


def add_session_routes(app: web.Application, path: str, *, offer, options, delete, patch) -> None:
    """The routes of a WHEP or WHIP endpoint `path` and its sessions (`path/ID`): POST an
    offer, OPTIONS (CORS pre-flight) on both, DELETE and PATCH (trickle) on a session."""
    app.router.add_route("OPTIONS", path, options)
    app.router.add_post(path, offer)
    app.router.add_route("OPTIONS", path + "/{session}", options)
    app.router.add_delete(path + "/{session}", delete)
    app.router.add_patch(path + "/{session}", patch)
