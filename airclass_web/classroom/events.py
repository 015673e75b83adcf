"""Event bus: session events reach every node (Redis pub/sub) or this process only.

`publish(event)` never blocks and never fails: the event is delivered to this node's
handler at once and queued for Redis. Events are dicts with at least "session_id" and
"type". Each node subscribes to one channel and drops its own echoes. Both Redis loops
reconnect by themselves (backoff up to 2 s) after Redis restarts; `on_connect` runs after
every (re)subscription so the node can ask for state it may have missed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

CHANNEL = "airclass:classroom"
#: Events waiting for Redis are dropped past this age or count.
MAX_QUEUE_AGE = 30.0
MAX_QUEUE = 20000

Handler = Callable[[dict], None]


class EventBus:
    """In-process bus (standalone node without Redis)."""

    kind = "local"

    def __init__(self, node_id: str, handler: Handler) -> None:
        self.node_id = node_id
        self.handler = handler
        self.on_connect: Callable[[], Awaitable[None]] | None = None
        self.published = 0
        self.received = 0

    @property
    def connected(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def publish(self, event: dict) -> None:
        self.published += 1
        self._deliver(event)

    def _deliver(self, event: dict) -> None:
        try:
            self.handler(event)
        except Exception:
            log.exception("event handler failed for %s", event.get("type"))

    def status(self) -> dict:
        return {
            "kind": self.kind,
            "connected": self.connected,
            "published": self.published,
            "received": self.received,
        }


class RedisEventBus(EventBus):
    """Events shared by every node through Redis pub/sub."""

    kind = "redis"

    def __init__(self, node_id: str, handler: Handler, url: str) -> None:
        super().__init__(node_id, handler)
        self.url = url
        self._queue: collections.deque[tuple[float, str]] = collections.deque(maxlen=MAX_QUEUE)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._client = None
        self._subscribed = False
        self.reconnects = 0
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._subscribed

    def _make_client(self, **extra):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No hidden retries: our loops back off and reconnect themselves.
        return aioredis.from_url(
            self.url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), **extra
        )

    async def start(self) -> None:
        self._client = self._make_client(socket_timeout=5)
        self._tasks = [
            asyncio.create_task(self._subscribe_loop(), name="bus-subscribe"),
            asyncio.create_task(self._publish_loop(), name="bus-publish"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def publish(self, event: dict) -> None:
        self.published += 1
        self._deliver(event)
        payload = json.dumps({**event, "_origin": self.node_id}, separators=(",", ":"))
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((time.monotonic(), payload))
        self._wake.set()

    async def _publish_loop(self) -> None:
        delay = 0.05
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = list(self._queue)
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for _, payload in batch:
                        pipe.publish(CHANNEL, payload)
                    await pipe.execute()
                for _ in batch:
                    self._queue.popleft()
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event bus: publish to Redis failed (%s); retrying", exc)
                cutoff = time.monotonic() - MAX_QUEUE_AGE
                while self._queue and self._queue[0][0] < cutoff:
                    self._queue.popleft()
                    self.dropped += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _subscribe_loop(self) -> None:
        delay = 0.05
        while True:
            client = self._make_client(health_check_interval=5)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                self._subscribed = True
                self.reconnects += 1
                delay = 0.05
                log.info("event bus: subscribed to %s on %s", CHANNEL, self.url)
                if self.on_connect is not None:
                    try:
                        await self.on_connect()
                    except Exception:
                        log.exception("event bus: on_connect failed")
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None or message.get("type") != "message":
                        continue
                    self._on_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._subscribed:
                    log.warning("event bus: lost Redis subscription (%s); reconnecting", exc)
                self._subscribed = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self._subscribed = False
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:
                    pass

    def _on_message(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("event bus: dropped a malformed event")
            return
        if event.pop("_origin", None) == self.node_id:
            return
        self.received += 1
        self._deliver(event)

    def status(self) -> dict:
        return {
            **super().status(),
            "queued": len(self._queue),
            "dropped": self.dropped,
            "subscriptions": self.reconnects,
        }


def make_bus(node_id: str, handler: Handler, redis_url: str) -> EventBus:
    return RedisEventBus(node_id, handler, redis_url) if redis_url else EventBus(node_id, handler)
