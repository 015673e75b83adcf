"""Who may open one more viewer session: node capacity, per-user and per-IP caps.

`reserve` checks and counts in one synchronous step (no await), so concurrent WHEP
offers cannot overshoot; the ticket is released when the offer fails or the session ends.
"""

from __future__ import annotations

from collections import Counter


class AdmissionRefused(Exception):
    """The viewer session cannot be admitted."""

    status = 503


class NodeFull(AdmissionRefused):
    """Every viewer slot of the node is taken (HTTP 503)."""

    status = 503


class TooManySessions(AdmissionRefused):
    """This user or address has too many viewer sessions open (HTTP 429)."""

    status = 429


class Ticket:
    """One reserved viewer slot; `release` is idempotent."""

    __slots__ = ("_admission", "user_id", "ip", "released")

    def __init__(self, admission: Admission, user_id: str, ip: str) -> None:
        self._admission = admission
        self.user_id = user_id
        self.ip = ip
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    """Counts reserved + open viewer sessions. A limit of 0 means no limit."""

    def __init__(self, capacity: int, per_user: int = 0, per_ip: int = 0) -> None:
        self.capacity = capacity
        self.per_user = per_user
        self.per_ip = per_ip
        self.total = 0
        self.refused = Counter[str]()
        self._users = Counter[str]()
        self._ips = Counter[str]()

    def reserve(self, user_id: str, ip: str) -> Ticket:
        """A ticket for one more session, or NodeFull / TooManySessions. Never awaits."""
        if self.capacity and self.total >= self.capacity:
            self.refused["capacity"] += 1
            raise NodeFull(f"{self.total} of {self.capacity} viewers")
        if self.per_user and self._users[user_id] >= self.per_user:
            self.refused["user"] += 1
            raise TooManySessions(f"user {user_id} has {self.per_user} viewer sessions open")
        if self.per_ip and ip and self._ips[ip] >= self.per_ip:
            self.refused["ip"] += 1
            raise TooManySessions(f"address {ip} has {self.per_ip} viewer sessions open")
        self.total += 1
        self._users[user_id] += 1
        if ip:
            self._ips[ip] += 1
        return Ticket(self, user_id, ip)

    def _release(self, ticket: Ticket) -> None:
        self.total -= 1
        self._users[ticket.user_id] -= 1
        if self._users[ticket.user_id] <= 0:
            del self._users[ticket.user_id]
        if ticket.ip:
            self._ips[ticket.ip] -= 1
            if self._ips[ticket.ip] <= 0:
                del self._ips[ticket.ip]
