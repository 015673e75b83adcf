"""Who may open one more viewer session: node capacity, per-user and per-IP caps, and
per-IP offers not connected yet.

`reserve` checks and counts in one synchronous step (no await), so concurrent WHEP
offers cannot overshoot; the ticket is released when the offer fails or the session ends.
A ticket is *pending* until its session connects (ICE + DTLS): one address may have at
most `per_ip_pending` pending tickets, so offers that never connect cannot hold many seats;
`reserve_waiting` queues an address's offers past that (a class joining at once) instead
of refusing them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque


class AdmissionRefused(Exception):
    """The viewer session cannot be admitted."""

    status = 503


class NodeFull(AdmissionRefused):
    """Every viewer slot of the node is taken (HTTP 503)."""

    status = 503


class TooManySessions(AdmissionRefused):
    """This user or address has too many viewer sessions open (HTTP 429)."""

    status = 429


class TooManyPending(TooManySessions):
    """This address has too many offers that have not connected yet (HTTP 429)."""


class Ticket:
    """One reserved viewer slot; `release` is idempotent."""

    __slots__ = ("_admission", "user_id", "ip", "released", "connected")

    def __init__(self, admission: Admission, user_id: str, ip: str) -> None:
        self._admission = admission
        self.user_id = user_id
        self.ip = ip
        self.released = False
        self.connected = False

    def mark_connected(self) -> None:
        """The session connected: it no longer counts as pending (idempotent)."""
        if not self.connected and not self.released:
            self.connected = True
            self._admission._settled(self)

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    """Counts reserved + open viewer sessions. A limit of 0 means no limit."""

    def __init__(
        self, capacity: int, per_user: int = 0, per_ip: int = 0, per_ip_pending: int = 0
    ) -> None:
        self.capacity = capacity
        self.per_user = per_user
        self.per_ip = per_ip
        self.per_ip_pending = per_ip_pending
        self.total = 0
        self.refused = Counter[str]()
        self._users = Counter[str]()
        self._ips = Counter[str]()
        self._pending = Counter[str]()
        #: Offers of an address waiting for one of its pending slots, first come first.
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    def pending(self, ip: str) -> int:
        return self._pending[ip]

    def over_user_cap(self, user_id: str) -> bool:
        return bool(self.per_user) and self._users[user_id] >= self.per_user

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
        if self.per_ip_pending and ip and self._pending[ip] >= self.per_ip_pending:
            raise TooManyPending(
                f"address {ip} has {self.per_ip_pending} viewer sessions not connected yet"
            )
        self.total += 1
        self._users[user_id] += 1
        if ip:
            self._ips[ip] += 1
            self._pending[ip] += 1
        return Ticket(self, user_id, ip)

    async def reserve_waiting(self, user_id: str, ip: str, timeout: float) -> Ticket:
        """`reserve`, but an offer past the address's pending cap waits (in order) up to
        `timeout` seconds for one of them to connect or end; then TooManyPending."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queue = self._waiters.get(ip)
        if not queue:  # nobody of this address waits: try at once
            with contextlib.suppress(TooManyPending):
                return self.reserve(user_id, ip)
        queue = self._waiters.setdefault(ip, deque())
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            queue.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                self.refused["ip_pending"] += 1
                raise TooManyPending(
                    f"address {ip} has {self.per_ip_pending} viewer sessions not connected "
                    f"yet; waited {timeout:.0f} s"
                ) from None
            finally:
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                if not queue:
                    self._waiters.pop(ip, None)
            try:
                ticket = self.reserve(user_id, ip)
            except TooManyPending:
                queue = self._waiters.setdefault(ip, deque())
                continue  # taken by another offer meanwhile: wait again
            except AdmissionRefused:
                self._wake(ip)  # not for this one: the next in line may fit
                raise
            self._wake(ip)  # more may have freed at once
            return ticket

    def _wake(self, ip: str) -> None:
        """Let the first waiting offer of `ip` try again, if a pending slot is free."""
        queue = self._waiters.get(ip)
        if not queue or (self.per_ip_pending and self._pending[ip] >= self.per_ip_pending):
            return
        for waiter in queue:
            if not waiter.done():
                waiter.set_result(None)
                return

    def _settled(self, ticket: Ticket) -> None:
        if ticket.ip:
            self._pending[ticket.ip] -= 1
            if self._pending[ticket.ip] <= 0:
                del self._pending[ticket.ip]
            self._wake(ticket.ip)

    def _release(self, ticket: Ticket) -> None:
        self.total -= 1
        self._users[ticket.user_id] -= 1
        if self._users[ticket.user_id] <= 0:
            del self._users[ticket.user_id]
        if ticket.ip:
            self._ips[ticket.ip] -= 1
            if self._ips[ticket.ip] <= 0:
                del self._ips[ticket.ip]
            if not ticket.connected:
                self._settled(ticket)
