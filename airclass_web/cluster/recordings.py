"""Recordings that follow their stream when its origin moves to another node.

The origin records its stream. When the origin dies mid-class and the teacher's encoder
reconnects to another node, that node becomes the origin and must go on recording the
same class: as the next part of the same class session, not as an unrelated file (the
parts already written stay on the dead node's disk and are recovered when it returns).

While a node records a stream it keeps ``airclass:recording:<stream>`` in Redis: a
signed JSON {node_id, recording_id, session_id, part}, renewed with its heartbeats and
lapsing `grace` seconds after the last (the recorder's offline grace: a publisher that
returns later starts a new recording, as on one node). A recording stopped on purpose
(by the teacher, after the offline grace, for low disk) withdraws its entry at once; one
cut off by a crash or a shutdown leaves it for the next origin.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from .signing import SignatureError, Signer

log = logging.getLogger(__name__)

RECORDING_PREFIX = "airclass:recording:"

#: KEYS: entry. ARGV: the value this node set, ttl ms. Touch or delete only our own value.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_WITHDRAW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RecordingHandoff:
    """Each stream's running recording in Redis (see the module docstring)."""

    def __init__(self, redis, signer: Signer, node_id: str, grace: float) -> None:
        self.redis = redis
        self.signer = signer
        self.node_id = node_id
        self.ttl_ms = max(int(grace * 1000), 1000)
        #: Stream -> (recording id, the value this node set).
        self.held: dict[str, tuple[str, str]] = {}
        self._renew = redis.register_script(_RENEW)
        self._withdraw = redis.register_script(_WITHDRAW)

    async def previous(self, stream: str) -> dict | None:
        """The recording of `stream` that was cut off (its node died or restarted):
        {node_id, recording_id, session_id, part}; None when there is none."""
        try:
            value = await self.redis.get(RECORDING_PREFIX + stream)
        except (RedisError, OSError) as exc:
            log.warning("recording of %s: previous part unknown: %s", stream, exc)
            return None
        if value is None:
            return None
        try:
            entry = self.signer.unseal(value.decode(errors="replace"))
        except SignatureError as exc:
            log.warning("recording of %s: refused a forged entry: %s", stream, exc)
            return None
        # This node's own entry is a previous part too when it is not recording the
        # stream now: it was cut off by a crash or restart here (and recovered).
        return None if stream in self.held else entry

    async def announce(self, doc: dict) -> None:
        """This node records `doc["stream"]` now."""
        stream = doc["stream"]
        value = self.signer.seal(
            {
                "node_id": self.node_id,
                "recording_id": doc["id"],
                "session_id": doc.get("session_id") or "",
                "part": int(doc.get("part") or 1),
            }
        )
        try:
            await self.redis.set(RECORDING_PREFIX + stream, value, px=self.ttl_ms)
        except (RedisError, OSError) as exc:
            log.warning("recording %s: not announced in Redis: %s", doc["id"], exc)
            return
        self.held[stream] = (doc["id"], value)

    async def withdraw(self, doc: dict) -> None:
        """The recording ended on purpose: the next origin starts afresh."""
        held = self.held.get(doc["stream"])
        if held is None or held[0] != doc["id"]:
            return
        del self.held[doc["stream"]]
        try:
            await self._withdraw(keys=[RECORDING_PREFIX + doc["stream"]], args=[held[1]])
        except (RedisError, OSError) as exc:
            log.warning("recording %s: entry not withdrawn: %s", doc["id"], exc)

    async def renew(self) -> None:
        """Keep this node's entries alive (called with every heartbeat)."""
        for stream, (recording_id, value) in list(self.held.items()):
            try:
                kept = await self._renew(
                    keys=[RECORDING_PREFIX + stream], args=[value, self.ttl_ms]
                )
            except (RedisError, OSError) as exc:
                log.warning("recording entries not renewed: %s", exc)
                return
            if not kept:  # another origin took the stream over and records it now
                self.held.pop(stream, None)
                log.info("recording %s: %s is recorded elsewhere now", recording_id, stream)
