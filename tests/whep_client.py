"""A WHEP client on aiortc: plays a stream and counts decoded frames.

Used by the tests and the benchmarks (bench_media.py's latency probe, bench_cluster.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import time
from dataclasses import dataclass, field

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)


class WhepError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"WHEP POST failed: {status} {body}")
        self.status = status
        self.body = body


@dataclass
class PlayStats:
    video_frames: int = 0
    audio_frames: int = 0
    width: int = 0
    height: int = 0
    audio_rate: int = 0
    first_frame_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)
    last_video_frame: object = None
    #: Presentation timestamps of the decoded video frames (RTP clock), in arrival order.
    video_pts: list[int] = field(default_factory=list)

    @property
    def first_frame_delay(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.started_at


class WhepPlayer:
    """One WHEP session: POST an offer, play what comes, DELETE at the end."""

    def __init__(
        self,
        whep_url: str,
        token: str,
        keep_last_frame: bool = False,
        ice_servers: list[RTCIceServer] | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self.whep_url = whep_url
        #: Client SSLContext for an https WHEP URL (e.g. trusting a private CA).
        self.ssl = ssl
        self.token = token
        self.keep_last_frame = keep_last_frame
        # No STUN server unless given (a TURN relay, say): aiortc's default (a public one)
        # cannot be reached from tests and costs a 5 s gathering timeout per player.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers or []))
        self.stats = PlayStats()
        self.location: str | None = None
        self.etag: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.frame_event = asyncio.Event()

    async def start(self) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession(connector=self._connector()) as http,
            http.post(self.whep_url, data=self.pc.localDescription.sdp, headers=headers) as resp,
        ):
            body = await resp.text()
            if resp.status != 201:
                raise WhepError(resp.status, body)
            self.location = str(resp.url.join(aiohttp.client.URL(resp.headers["Location"])))
            self.etag = resp.headers.get("ETag")
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

    def _connector(self) -> aiohttp.TCPConnector | None:
        return aiohttp.TCPConnector(ssl=self.ssl) if self.ssl is not None else None

    async def _consume(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.stats.video_frames += 1
                    self.stats.video_pts.append(frame.pts)
                    self.stats.width, self.stats.height = frame.width, frame.height
                    if self.stats.first_frame_at is None:
                        self.stats.first_frame_at = now
                    if self.keep_last_frame:
                        self.stats.last_video_frame = frame
                    self.frame_event.set()
                else:
                    self.stats.audio_frames += 1
                    self.stats.audio_rate = frame.sample_rate
        except MediaStreamError:
            pass

    async def wait_frames(self, video: int, audio: int = 0, timeout: float = 20) -> PlayStats:
        """Wait until at least this many more frames arrived."""
        want_v = self.stats.video_frames + video
        want_a = self.stats.audio_frames + audio
        deadline = time.monotonic() + timeout
        while self.stats.video_frames < want_v or self.stats.audio_frames < want_a:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"got {self.stats.video_frames}/{want_v} video, "
                    f"{self.stats.audio_frames}/{want_a} audio frames"
                )
            self.frame_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.frame_event.wait(), min(left, 0.5))
        return self.stats

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.location:
            with contextlib.suppress(aiohttp.ClientError):
                async with (
                    aiohttp.ClientSession(connector=self._connector()) as http,
                    http.delete(self.location),
                ):
                    pass
        await self.pc.close()
