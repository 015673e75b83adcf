"""A class pressing play together (issue 16): from the CROWD_JOINS-th viewer of a stream
to start within CROWD_WINDOW_S, a viewer starts on the ladder's lowest rung (a picture
at once from the source's cached keyframe, then the rung live) instead of a catch-up of
the source's whole GOP each: thirty of those through one access point flooded it for
seconds. Real node (one process serving viewers, so the count is this node's), ffmpeg
over RTMP, aiortc viewers decoding frames."""

from __future__ import annotations

import asyncio

from airclass_media.adapt import CROWD_JOINS

from .support import async_http_json
from .test_ladder import publish_live

VIEWERS = CROWD_JOINS + 3


async def test_a_class_pressing_play_together_starts_on_the_lowest_rung(
    node_factory, processes, players
):
    node = node_factory("--workers", "1")
    await publish_live(node, processes, "crowd", [])
    grants = [await node.atoken("crowd") for _ in range(VIEWERS)]
    started = await asyncio.gather(*(players(g["whep_url"], g["token"]) for g in grants))
    await asyncio.gather(*(p.wait_frames(video=45, audio=20, timeout=30) for p in started))

    # At least the viewers from the CROWD_JOINS-th on decode the 360p rung (negotiation
    # order is not request order); what came first keeps the source's 720p.
    heights = sorted(p.stats.height for p in started)
    assert heights.count(360) >= VIEWERS - CROWD_JOINS + 1, heights
    assert 720 in heights, heights
    for player in started:
        # One stream per viewer: its first picture (the source's keyframe) and then
        # the rung's, time never going back.
        pts = player.stats.video_pts
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts

    teacher = (await node.atoken("crowd", user_type="teacher", action="publish"))["token"]
    status, body, _ = await async_http_json(
        "GET",
        f"{node.url}/api/streams/crowd/viewers",
        headers={"Authorization": f"Bearer {teacher}"},
    )
    assert status == 200, body
    rungs = sorted(v["rung"] for v in body["viewers"])
    assert rungs.count("crowd~360p") == heights.count(360), rungs
    text = (await async_http_json("GET", f"{node.url}/metrics"))[1]
    line = next(x for x in text.splitlines() if x.startswith("airclass_webrtc_crowd_starts_total"))
    assert float(line.split()[-1]) == heights.count(360), line
