"""Which sub node serves which student: weighted rendezvous (highest-random-weight) hashing
with bounded loads.

Every (node, student) pair gets a pseudo-random score; a student goes to the node with the
highest score among the healthy subs that have room. "Room" is the node's capacity and,
to keep a class evenly spread, at most (1 + BALANCE) times its fair share of the
current viewers (consistent hashing with bounded loads). A student already watching on
(or just sent to) a live sub stays there. When a sub leaves only its own students move.

Capacity counts only real viewer sessions, which exist from the WHEP POST on (the sub
reports them in its heartbeat; it refuses offers beyond its capacity itself). Users just
sent somewhere (a token from /api/token) only steer the balance: a stranger asking for
tokens in a loop cannot make the cluster look full.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable

from .registry import NodeRecord

#: A user just sent to a sub counts towards its share (not its capacity) this long.
PENDING_SECONDS = 10.0
#: At most this many pending users are remembered per sub (strangers cannot grow it).
MAX_PENDING = 10_000
#: A sub may take this much more than its fair share of the viewers.
BALANCE = 0.05


class NoCapacity(Exception):
    """No sub node can take this viewer (HTTP 503)."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


def score(node_key: str, user_id: str, weight: float = 1.0) -> float:
    """Weighted rendezvous score: weight / -ln(u), u uniform in (0, 1) from a hash."""
    digest = hashlib.blake2b(f"{node_key}\0{user_id}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2**64
    return weight / -math.log(u)


def rank(user_id: str, nodes: Iterable[NodeRecord]) -> list[NodeRecord]:
    """Nodes in this user's preference order (best first), weighted by capacity."""
    return sorted(nodes, key=lambda n: score(n.url, user_id, max(n.capacity, 1)), reverse=True)


class Assigner:
    """Chooses a sub per viewer; counts recent assignments until heartbeats report them."""

    def __init__(self, pending_seconds: float = PENDING_SECONDS, balance: float = BALANCE) -> None:
        self.pending_seconds = pending_seconds
        self.balance = balance
        #: node url -> {user id: expiry (monotonic)}
        self._pending: dict[str, dict[str, float]] = {}

    def users(self, node: NodeRecord) -> set[str]:
        """Viewers the node reports plus users recently sent there."""
        return set(node.viewers) | set(self._pending.get(node.url, ()))

    def load(self, node: NodeRecord, user_id: str = "") -> int:
        """Sessions on the node plus pending users, not counting `user_id` (for the
        balance between subs)."""
        users = self.users(node)
        users.discard(user_id)
        return len(users) + self._extra_sessions(node)

    def seated(self, node: NodeRecord, user_id: str = "") -> int:
        """Viewer sessions the node reports, not counting `user_id` (for its capacity)."""
        viewers = set(node.viewers)
        viewers.discard(user_id)
        return len(viewers) + self._extra_sessions(node)

    @staticmethod
    def _extra_sessions(node: NodeRecord) -> int:
        return max(node.load - len(set(node.viewers)), 0)  # same user twice

    def choose(self, user_id: str, nodes: Iterable[NodeRecord]) -> NodeRecord:
        """The sub for this user, or NoCapacity."""
        self._expire()
        subs = _dedupe(n for n in nodes if n.role == "sub")
        if not subs:
            raise NoCapacity("no sub node is available", full=False)
        seated = {node.url: self.seated(node, user_id) for node in subs}
        for node in subs:
            if user_id in node.viewers:
                return self._assign(user_id, node)  # already watching there: stay
        for node in subs:
            if user_id in self._pending.get(node.url, ()) and seated[node.url] < node.capacity:
                return self._assign(user_id, node)  # just sent there: stay
        loads = {node.url: self.load(node, user_id) for node in subs}
        total = sum(loads.values()) + 1
        capacity = sum(max(n.capacity, 1) for n in subs)
        for node in rank(user_id, subs):
            share = math.ceil((1 + self.balance) * total * max(node.capacity, 1) / capacity)
            if loads[node.url] < share and seated[node.url] < node.capacity:
                return self._assign(user_id, node)
        for node in rank(user_id, subs):  # everyone is above their share: any room left
            if seated[node.url] < node.capacity:
                return self._assign(user_id, node)
        raise NoCapacity(f"all {len(subs)} sub nodes are full", full=True)

    def _assign(self, user_id: str, node: NodeRecord) -> NodeRecord:
        for users in self._pending.values():
            users.pop(user_id, None)
        pending = self._pending.setdefault(node.url, {})
        if len(pending) >= MAX_PENDING:
            pending.pop(next(iter(pending)))  # the oldest
        pending[user_id] = time.monotonic() + self.pending_seconds
        return node

    def _expire(self) -> None:
        now = time.monotonic()
        for url in list(self._pending):
            users = {u: t for u, t in self._pending[url].items() if t > now}
            if users:
                self._pending[url] = users
            else:
                del self._pending[url]


def _dedupe(nodes: Iterable[NodeRecord]) -> list[NodeRecord]:
    """One record per URL (a restarted node may briefly have two): the freshest."""
    by_url: dict[str, NodeRecord] = {}
    for node in nodes:
        seen = by_url.get(node.url)
        if seen is None or node.heartbeat_at > seen.heartbeat_at:
            by_url[node.url] = node
    return list(by_url.values())
