"""Which node is each stream's origin (the node its publisher is connected to).

A teacher may publish to any node. The node that takes the publisher holds a lease on the
stream in Redis, ``airclass:origin:<stream>``, renewed with its heartbeats; every other
node that has viewers of the stream relays it from there. Leases are fenced: each new
holder gets a higher epoch, and a node may renew only a lease it still holds, so a node
that comes back after losing its lease (a network split, a pause) learns it was replaced
and drops its publisher instead of serving a second, stale origin.

The value is ``<node_id> <epoch> <sealed JSON {node_id, url}>``: the holder and the epoch
in clear for the atomic Lua checks, the URL signed with the cluster secret so that nobody
without it can point nodes at an address of their choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from .signing import SignatureError, Signer

log = logging.getLogger(__name__)

ORIGIN_PREFIX = "airclass:origin:"
EPOCH_PREFIX = "airclass:origin-epoch:"
#: A lease not renewed for this long lapses (the holder died): another node may take it.
LEASE_SECONDS = 6.0

#: KEYS: lease, epoch counter. ARGV: node id, sealed {node_id, url}, lease ms, force.
#: Returns the epoch held by the caller, or -1 when another node holds the lease.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, epoch = string.match(cur, '^(%S+) (%d+) ')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return tonumber(epoch)
  end
  if ARGV[4] ~= '1' then return -1 end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch .. ' ' .. ARGV[2], 'PX', ARGV[3])
return epoch
"""
#: Renew only a lease this node still holds at this epoch: 1 renewed, 0 fenced out.
_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(%S+) (%d+) ') == ARGV[1] then
  local _, epoch = string.match(cur, '^(%S+) (%d+) ')
  if epoch == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
end
return 0
"""
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(%S+) ') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class OriginError(Exception):
    """The directory cannot be reached."""


@dataclass(frozen=True)
class Origin:
    node_id: str
    url: str
    epoch: int


class OriginDirectory:
    """Stream -> origin leases in Redis (see the module docstring)."""

    def __init__(self, redis, signer: Signer, node_id: str, url: str) -> None:
        """redis: a redis.asyncio client (shared with the registry)."""
        self.redis = redis
        self.signer = signer
        self.node_id = node_id
        self.url = url
        #: Streams this node holds, with the epoch it holds them at.
        self.held: dict[str, int] = {}
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, stream: str, *, force: bool = False) -> int | None:
        """Become the stream's origin; its epoch, or None while another node holds it.
        `force` takes over from a holder that is known dead (gone from the registry)."""
        sealed = self.signer.seal({"node_id": self.node_id, "url": self.url})
        try:
            epoch = await self._claim(
                keys=[ORIGIN_PREFIX + stream, EPOCH_PREFIX + stream],
                args=[self.node_id, sealed, int(LEASE_SECONDS * 1000), "1" if force else "0"],
            )
        except (RedisError, OSError) as exc:
            raise OriginError(f"redis: {exc}") from exc
        if int(epoch) < 0:
            return None
        self.held[stream] = int(epoch)
        return int(epoch)

    async def renew(self) -> list[str]:
        """Renew every held lease; the streams this node lost (fenced out)."""
        lost = []
        for stream, epoch in list(self.held.items()):
            try:
                kept = await self._renew(
                    keys=[ORIGIN_PREFIX + stream],
                    args=[self.node_id, str(epoch), int(LEASE_SECONDS * 1000)],
                )
            except (RedisError, OSError) as exc:
                raise OriginError(f"redis: {exc}") from exc
            if not kept:
                self.held.pop(stream, None)
                lost.append(stream)
        return lost

    async def release(self, stream: str) -> None:
        if self.held.pop(stream, None) is None:
            return
        try:
            await self._release(keys=[ORIGIN_PREFIX + stream], args=[self.node_id])
        except (RedisError, OSError) as exc:
            log.warning("origin %s: could not release the lease: %s", stream, exc)

    async def lookup(self, stream: str) -> Origin | None:
        """The stream's origin, None when no node holds it (or the entry is forged)."""
        try:
            value = await self.redis.get(ORIGIN_PREFIX + stream)
        except (RedisError, OSError) as exc:
            raise OriginError(f"redis: {exc}") from exc
        if value is None:
            return None
        holder, epoch, sealed = value.decode(errors="replace").split(" ", 2)
        try:
            body = self.signer.unseal(sealed)
        except SignatureError as exc:
            log.warning("origin %s: refused a forged entry: %s", stream, exc)
            return None
        if body.get("node_id") != holder:
            log.warning("origin %s: entry for %s names %s", stream, holder, body.get("node_id"))
            return None
        return Origin(holder, str(body["url"]), int(epoch))
