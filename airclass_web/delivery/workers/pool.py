"""The node's media workers: supervised processes, and WHEP requests routed to them.

Each worker (`worker.py`) serves HTTP on its own unix socket and pulls streams from the
node's `feed.LocalFeed`. A new session goes to the least-loaded worker; its public id is
`w<index>-<worker's id>`, so PATCH and DELETE find the worker again. A worker that dies
loses only its sessions (reported closed at once; their players reconnect) and is
started again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from airclass_media.hub import Stream, StreamHub
from airclass_media.webrtc import BadOffer, Overloaded

from ...config import Config
from .feed import LocalFeed
from .stats import QUANTILES, pool_families, process_cpu_seconds
from .viewers import (
    BadCandidate,
    OnClosed,
    Opened,
    RecentlyEnded,
    SessionNotFound,
    StaleIceState,
)

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
RESTART_MIN = 0.5
RESTART_MAX = 10.0
#: A worker that ran this long before dying is restarted at once (not a crash loop).
HEALTHY_RUN_SECONDS = 30.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
#: Longest unix socket path (sun_path is 108 bytes with the final NUL).
MAX_SOCKET_PATH = 100
WORKER_URL = "http://airclass-worker"
#: Snapshot counters a restarted worker's successor continues from (they only go up).
COUNTERS = ("sessions_opened", "keyframe_replays", "nacks", "queue_delay_count", "queue_delay_sum")


def split_port_range(ports: tuple[int, int] | None, count: int) -> list[str]:
    """The UDP port range cut into `count` contiguous parts ("" each when no range)."""
    if ports is None:
        return [""] * count
    low, high = ports
    size = (high - low + 1) // count
    parts = []
    for i in range(count):
        start = low + i * size
        end = high if i == count - 1 else start + size - 1
        parts.append(f"{start}-{end}")
    return parts


def _error_text(body: str, default: str) -> str:
    """The message of a worker's JSON error body."""
    try:
        return str(json.loads(body).get("error", default))
    except (ValueError, AttributeError):
        return default


def _empty_snapshot() -> dict:
    return {
        "viewers": 0,
        "sessions_opened": 0,
        "keyframe_replays": 0,
        "queue_delay_count": 0,
        "queue_delay_sum": 0.0,
        "queue_delay": {str(q): 0.0 for q in QUANTILES},
    }


@dataclass(slots=True)
class Session:
    worker: int
    internal_id: str
    stream: str
    user_id: str


@dataclass
class WorkerHandle:
    index: int
    socket: Path
    udp_ports: str
    proc: asyncio.subprocess.Process | None = None
    http: aiohttp.ClientSession | None = None
    ready: bool = False
    #: Offers sent to it and not answered yet (counted as load).
    pending: int = 0
    restarts: int = 0
    #: Public session id -> session, while open.
    sessions: dict[str, Session] = field(default_factory=dict)
    #: Worker ids reported closed before their offer's answer came back.
    closed_early: set[str] = field(default_factory=set)
    snapshot: dict = field(default_factory=_empty_snapshot)
    #: Counter totals of its previous processes, so counters never go down.
    carried: dict = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def label(self) -> str:
        return str(self.index)

    @property
    def load(self) -> int:
        return len(self.sessions) + self.pending

    def public_id(self, internal_id: str) -> str:
        return f"w{self.index}-{internal_id}"


def serving(path: Path) -> bool:
    """Whether a live process accepts connections on this unix socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class WorkerPool:
    """Viewer backend spreading sessions over `config.workers` worker processes."""

    def __init__(
        self,
        config: Config,
        hub: StreamHub,
        on_closed: OnClosed | None = None,
        on_connected: OnClosed | None = None,
    ) -> None:
        self.config = config
        self.on_closed = on_closed
        self.on_connected = on_connected
        self.run_dir = self._run_dir(config.data_dir, config.node_id)
        self.feed = LocalFeed(hub, self.run_dir / "node.sock")
        ports = split_port_range(config.udp_ports, config.workers)
        self.workers = [
            WorkerHandle(i, self.run_dir / f"w{i}.sock", ports[i]) for i in range(config.workers)
        ]
        self.ended = RecentlyEnded()
        self.sessions_opened = 0
        self._stopping = False
        self._supervisors: list[asyncio.Task] = []
        self._tasks: set[asyncio.Task] = set()

    @staticmethod
    def _run_dir(data_dir: Path, node_id: str) -> Path:
        """A directory of this node's own, that only this user may enter, for the unix
        sockets: nodes sharing a data directory never take over each other's sockets."""
        runs = data_dir.resolve() / "run"
        run = runs / node_id
        if len(str(run / "w999.sock")) > MAX_SOCKET_PATH:
            return Path(tempfile.mkdtemp(prefix="airclass-"))
        runs.mkdir(parents=True, exist_ok=True)
        runs.chmod(0o700)
        for other in runs.iterdir():
            # Left by a node that was killed (not one that is starting right now).
            settled = time.time() - other.stat().st_mtime > START_TIMEOUT
            if other.is_dir() and settled and not serving(other / "node.sock"):
                shutil.rmtree(other, ignore_errors=True)
        run.mkdir(exist_ok=True)
        run.chmod(0o700)
        return run

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.feed.start()
        for worker in self.workers:
            task = asyncio.ensure_future(self._supervise(worker))
            task.set_name(f"media-worker-{worker.index}")
            self._supervisors.append(task)
        waits = [asyncio.wait_for(w.started.wait(), START_TIMEOUT) for w in self.workers]
        results = await asyncio.gather(*waits, return_exceptions=True)
        up = sum(1 for r in results if not isinstance(r, BaseException))
        log.info("%d of %d media workers ready", up, len(self.workers))

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self._terminate(w) for w in self.workers))
        for task in self._supervisors:
            task.cancel()
        for task in self._supervisors:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in list(self._tasks):
            task.cancel()
        await self.feed.stop()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    async def _terminate(self, worker: WorkerHandle) -> None:
        proc = worker.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _supervise(self, worker: WorkerHandle) -> None:
        delay = RESTART_MIN
        while not self._stopping:
            began = time.monotonic()
            code = None
            try:
                await self._launch(worker)
                worker.ready = True
                worker.started.set()
                code = await worker.proc.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: restart it
                log.error("media worker %d failed to start: %s", worker.index, exc)
            finally:
                await self._lost(worker)
            if self._stopping:
                return
            worker.restarts += 1
            log.warning(
                "media worker %d exited (%s); its viewers reconnect; restarting",
                worker.index,
                code,
            )
            if time.monotonic() - began > HEALTHY_RUN_SECONDS:
                delay = RESTART_MIN
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_MAX)

    def _command(self, worker: WorkerHandle) -> list[str]:
        config = self.config
        args = [
            sys.executable,
            "-m",
            "airclass_web.delivery.workers.worker",
            "--index",
            str(worker.index),
            "--socket",
            str(worker.socket),
            "--node-socket",
            str(self.feed.path),
            "--parent-pid",
            str(os.getpid()),
            "--log-level",
            config.log_level,
        ]
        for flag, values in (
            ("--ice-host", config.ice_hosts),
            ("--ice-public-ip", config.ice_public_ips),
            ("--ice-server", config.ice_servers),
        ):
            for value in values:
                args += [flag, value]
        if worker.udp_ports:
            args += ["--udp-ports", worker.udp_ports]
        return args

    async def _launch(self, worker: WorkerHandle) -> None:
        """Start the process, wait for READY, follow its events."""
        worker.proc = await asyncio.create_subprocess_exec(
            *self._command(worker),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
        )
        line = await asyncio.wait_for(worker.proc.stdout.readline(), START_TIMEOUT)
        if line.strip() != b"READY":
            raise RuntimeError(f"worker said {line!r}")
        worker.http = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(worker.socket)), timeout=REQUEST_TIMEOUT
        )
        events = await worker.http.ws_connect(f"{WORKER_URL}/events", heartbeat=5.0)
        self._spawn(self._follow(worker, events), f"worker-{worker.index}-events")
        log.info("media worker %d ready (pid %d)", worker.index, worker.proc.pid)

    async def _follow(self, worker: WorkerHandle, events: aiohttp.ClientWebSocketResponse) -> None:
        """Sessions that ended and stats, until the worker goes; then make sure it is gone."""
        proc = worker.proc
        try:
            async for msg in events:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                if event["type"] == "closed":
                    self._worker_closed(worker, event["id"])
                elif event["type"] == "connected":
                    public = worker.public_id(event["id"])
                    if public in worker.sessions and self.on_connected is not None:
                        self.on_connected(public)
                elif event["type"] == "stats":
                    worker.snapshot = {k: v for k, v in event.items() if k != "type"}
        finally:
            await events.close()
            if proc is not None and proc.returncode is None and not self._stopping:
                log.error("media worker %d: event channel lost; killing it", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _worker_closed(self, worker: WorkerHandle, internal_id: str) -> None:
        public = worker.public_id(internal_id)
        if public in worker.sessions:
            self._end(worker, public)
        else:
            worker.closed_early.add(internal_id)

    def _end(self, worker: WorkerHandle, public_id: str) -> None:
        session = worker.sessions.pop(public_id)
        self.ended.add(public_id, session.stream)
        if self.on_closed is not None:
            try:
                self.on_closed(public_id)
            except Exception:
                log.exception("on_closed(%s) failed", public_id)

    async def _lost(self, worker: WorkerHandle) -> None:
        """The worker process is gone (or never came up): its sessions ended."""
        worker.ready = False
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
            await worker.proc.wait()
        for public_id in list(worker.sessions):
            self._end(worker, public_id)
        worker.closed_early.clear()
        for key in COUNTERS:
            worker.carried[key] = worker.carried.get(key, 0) + worker.snapshot.get(key, 0)
        worker.snapshot = _empty_snapshot()
        if worker.http is not None:
            await worker.http.close()
            worker.http = None

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- routing -------------------------------------------------------------------------
    def _parse(self, public_id: str) -> tuple[WorkerHandle, str] | None:
        head, sep, internal = public_id.partition("-")
        if not sep or not head.startswith("w") or not head[1:].isdigit():
            return None
        index = int(head[1:])
        if index >= len(self.workers):
            return None
        return self.workers[index], internal

    def _open_session(self, public_id: str, stream_name: str) -> tuple[WorkerHandle, Session]:
        parsed = self._parse(public_id)
        if parsed is not None:
            worker, _ = parsed
            session = worker.sessions.get(public_id)
            if session is not None and session.stream == stream_name:
                return worker, session
        raise SessionNotFound(public_id)

    async def open(self, stream: Stream, offer_sdp: str, user_id: str) -> Opened:
        """Offer to the least-loaded worker; raises BadOffer or Overloaded."""
        ready = [w for w in self.workers if w.ready and w.http is not None]
        if not ready:
            raise Overloaded("no media worker is ready")
        worker = min(ready, key=lambda w: (w.load, w.index))
        body = {"stream": stream.name, "offer": offer_sdp, "user_id": user_id, "live": stream.live}
        worker.pending += 1
        try:
            async with worker.http.post(f"{WORKER_URL}/sessions", json=body) as resp:
                status, answer = resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, AttributeError, ValueError) as exc:
            raise Overloaded(f"media worker {worker.index} unavailable: {exc}") from exc
        finally:
            worker.pending -= 1
        if status == 400:
            raise BadOffer(answer.get("error", "bad offer"))
        if status != 201:
            raise Overloaded(f"media worker {worker.index}: {answer.get('error', status)}")
        internal = answer["id"]
        public = worker.public_id(internal)
        self.sessions_opened += 1
        if internal in worker.closed_early or not worker.ready:
            worker.closed_early.discard(internal)
            self.ended.add(public, stream.name)  # ended already: the player will retry
        else:
            worker.sessions[public] = Session(worker.index, internal, stream.name, user_id)
        return Opened(public, answer["answer"])

    def active(self, session_id: str, stream_name: str | None = None) -> bool:
        parsed = self._parse(session_id)
        if parsed is None:
            return False
        session = parsed[0].sessions.get(session_id)
        return session is not None and stream_name in (None, session.stream)

    async def add_candidates(
        self, session_id: str, stream_name: str, fragment: str, if_match: str | None = None
    ) -> str | None:
        """Trickle or ICE restart on the session's worker; the restart's answer fragment."""
        worker, session = self._open_session(session_id, stream_name)
        url = f"{WORKER_URL}/sessions/{session.internal_id}"
        headers = {"If-Match": if_match} if if_match else {}
        try:
            async with worker.http.patch(
                url, params={"stream": stream_name}, data=fragment.encode(), headers=headers
            ) as resp:
                status, text = resp.status, await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError, AttributeError, ValueError) as exc:
            raise SessionNotFound(session_id) from exc
        if status == 404:
            raise SessionNotFound(session_id)
        if status == 400:
            raise BadCandidate(_error_text(text, "bad candidate"))
        if status == 412:
            raise StaleIceState(_error_text(text, "stale ICE state"))
        return text if status == 200 else None

    async def close(self, session_id: str, stream_name: str) -> bool:
        """True when the session was open or ended lately (DELETE is idempotent)."""
        try:
            worker, session = self._open_session(session_id, stream_name)
        except SessionNotFound:
            return self.ended.has(session_id, stream_name)
        url = f"{WORKER_URL}/sessions/{session.internal_id}"
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, AttributeError):
            async with worker.http.delete(url, params={"stream": stream_name}) as resp:
                await resp.read()
        if session_id in worker.sessions:
            self._end(worker, session_id)
        return True

    # -- observation --------------------------------------------------------------------
    @property
    def viewer_count(self) -> int:
        return sum(len(w.sessions) for w in self.workers)

    def viewers_of(self, stream_name: str) -> int:
        return sum(1 for w in self.workers for s in w.sessions.values() if s.stream == stream_name)

    def user_ids(self) -> set[str]:
        return {s.user_id for w in self.workers for s in w.sessions.values()}

    async def statuses(self, stream_name: str | None = None) -> list[dict]:
        """Every worker's ViewerSession.status() dicts, with public ids and `worker`."""
        params = {"stream": stream_name} if stream_name else {}

        async def of(worker: WorkerHandle) -> list[dict]:
            if worker.http is None:
                return []
            try:
                async with worker.http.get(f"{WORKER_URL}/sessions", params=params) as resp:
                    body = await resp.json()
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                return []
            out = []
            for status in body["sessions"]:
                status["id"] = worker.public_id(status["id"])
                status["worker"] = worker.index
                out.append(status)
            return out

        results = await asyncio.gather(*(of(w) for w in self.workers))
        return [status for statuses in results for status in statuses]

    def status(self) -> list[dict]:
        return [
            {
                "worker": w.index,
                "pid": w.proc.pid if w.proc is not None else None,
                "ready": w.ready,
                "viewers": len(w.sessions),
                "restarts": w.restarts,
                "udp_ports": w.udp_ports,
            }
            for w in self.workers
        ]

    def metrics(self) -> list:
        rows = []
        for w in self.workers:
            snapshot = dict(w.snapshot)
            for key, carried in w.carried.items():
                snapshot[key] = snapshot.get(key, 0) + carried
            snapshot["viewers"] = len(w.sessions)
            snapshot["sessions_opened"] = max(snapshot["sessions_opened"], 0)
            alive = w.proc is not None and w.proc.returncode is None
            cpu = process_cpu_seconds(w.proc.pid) if alive else 0.0
            rows.append((w.label, snapshot, cpu, w.restarts, w.ready))
        return pool_families(rows)
