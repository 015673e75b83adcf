"""A class pressing play together (issue 16): from the CROWD_JOINS-th viewer of a stream
to start within CROWD_WINDOW_S, a viewer starts on the ladder's lowest rung (a picture
at once from the source's cached keyframe, then the rung live) instead of a catch-up of
the source's whole GOP each: thirty of those through one access point flooded it for
seconds. Real node (one process serving viewers, so the count is this node's), ffmpeg
over RTMP, aiortc viewers decoding frames."""

from __future__ import annotations

import asyncio

from airclass_media.adapt import CROWD_JOINS, CROWD_SILENT_S, UP_HOLD_S

from .support import async_http_json, async_wait_for
from .test_ladder import publish_live

VIEWERS = CROWD_JOINS + 3


async def crowd(node, processes, players, name: str, remb: bool = True) -> list:
    """A live stream with its ladder, and VIEWERS players pressing play at once (with
    `remb` False they never tell the node their rate, as some WHEP players)."""
    await publish_live(node, processes, name, [])
    grants = [await node.atoken(name) for _ in range(VIEWERS)]

    async def play(grant):
        player = await players(grant["whep_url"], grant["token"])
        if not remb:  # before DTLS is up: no RTP has reached the estimator yet
            for transceiver in player.pc.getTransceivers():
                transceiver.receiver._RTCRtpReceiver__remote_bitrate_estimator = None
        return player

    return await asyncio.gather(*(play(g) for g in grants))


async def crowd_starts(node) -> float:
    text = (await async_http_json("GET", f"{node.url}/metrics"))[1]
    line = next(x for x in text.splitlines() if x.startswith("airclass_webrtc_crowd_starts_total"))
    return float(line.split()[-1])


async def test_a_class_pressing_play_together_starts_on_the_lowest_rung(
    node_factory, processes, players
):
    node = node_factory("--workers", "1")
    started = await crowd(node, processes, players, "crowd")
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
    assert await crowd_starts(node) == heights.count(360)


async def test_a_crowd_start_that_never_reports_its_rate_gets_the_source(
    node_factory, processes, players
):
    """Players that send no REMB and lose nothing: after CROWD_SILENT_S (and each its
    jitter) they get the source, as any player that says nothing would have."""
    node = node_factory("--workers", "1")
    started = await crowd(node, processes, players, "silent", remb=False)
    await asyncio.gather(*(p.wait_frames(video=30, timeout=30) for p in started))
    assert await crowd_starts(node) >= VIEWERS - CROWD_JOINS + 1
    await async_wait_for(
        lambda: all(p.stats.height == 720 for p in started),
        CROWD_SILENT_S + UP_HOLD_S + 10,
        "every player back on the 720p source",
    )
    for player in started:
        pts = player.stats.video_pts
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), pts
