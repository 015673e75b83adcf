"""Sub side: one RelayClient per stream that has viewers, started on demand, dropped idle.

`resolve(name)` is the node's stream resolver: the first viewer of a stream this node
does not have starts a relay from the main and waits (briefly) for its first keyframe,
so the viewer starts from the main's GOP. A relay whose stream has had no subscriber
for `linger` seconds is closed and the stream forgotten, so the next viewer resolves again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import aiohttp

from airclass_media.hub import RENDITION_SEPARATOR, Stream, StreamHub

from .client import RelayClient, Signer, Timelines, Upstream, stop_client
from .server import DEFAULT_KINDS

log = logging.getLogger(__name__)

#: A relay with no viewer for this long is dropped (seconds).
DEFAULT_LINGER = 30.0
#: How long a first viewer waits for the relay's first keyframe before subscribing anyway.
FIRST_KEYFRAME_WAIT = 4.0
CHECK_SECONDS = 1.0


class RelayManager:
    def __init__(
        self,
        hub: StreamHub,
        main_url: str | Callable[[str], Awaitable[str | None]],
        sign: Signer,
        kinds: Iterable[str] = DEFAULT_KINDS,
        linger: float = DEFAULT_LINGER,
        connector: Callable[[], aiohttp.BaseConnector] | None = None,
    ) -> None:
        self.hub = hub
        #: Makes the HTTP connector (e.g. a unix socket one, for a node's media workers).
        self._connector = connector
        self.main_url = main_url
        self.sign = sign
        self.kinds = tuple(kinds)
        self.linger = linger
        self.relays: dict[str, tuple[RelayClient, asyncio.Task]] = {}
        self.timelines: Timelines = {}
        self._idle_since: dict[str, float] = {}
        self._http: aiohttp.ClientSession | None = None
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=self._connector() if self._connector is not None else None,
            timeout=aiohttp.ClientTimeout(connect=5, sock_read=None),
        )
        self._watch = asyncio.ensure_future(self._drop_idle())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for name in list(self.relays):
            await self._drop(name)
        if self._http is not None:
            await self._http.close()

    async def resolve(self, name: str) -> Stream | None:
        """The stream, relayed from its node; None when no node has it."""
        entry = self.relays.get(name)
        if entry is None:
            if self._http is None:
                return None
            stream = self.hub.stream(name)
            client = RelayClient(
                stream, self._upstream_of(name), self.sign, self._http, self.kinds, self.timelines
            )
            task = asyncio.ensure_future(client.run())
            task.set_name(f"relay-{name}")
            self.relays[name] = entry = (client, task)
            log.info("relay %s: started for a first viewer", name)
        client, _task = entry
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_KEYFRAME_WAIT):
                await client.answered.wait()
                if client.not_found:
                    await self._drop(name)
                    return None
                if client.connected:
                    await client.keyframe.wait()
        return client.stream

    def _upstream_of(self, name: str) -> str | Upstream:
        """The main's URL, or a function naming the stream's node at each connection."""
        if isinstance(self.main_url, str):
            return self.main_url
        find = self.main_url
        # A ladder rendition (class1~540p) is made on the node its source comes from.
        source = name.split(RENDITION_SEPARATOR, 1)[0]

        async def upstream() -> str | None:
            return await find(source)

        return upstream

    async def drop(self, name: str) -> None:
        """Stop relaying this stream (a publisher of its own arrived on this node)."""
        await self._drop(name)

    async def _drop(self, name: str) -> None:
        entry = self.relays.pop(name, None)
        self._idle_since.pop(name, None)
        if entry is None:
            return
        client, task = entry
        await stop_client(client, task)
        stream = client.stream
        if not stream.subscriber_count and self.hub.get(name) is stream:
            self.hub.remove(stream.name)
        log.info("relay %s: dropped (%d packets relayed)", name, client.packets)

    async def _drop_idle(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            now = time.monotonic()
            for name, (client, _task) in list(self.relays.items()):
                if client.stream.subscriber_count:
                    self._idle_since.pop(name, None)
                elif now - self._idle_since.setdefault(name, now) >= self.linger:
                    await self._drop(name)

    def status(self) -> list[dict]:
        return [client.status() for client, _task in self.relays.values()]
