"""A media worker process: WebRTC viewers of its share of the node, fed by the node.

    python -m airclass_web.delivery.workers.worker --index I --socket W.sock \
        --node-socket N.sock ...

It owns its viewers' ICE/DTLS state and UDP ports (a `WebRtcEgress`) and a local
`StreamHub` that pulls each watched stream from the node over the local relay
(`feed.LocalFeed`). The node talks to it over HTTP on its own unix socket:

- POST /sessions {stream, offer, user_id, live} -> 201 {id, answer} | 400 | 404 | 503
- PATCH /sessions/ID?stream=NAME (sdpfrag) -> 204 | 400 | 404 | 422
- DELETE /sessions/ID?stream=NAME -> 200 | 404
- GET /sessions[?stream=NAME] -> {"sessions": [ViewerSession.status(), ...]}
- GET /events (WebSocket) -> {"type": "hello"|"closed"|"stats", ...}: sessions that ended,
  and the egress counters every second.

It prints READY on stdout once it serves, and exits when the node does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys

import aiohttp
from aiohttp import web

from airclass_media.hub import StreamHub
from airclass_media.ice import restrict_host_addresses, restrict_udp_ports
from airclass_media.webrtc import BadOffer, Overloaded, WebRtcEgress
from relay.manager import FIRST_KEYFRAME_WAIT, RelayManager

from .stats import egress_snapshot
from .viewers import BadCandidate, LocalViewers, SessionNotFound, StaleIceState

log = logging.getLogger("airclass.worker")

#: The node admits viewers; a worker never refuses one for capacity.
UNLIMITED = 1 << 30
STATS_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


#: Trickle and ICE-restart fragments (RFC 8840).
SDPFRAG = "application/trickle-ice-sdpfrag"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.hub = StreamHub()
        self.egress = WebRtcEgress(
            args.ice_server, capacity=UNLIMITED, public_ips=args.ice_public_ip
        )
        self.relays = RelayManager(
            self.hub,
            "http://airclass-node",
            lambda method, path: {},
            connector=lambda: aiohttp.UnixConnector(path=args.node_socket),
        )
        self.viewers = LocalViewers(
            self.egress,
            on_closed=self._closed,
            resolve=self.relays.resolve,
            on_connected=self._connected,
        )
        self._events: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task] = set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/sessions", self.open)
        app.router.add_patch("/sessions/{id}", self.patch)
        app.router.add_delete("/sessions/{id}", self.delete)
        app.router.add_get("/sessions", self.sessions)
        app.router.add_get("/events", self.events)
        return app

    # -- sessions --------------------------------------------------------------------
    async def open(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = str(body["stream"])
        if name not in self.relays.relays:
            # Start pulling the stream from the node. A live stream's relay opens with
            # the node's cached GOP: wait for it, so the viewer starts from a keyframe.
            pulling = asyncio.ensure_future(self.relays.resolve(name))
            self._keep(pulling)
            if body.get("live"):
                with contextlib.suppress(TimeoutError):
                    resolved = await asyncio.wait_for(
                        asyncio.shield(pulling), FIRST_KEYFRAME_WAIT + 1
                    )
                    if resolved is None:
                        return _error(404, f"the node has no stream {name}")
        stream = self.hub.stream(name)
        try:
            opened = await self.viewers.open(stream, str(body["offer"]), str(body["user_id"]))
        except BadOffer as exc:
            return _error(400, str(exc))
        except Overloaded as exc:
            return _error(503, str(exc))
        return web.json_response({"id": opened.id, "answer": opened.answer_sdp}, status=201)

    async def patch(self, request: web.Request) -> web.Response:
        fragment = await request.text()
        try:
            answer = await self.viewers.add_candidates(
                request.match_info["id"],
                request.query.get("stream", ""),
                fragment,
                request.headers.get("If-Match"),
            )
        except SessionNotFound:
            return _error(404, "unknown WHEP session")
        except StaleIceState as exc:
            return _error(412, str(exc))
        except BadCandidate as exc:
            return _error(400, f"bad candidate: {exc}")
        if answer is None:
            return web.Response(status=204)
        return web.Response(status=200, text=answer, content_type=SDPFRAG)

    async def delete(self, request: web.Request) -> web.Response:
        found = await self.viewers.close(request.match_info["id"], request.query.get("stream", ""))
        return web.Response(status=200) if found else _error(404, "unknown WHEP session")

    async def sessions(self, request: web.Request) -> web.Response:
        statuses = await self.viewers.statuses(request.query.get("stream"))
        return web.json_response({"sessions": statuses})

    # -- events to the node ------------------------------------------------------------
    async def events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=5.0)
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "sessions": list(self.egress.sessions)})
        self._events.add(ws)
        try:
            async for _msg in ws:
                pass
        finally:
            self._events.discard(ws)
        return ws

    def _send(self, event: dict) -> None:
        text = json.dumps(event)
        for ws in list(self._events):
            if not ws.closed:
                self._keep(asyncio.ensure_future(self._send_to(ws, text)))

    @staticmethod
    async def _send_to(ws: web.WebSocketResponse, text: str) -> None:
        """One event to the node; a channel closing meanwhile is the node going away
        (the node kills and restarts a worker whose channel it lost)."""
        with contextlib.suppress(ConnectionError):
            await ws.send_str(text)

    def _closed(self, session_id: str) -> None:
        self._send({"type": "closed", "id": session_id})

    def _connected(self, session_id: str) -> None:
        self._send({"type": "connected", "id": session_id})

    async def _stats(self) -> None:
        while True:
            feeds = {name: client.hop for name, (client, _) in self.relays.relays.items()}
            self._send({"type": "stats", **egress_snapshot(self.egress, feeds)})
            await asyncio.sleep(STATS_SECONDS)

    def _keep(self, task: asyncio.Future) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        args = self.args
        restrict_host_addresses(args.ice_host)
        if args.udp_ports:
            low, _, high = args.udp_ports.partition("-")
            restrict_udp_ports(asyncio.get_running_loop(), int(low), int(high))
        await self.relays.start()
        await self.viewers.start()
        runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.socket)  # left by a worker that was killed
        await web.UnixSite(runner, args.socket).start()
        stats = asyncio.ensure_future(self._stats())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print("READY", flush=True)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the node reads nothing more
        log.info("media worker %d serving on %s", args.index, args.socket)
        try:
            await stop.wait()
        finally:
            # One stop is enough: a second SIGTERM during the clean-up (the node died and
            # its process group is being ended) must not hit a closing event loop.
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)
            stats.cancel()
            for ws in list(self._events):
                await ws.close()
            await runner.cleanup()
            await self.viewers.stop()
            await self.relays.stop()
            for task in list(self._tasks):
                task.cancel()


def die_with_parent(parent_pid: int) -> None:
    """Get SIGTERM when the node process dies (Linux), even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent_pid and os.getppid() != parent_pid:
        sys.exit(0)  # the node died before prctl took effect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="airclass-media-worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--socket", required=True, help="unix socket this worker serves on")
    parser.add_argument("--node-socket", required=True, help="the node's local relay socket")
    parser.add_argument("--parent-pid", type=int, default=0)
    parser.add_argument("--ice-host", action="append", default=[])
    parser.add_argument("--ice-public-ip", action="append", default=[])
    parser.add_argument("--ice-server", action="append", default=[])
    parser.add_argument("--udp-ports", default="", metavar="LO-HI")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ...logsafe import setup_logging

    setup_logging(
        args.log_level, f"%(asctime)s %(levelname)s worker-{args.index} %(name)s: %(message)s"
    )
    die_with_parent(args.parent_pid)
    asyncio.run(Worker(args).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
