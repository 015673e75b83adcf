"""HLS fallback endpoints: `GET /live/NAME/index.m3u8` and its init segments, segments and
parts (airclass_media.hls); `multivariant.m3u8` lists the ladder's renditions
(`/live/NAME~RUNG/index.m3u8`). Token in the query (`?token=` / `?jwt=`) or as Bearer,
the same rules as WHEP (`http.authorize` at every request, segments and parts included); a query
token is repeated in every URI of the playlist."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from airclass_media.hls import HlsOrigin, HlsSegmenter, multivariant_playlist
from airclass_media.hub import Stream

from ..errors import ApiError
from ..http import authorize, guards_of
from ..node import NODE, cluster_hooks_of, node_of
from .shared import HLS

#: How long a first request waits for the stream's first part (a keyframe away).
FIRST_PART_WAIT = 8.0
PLAYLIST = "application/vnd.apple.mpegurl"
NO_CACHE = {"Cache-Control": "no-cache, no-store"}


async def _stream(request: web.Request, name: str) -> Stream:
    stream = node_of(request).hub.get(name)
    resolve = cluster_hooks_of(request).stream_resolver
    if stream is None and resolve is not None:
        stream = await resolve(name)  # a sub node pulls it from the main
    if stream is None:
        raise ApiError(404, f"unknown stream {name}")
    return stream


def _int_param(request: web.Request, key: str) -> int | None:
    raw = request.query.get(key)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise ApiError(400, f"{key} must be a non-negative integer")
    return int(raw)


async def playlist(request: web.Request) -> web.Response:
    """The media playlist; `_HLS_msn`/`_HLS_part` block until that part exists."""
    name = request.match_info["stream"]
    claims = await authorize(request, name, "watch")
    stream = await _stream(request, name)
    origin = request.app[HLS]
    segmenter = origin.segmenter(stream)
    origin.seen(name, f"{claims.user_id}@{guards_of(request).ip(request)}")
    msn, part = _int_param(request, "_HLS_msn"), _int_param(request, "_HLS_part")
    if not segmenter.ready and not await segmenter.wait(lambda: segmenter.ready, FIRST_PART_WAIT):
        raise ApiError(503, f"stream {name} is not live", headers={"Retry-After": "2"})
    if msn is not None:  # RFC 8216bis 6.2.5.2: 400 too far ahead, 503 not in time
        status = await segmenter.reload_status(msn, part)
        if status != 200:
            raise ApiError(status, f"_HLS_msn={msn} _HLS_part={part}: not in the playlist")
    token = request.query.get("token") or request.query.get("jwt")
    query = f"?token={quote(token, safe='')}" if token else ""
    return web.Response(
        text=segmenter.playlist(query), content_type=PLAYLIST, charset="utf-8", headers=NO_CACHE
    )


async def multivariant(request: web.Request) -> web.Response:
    """The stream and its ladder's renditions (EXT-X-STREAM-INF), for players that switch."""
    name = request.match_info["stream"]
    await authorize(request, name, "watch")
    stream = await _stream(request, name)
    hub = node_of(request).hub
    token = request.query.get("token") or request.query.get("jwt")
    query = f"?token={quote(token, safe='')}" if token else ""
    text = multivariant_playlist(stream, lambda n: s.info if (s := hub.get(n)) else None, query)
    if text is None:
        raise ApiError(503, f"stream {name} is not live", headers={"Retry-After": "2"})
    return web.Response(text=text, content_type=PLAYLIST, charset="utf-8", headers=NO_CACHE)


async def _segmenter(request: web.Request) -> HlsSegmenter:
    name = request.match_info["stream"]
    await authorize(request, name, "watch")
    segmenter = request.app[HLS].get(name)
    if segmenter is None:
        raise ApiError(404, "no HLS for this stream now: ask for its playlist")
    return segmenter


async def init_segment(request: web.Request) -> web.Response:
    segmenter = await _segmenter(request)
    data = segmenter.inits.get(int(request.match_info["init"]))
    if data is None:
        raise ApiError(404, "unknown init segment")
    return web.Response(body=data, content_type="video/mp4")


async def media_segment(request: web.Request) -> web.Response:
    segmenter = await _segmenter(request)
    data = segmenter.segment(int(request.match_info["msn"]))
    if data is None:
        raise ApiError(404, "segment gone or not complete")
    return web.Response(body=data, content_type="video/iso.segment")


async def media_part(request: web.Request) -> web.Response:
    """A part; the one being cut (the playlist's preload hint) is answered once it is."""
    segmenter = await _segmenter(request)
    msn, index = int(request.match_info["msn"]), int(request.match_info["part"])
    data = segmenter.part(msn, index)
    hint = segmenter.next_part()
    if data is None and hint is not None and hint <= (msn, index) and msn <= hint[0] + 1:
        timeout = 3 * max(segmenter.part_target * 2, 1.0)
        await segmenter.wait(lambda: segmenter.part(msn, index) is not None, timeout)
        data = segmenter.part(msn, index)
    if data is None:
        raise ApiError(404, "part gone or not cut yet")
    return web.Response(body=data, content_type="video/iso.segment", headers=NO_CACHE)


def metrics(origin: HlsOrigin):
    def collect() -> list:
        viewers = GaugeMetricFamily(
            "airclass_hls_viewers", "Distinct recent HLS playlist clients", labels=["stream"]
        )
        memory = GaugeMetricFamily(
            "airclass_hls_memory_bytes", "Segments held in memory for HLS", labels=["stream"]
        )
        parts = CounterMetricFamily("airclass_hls_parts", "HLS parts cut", labels=["stream"])
        for name, count in origin.viewer_counts().items():
            viewers.add_metric([name], count)
        for name, segmenter in origin.segmenters.items():
            memory.add_metric([name], segmenter.memory_bytes)
            parts.add_metric([name], segmenter.parts_made)
        requests = CounterMetricFamily("airclass_hls_requests", "HLS requests served")
        requests.add_metric([], origin.requests)
        return [viewers, memory, parts, requests]

    return collect


def setup(app: web.Application) -> None:
    node = app[NODE]
    origin = HlsOrigin(node.config.hls_part_seconds)
    app[HLS] = origin
    node.add_service("hls", origin.start, origin.stop)
    node.add_metrics(metrics(origin))
    base = "/live/{stream:[A-Za-z0-9_-]{1,64}(?:~[0-9]{3,4}p)?}/"  # NAME~RUNG: a rendition
    app.router.add_get(base + "index.m3u8", playlist)
    app.router.add_get(base + "multivariant.m3u8", multivariant)
    app.router.add_get(base + "init{init:[0-9]{1,6}}.mp4", init_segment)
    app.router.add_get(base + "seg{msn:[0-9]{1,9}}.m4s", media_segment)
    app.router.add_get(base + "part{msn:[0-9]{1,9}}.{part:[0-9]{1,4}}.m4s", media_part)
