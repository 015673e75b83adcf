"""Event bus: session events reach every node (Redis) or this process only.

`publish(event)` never blocks and never fails: the event is delivered to this node's
handler at once and queued for Redis. Events are dicts with at least "session_id" and
"type".

With Redis the events travel through one Redis *stream* (XADD / XREAD), not pub/sub: a
node reads on from the last entry it saw, so events published while it was reconnecting
(Redis restarted, the node's own connection broke) still reach it; pub/sub would drop
them whenever the publisher reconnects before the subscribers do. Events queued while
Redis is down stay queued (bounded by MAX_QUEUE and MAX_QUEUE_AGE) until it returns.
Every entry is signed (HMAC-SHA256 with a key derived from the cluster secret); unsigned
or forged entries are dropped and counted (`rejected`). Inside the signed envelope each
event carries a unique id (node id, a per-start nonce, a counter) and the time it was
published, so a captured entry added to the stream again is dropped (`replayed`): one
older than MAX_AGE, or published before this node started (less START_GRACE), by its
time; a newer one by its id, remembered for MAX_AGE in a bounded set (SEEN ids; when it
overflows, events no newer than the oldest id forgotten are dropped too). At its first
connection a node remembers the ids already in the stream for that window, so a restart
opens no replay window either. A batch re-sent after a failed write is delivered once
the same way. Both loops reconnect by themselves
(backoff up to 2 s); `on_connect` runs after every (re)connection so the node can ask for
state it may have missed.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from ..redis_client import redact_url, redis_client

log = logging.getLogger(__name__)

STREAM = "airclass:classroom:events"
#: Entries kept in the stream (approximately): what a node can catch up on.
STREAM_MAXLEN = 10000
#: Events waiting for Redis are dropped past this age or count (and counted).
MAX_QUEUE_AGE = 300.0
MAX_QUEUE = 20000
#: Entries written per pipeline round trip.
BATCH = 500
#: Ids of events seen lately (at most this many), to drop a re-sent or replayed copy.
SEEN = 50000
#: Events published longer ago than this are dropped (a replay or a very late copy): a
#: queued event is written at most MAX_QUEUE_AGE after it was published, plus clock skew.
MAX_AGE = MAX_QUEUE_AGE + 60.0
#: Events published before this node started, less this margin (clock skew between
#: nodes), are dropped: they are older than anything this node may have missed.
START_GRACE = 30.0
#: XREAD blocks this long (ms) before asking again.
BLOCK_MS = 5000

Handler = Callable[[dict], None]


def bus_key(secret: str) -> bytes:
    """The events' HMAC key, derived from the cluster secret (its own purpose label)."""
    return hmac.new(secret.encode(), b"airclass classroom event bus v1", hashlib.sha256).digest()


def sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).hexdigest().encode()


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
    """Events shared by every node through a signed Redis stream."""

    kind = "redis"

    def __init__(self, node_id: str, handler: Handler, url: str, secret: str) -> None:
        super().__init__(node_id, handler)
        if not secret:
            raise ValueError("the Redis event bus needs a secret to sign events")
        self.url = url
        self._key = bus_key(secret)
        self._queue: collections.deque[tuple[float, dict[str, bytes]]] = collections.deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._client = None
        self._subscribed = False
        self._seq = itertools.count(1)
        #: Unique per start, so ids never repeat after a restart of this node.
        self._nonce = secrets.token_hex(6)
        self._seen: collections.deque[tuple[float, str]] = collections.deque()
        self._seen_set: set[str] = set()
        #: Events published at or before this time are dropped (see the module docstring).
        self._floor = time.time() - START_GRACE
        self._last_id: bytes | None = None
        self.reconnects = 0
        self.dropped = 0
        self.rejected = 0
        self.duplicates = 0
        self.replayed = 0
        self.sent = 0

    @property
    def connected(self) -> bool:
        return self._subscribed

    def _make_client(self, **extra):
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No hidden retries: our loops back off and reconnect themselves.
        return redis_client(
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
        event_id = f"{self.node_id}:{self._nonce}:{next(self._seq)}"
        payload = json.dumps(
            {**event, "_origin": self.node_id, "_id": event_id, "_ts": time.time()},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        if len(self._queue) >= MAX_QUEUE:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append((time.monotonic(), {"m": payload, "s": sign(self._key, payload)}))
        self._wake.set()

    async def _publish_loop(self) -> None:
        """Write queued events in batches. A batch leaves the queue only once Redis took
        it: on failure it goes back in front, in order, and is written after Redis returns."""
        delay = 0.05
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for _, fields in batch:
                        pipe.xadd(STREAM, fields, maxlen=STREAM_MAXLEN, approximate=True)
                    await pipe.execute()
                self.sent += len(batch)
                delay = 0.05
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))
                raise
            except Exception as exc:
                self._queue.extendleft(reversed(batch))
                log.warning(
                    "event bus: write to Redis failed (%s); %d events queued, retrying",
                    exc,
                    len(self._queue),
                )
                cutoff = time.monotonic() - MAX_QUEUE_AGE
                while self._queue and self._queue[0][0] < cutoff:
                    self._queue.popleft()
                    self.dropped += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _resume_from(self, client) -> bytes:
        """The stream id to read after: where this node stopped, unless the stream was
        reset (Redis restarted empty with older ids); at first start, its current end."""
        newest = await client.xrevrange(STREAM, count=1)
        top = newest[0][0] if newest else b"0-0"
        if self._last_id is None:
            return top

        def key(i: bytes) -> tuple[int, int]:
            ms, _, seq = i.partition(b"-")
            return int(ms), int(seq or 0)

        return self._last_id if key(top) >= key(self._last_id) else b"0-0"

    async def _remember_recent(self, client) -> None:
        """Remember the ids of the stream's entries of the last MAX_AGE (first connection):
        copies of them added later are replays."""
        start = f"{int((time.time() - MAX_AGE) * 1000)}-0"
        entries = await client.xrange(STREAM, min=start, max="+", count=STREAM_MAXLEN)
        for _, fields in entries:
            event = self._verified(fields)
            if event is not None and isinstance(event.get("_id"), str):
                self._remember(event["_id"], event.get("_ts"), time.time())

    async def _subscribe_loop(self) -> None:
        delay = 0.05
        while True:
            client = self._make_client(socket_timeout=BLOCK_MS / 1000 + 5)
            try:
                if self._last_id is None:
                    await self._remember_recent(client)
                self._last_id = await self._resume_from(client)
                self._subscribed = True
                self.reconnects += 1
                delay = 0.05
                log.info("event bus: reading %s on %s", STREAM, redact_url(self.url))
                if self.on_connect is not None:
                    try:
                        await self.on_connect()
                    except Exception:
                        log.exception("event bus: on_connect failed")
                while True:
                    found = await client.xread({STREAM: self._last_id}, count=BATCH, block=BLOCK_MS)
                    for _, entries in found or ():
                        for entry_id, fields in entries:
                            self._last_id = entry_id
                            self._on_entry(fields)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._subscribed:
                    log.warning("event bus: lost Redis (%s); reconnecting", exc)
                self._subscribed = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                self._subscribed = False
                try:
                    await client.aclose()
                except Exception:
                    pass

    def _verified(self, fields: dict) -> dict | None:
        """The entry's event when its signature holds, else None (counted as rejected)."""
        payload, signature = fields.get(b"m"), fields.get(b"s")
        if (
            not isinstance(payload, bytes)
            or not isinstance(signature, bytes)
            or not hmac.compare_digest(sign(self._key, payload), signature)
        ):
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 100 == 0:
                log.warning("event bus: dropped %d unsigned or forged events", self.rejected)
            return None
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.rejected += 1
            return None
        return event

    def _remember(self, event_id: str, ts, now: float) -> None:
        """Add an id to the seen set; forget ids past MAX_AGE, and the oldest ones past
        SEEN (raising the floor so that their copies stay refused)."""
        self._seen.append((ts if isinstance(ts, (int, float)) else now, event_id))
        self._seen_set.add(event_id)
        cutoff = now - MAX_AGE
        while self._seen and (self._seen[0][0] < cutoff or len(self._seen) > SEEN):
            old_ts, old_id = self._seen.popleft()
            self._seen_set.discard(old_id)
            if old_ts >= cutoff:
                self._floor = max(self._floor, old_ts)

    def _fresh(self, event: dict, now: float) -> bool:
        """True for an event seen for the first time, published within its window."""
        event_id, ts = event.get("_id"), event.get("_ts")
        if (
            not isinstance(event_id, str)
            or not isinstance(ts, (int, float))
            or ts <= self._floor
            or abs(now - ts) > MAX_AGE
        ):
            self.replayed += 1
            if self.replayed == 1 or self.replayed % 100 == 0:
                log.warning("event bus: dropped %d stale or replayed events", self.replayed)
            return False
        if event_id in self._seen_set:
            self.duplicates += 1
            return False
        self._remember(event_id, ts, now)
        return True

    def _on_entry(self, fields: dict) -> None:
        event = self._verified(fields)
        if event is None or event.pop("_origin", None) == self.node_id:
            return
        if not self._fresh(event, time.time()):
            return
        for key in ("_id", "_ts"):
            event.pop(key, None)
        self.received += 1
        self._deliver(event)

    def status(self) -> dict:
        return {
            **super().status(),
            "queued": len(self._queue),
            "sent": self.sent,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "replayed": self.replayed,
            "subscriptions": self.reconnects,
        }


def make_bus(node_id: str, handler: Handler, redis_url: str, secret: str = "") -> EventBus:
    """The Redis bus when a URL is given (events signed with `secret`), else in-process."""
    if redis_url:
        return RedisEventBus(node_id, handler, redis_url, secret)
    return EventBus(node_id, handler)
