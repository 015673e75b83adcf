"""ICE for aiortc: which host addresses are gathered, which UDP ports are used, and ICE
restart (which aioice lacks).

aioice has no option for either (aiortc #487, aioice #47; aioice PR #112 is still open),
so this module applies the two settings at the narrowest points:
- ``aioice.ice.get_host_addresses`` returns the configured addresses (loopback allowed);
- the running loop's ``create_datagram_endpoint`` picks a port from the range when
  asked for an ephemeral one (port 0), which only aioice does in this process.
Both are process-wide and set once at start-up, before any peer connection exists.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Sequence

import aioice.ice
import aioice.utils

log = logging.getLogger(__name__)

_original_get_host_addresses = aioice.ice.get_host_addresses


def restrict_host_addresses(hosts: Sequence[str]) -> None:
    """Gather and advertise only these addresses (empty: aioice's default discovery)."""
    if not hosts:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    configured = list(hosts)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in configured if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses
    log.info("ICE host candidates restricted to %s", ", ".join(configured))


class PortRange:
    """Hands out UDP ports from [low, high], round robin, skipping ports in use."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self._next = low

    def candidates(self):
        size = self.high - self.low + 1
        start = self._next
        for i in range(size):
            port = self.low + (start - self.low + i) % size
            self._next = self.low + (port - self.low + 1) % size
            yield port


def restrict_udp_ports(loop: asyncio.AbstractEventLoop, low: int, high: int) -> None:
    """Make ephemeral UDP binds on this loop use ports from [low, high]."""
    ports = PortRange(low, high)
    original = loop.create_datagram_endpoint

    async def create_datagram_endpoint(protocol_factory, local_addr=None, **kwargs):
        if not local_addr or local_addr[1] != 0:
            return await original(protocol_factory, local_addr=local_addr, **kwargs)
        for port in ports.candidates():
            try:
                return await original(protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {low}-{high}")

    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]
    log.info("WebRTC UDP ports restricted to %d-%d", low, high)


#: How long a restarted connection keeps checking its new remote candidates.
RESTART_CHECK_SECONDS = 30.0
#: RFC 8445's Ta: one new check every 20 ms, as aioice's own connect() paces them.
CHECK_PACE_SECONDS = 0.02
#: Our own checks wait this long after a restart: sent at once, they reach the remote
#: agent before our answer does, go unanswered and are resent only 500 ms later, while the
#: pair they hold cannot take the remote agent's triggered check meanwhile.
OWN_CHECKS_AFTER_SECONDS = 0.25


#: Restarted connections' check tasks, one each (a client restarting again, or over and
#: over, replaces its previous restart's).
_RESTART_CHECKS: dict[aioice.ice.Connection, asyncio.Task] = {}


def restart_ice(
    connection: aioice.ice.Connection,
    remote_ufrag: str,
    remote_password: str,
    local: tuple[str, str] | None = None,
    on_selected: Callable[[aioice.ice.Connection], None] | None = None,
) -> tuple[str, str]:
    """ICE restart (RFC 8445 section 9) of a connected aioice connection, as the
    controlled agent, with `local` (ufrag, password) or new ones; returns them.
    ValueError for remote credentials ICE does not allow.

    aioice has no restart: this gives the connection new credentials on both sides and an
    empty check list (remote candidates come again, by trickle or by the remote agent's
    checks), keeping its sockets and local candidates, and runs `check_after_restart`.
    Media keeps flowing over the selected pair until the remote agent nominates a new one,
    which aioice's own check handling then makes the selected pair; DTLS and SRTP carry on
    over it untouched.
    """
    aioice.ice.validate_username(remote_ufrag)
    aioice.ice.validate_password(remote_password)
    for pair in connection._check_list:
        if pair.task is not None:
            pair.task.cancel()
    ufrag, password = local or (aioice.utils.random_string(4), aioice.utils.random_string(22))
    connection._local_username, connection._local_password = ufrag, password
    connection.remote_username = remote_ufrag
    connection.remote_password = remote_password
    connection._check_list = []
    connection._check_list_done = False
    connection._check_list_state = asyncio.Queue()
    connection._nominating.clear()
    connection._remote_candidates = []
    connection._remote_candidates_end = False
    connection._early_checks.clear()
    connection._early_checks_done = True
    previous = _RESTART_CHECKS.pop(connection, None)
    if previous is not None:
        previous.cancel()
    task = asyncio.ensure_future(check_after_restart(connection, on_selected))
    _RESTART_CHECKS[connection] = task

    def forget(done: asyncio.Task) -> None:
        if _RESTART_CHECKS.get(connection) is done:
            del _RESTART_CHECKS[connection]

    task.add_done_callback(forget)
    return ufrag, password


async def check_after_restart(
    connection: aioice.ice.Connection,
    on_selected: Callable[[aioice.ice.Connection], None] | None = None,
) -> bool:
    """Run the restarted connection's own checks, paced, until the remote agent
    nominates a new pair (True) or RESTART_CHECK_SECONDS pass (False). The remote
    agent's checks alone would do on an open network; ours open a NAT on the way.
    `on_selected(connection)` then, for senders that hold the path themselves."""
    loop = asyncio.get_running_loop()
    own_checks_at = loop.time() + OWN_CHECKS_AFTER_SECONDS
    deadline = loop.time() + RESTART_CHECK_SECONDS
    selected = dict(connection._nominated)
    waiting = (aioice.ice.CandidatePair.State.WAITING, aioice.ice.CandidatePair.State.FROZEN)
    while loop.time() < deadline and not connection._closing:
        if connection._nominated and connection._nominated != selected:
            log.info("ICE restart: %s selected", connection._nominated.get(1))
            if on_selected is not None:
                on_selected(connection)
            return True
        for pair in connection._check_list if loop.time() >= own_checks_at else ():
            if pair.task is None and pair.state in waiting:
                connection.check_start_task(pair)
                break
        await asyncio.sleep(CHECK_PACE_SECONDS)
    log.info("ICE restart: no new pair nominated within %.0f s", RESTART_CHECK_SECONDS)
    return False
