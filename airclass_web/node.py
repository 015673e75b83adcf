"""A node: the media services and the web app of one `airclass serve` process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from airclass_media.hub import Stream, StreamHub

from .auth import TokenService
from .config import Config
from .tls import TlsContext, https_redirect_app

if TYPE_CHECKING:
    from .access import StreamAccess
    from .store import Store

log = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


class StreamKeyLookup(Protocol):
    """What the node's users need of teachers' lasting RTMP stream keys (the classroom's
    StreamKeys): whose key this is."""

    async def teacher_of(self, key: str) -> str | None: ...


#: async (node, request, params) -> the teacher whose credentials the request carries, or None.
TeacherAuth = Callable[["Node", web.Request, dict], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class ClusterHooks:
    """What the cluster (airclass_web.cluster.Cluster.hooks) lends the media services, the
    delivery routes, the token routes and the recorder; None where it has nothing to say.
    Built by the composition root before them, on the app as CLUSTER_HOOKS."""

    #: async (user_id, stream) -> base URL of the node a viewer should watch from, None
    #: for this node. A cluster main sends students to a sub node.
    viewer_router: Callable[[str, str], Awaitable[str | None]] | None = None
    #: async (stream name) -> Stream | None for streams this node does not have yet: a
    #: sub (or any node with Redis) pulls the stream from its origin.
    stream_resolver: Callable[[str], Awaitable[Stream | None]] | None = None
    #: async (stream) -> None when this node may take the stream's publisher (it is now
    #: its origin), else the URL of the node that has it.
    claim_origin: Callable[[str], Awaitable[str | None]] | None = None
    #: async (stream): the publisher here left.
    release_origin: Callable[[str], Awaitable[None]] | None = None
    #: () -> where this node announces its recordings so that a stream's next origin
    #: continues them (cluster.recordings.RecordingHandoff, from the cluster's start
    #: when it has Redis), or None.
    recording_handoff: Callable[[], Any] = lambda: None


class Node:
    """Owns every long-lived service of a node and starts/stops them in order.

    The composition root (airclass_web.app.create_node) builds the store, the stream
    rules, the stream keys and the teacher check first and passes them in.
    Features register their services from their `setup` with `add_service`; `install(app)`
    hands them to the app's `cleanup_ctx`, so that the app runner starts them in
    registration order and stops in reverse the ones that started, also when a later
    start (a service, the HTTP listener) fails.
    """

    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        access: StreamAccess,
        stream_keys: StreamKeyLookup,
        teacher_auth: TeacherAuth,
    ) -> None:
        #: Resolved (airclass_web.app.node_config): derived values are filled in.
        self.config = config
        #: The persistent store (airclass_web.store.Store), opened by the classroom's start.
        self.store = store
        #: Stream ownership / viewing rules (airclass_web.access.StreamAccess).
        self.access = access
        #: Teachers' lasting RTMP stream keys (classroom.stream_keys.StreamKeys).
        self.stream_keys = stream_keys
        #: May this request publish as a teacher? (classroom.teacher_auth.teacher_check)
        self.teacher_auth = teacher_auth
        self.tokens = TokenService(config.jwt_secret, config.token_ttl)
        self.hub = StreamHub()
        #: The server SSLContext under --tls-cert (HTTPS and RTMPS), reloaded on SIGHUP.
        self.tls: TlsContext | None = None
        if config.tls:
            self.tls = TlsContext(config.tls_cert, config.tls_key)
        self._services: list[tuple[str, Hook, Hook]] = []
        self._started: list[tuple[str, Hook, Hook]] = []
        self._tasks: set[asyncio.Task] = set()
        self._metric_sources: list[Callable[[], list]] = []
        self.runner: web.AppRunner | None = None
        self._redirect_runner: web.AppRunner | None = None

    def add_metrics(self, source: Callable[[], list]) -> None:
        """source() returns Prometheus metric families; read at every scrape."""
        self._metric_sources.append(source)

    def extra_metrics(self) -> list:
        families: list = []
        for source in self._metric_sources:
            families.extend(source())
        return families

    def add_service(self, name: str, start: Hook, stop: Hook) -> None:
        self._services.append((name, start, stop))

    def install(self, app: web.Application) -> None:
        """Start and stop the services through `app.cleanup_ctx` (after every
        `add_service`): the background tasks are cancelled last."""
        app.cleanup_ctx.append(self._background_tasks)
        for service in self._services:
            app.cleanup_ctx.append(self._service_context(service))

    def _service_context(self, service: tuple[str, Hook, Hook]):
        name, start, stop = service

        async def context(app: web.Application) -> AsyncIterator[None]:
            log.debug("starting %s", name)
            await start()
            self._started.append(service)
            yield
            self._started.remove(service)
            try:
                await stop()
            except Exception:
                log.exception("stopping %s failed", name)

        return context

    async def _background_tasks(self, app: web.Application) -> AsyncIterator[None]:
        yield
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def spawn(self, coro: Awaitable, name: str) -> asyncio.Task:
        """A background task that lives until the node stops; its crash is logged."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("task %s crashed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def start(self, app: web.Application) -> None:
        """Start the services (the app's cleanup_ctx, see `install`), then listen. When a
        step fails, what started is stopped again before the error is raised."""
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        try:
            await self.runner.setup()
            site = web.TCPSite(
                self.runner,
                self.config.host,
                self.config.http_port,
                ssl_context=self.tls.context if self.tls else None,
            )
            await site.start()
            if self.tls and self.config.http_redirect_port:
                await self._start_https_redirect()
        except BaseException:
            await self.stop()
            raise
        scheme = "https" if self.tls else "http"
        rtmp = f" rtmp://{self.config.host}:{self.config.rtmp_port}/live"
        if self.tls:
            rtmp = (rtmp if self.config.plain_rtmp else "") + (
                f" rtmps://{self.config.host}:{self.config.rtmps_port}/live"
            )
        log.info(
            "AIRClass %s node %s: %s://%s:%d%s",
            self.config.role,
            self.config.node_id,
            scheme,
            self.config.host,
            self.config.http_port,
            rtmp,
        )
        log.info(
            "students join at %s/join, teachers sign in at %s/teacher",
            self.config.http_url,
            self.config.http_url,
        )

    async def _start_https_redirect(self) -> None:
        runner = web.AppRunner(https_redirect_app(self.config.http_port), access_log=None)
        await runner.setup()
        self._redirect_runner = runner
        await web.TCPSite(runner, self.config.host, self.config.http_redirect_port).start()
        log.info("plain HTTP on port %d redirects to HTTPS", self.config.http_redirect_port)

    async def stop(self) -> None:
        """Stop listening, then the services that started, in reverse (the app's cleanup)."""
        if self._redirect_runner is not None:
            await self._redirect_runner.cleanup()
            self._redirect_runner = None
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


NODE = web.AppKey("node", Node)
CLUSTER_HOOKS = web.AppKey("cluster_hooks", ClusterHooks)


def node_of(request: web.Request) -> Node:
    """The node serving this request."""
    return request.app[NODE]


def cluster_hooks_of(request: web.Request) -> ClusterHooks:
    return request.app[CLUSTER_HOOKS]
