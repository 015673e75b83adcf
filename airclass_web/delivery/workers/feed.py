"""Node side of the local relay: each worker pulls the streams its viewers watch.

A worker is a local sub node: it connects to this unix socket with `relay.client`
(`/cluster/relay/<stream>`, the relay's framing), and the node feeds it once per packet
with a `relay.server.RelaySender`. The socket lives in a directory only this user can
enter, which is its only access control.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import WSMsgType, web

from airclass_media.hub import StreamHub
from relay.server import DEFAULT_KINDS, RelayServer, on_downstream_message

log = logging.getLogger(__name__)


class LocalFeed:
    """Serves `/cluster/relay/<stream>` of the node's hub on a unix socket."""

    def __init__(self, hub: StreamHub, path: Path) -> None:
        self.hub = hub
        self.path = path
        self.relays = RelayServer()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/cluster/relay/{stream}", self._relay)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def stop(self) -> None:
        self.relays.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        stream = self.hub.get(request.match_info["stream"])
        if stream is None:
            raise web.HTTPNotFound()
        kinds = [k for k in request.query.get("kinds", ",".join(DEFAULT_KINDS)).split(",") if k]
        ws = web.WebSocketResponse(heartbeat=5.0, compress=False)
        await ws.prepare(request)
        serving = asyncio.ensure_future(self.relays.serve(stream, ws.send_bytes, kinds))
        serving.add_done_callback(lambda _: asyncio.ensure_future(ws.close()))
        try:
            async for msg in ws:  # only keyframe requests come from the worker
                if msg.type == WSMsgType.ERROR:
                    break
                if msg.type == WSMsgType.TEXT:
                    on_downstream_message(stream, msg.data)
        finally:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await serving
            await ws.close()
        return ws
