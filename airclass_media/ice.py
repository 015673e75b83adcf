"""ICE set-up for aiortc: which host addresses are gathered, which UDP ports are used.

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
from collections.abc import Sequence

import aioice.ice

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
