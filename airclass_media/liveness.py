"""Is a viewer still there? A browser sends RTCP (receiver reports, REMB) about once a
second while media reaches it; a tab that was closed without a goodbye, or a laptop
whose Wi-Fi went away, sends nothing, and what is sent to it only fills its link (a
classroom's shared access point) until ICE consent expires 30 s later (RFC 7675). In a
benchmark a closed Chromium page went on receiving 2.5 Mbit/s through the 1 Mbit/s link
of the next viewer for those 30 s: that viewer went audio only.

A viewer is silent once nothing was heard from it for SILENT_GAPS times its own usual
gap between RTCP packets, and at least SILENT_MIN_S: a client that reports every 5 s
(GStreamer's default) is not cut off where a browser is."""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

SILENT_MIN_S = 3.0
SILENT_GAPS = 4.0
#: RTCP packets closer than this came in one datagram (a compound packet): one hearing.
SAME_DATAGRAM_S = 0.01
#: The usual gap: the median of the last GAPS_KEPT (the first, while a connection comes
#: up, is often long; one late report is not the client's habit).
GAPS_KEPT = 9
#: The usual gap assumed after one hearing: RTCP's nominal interval (RFC 3550).
FIRST_GAP_S = 5.0


@dataclass(slots=True)
class Liveness:
    """When the viewer was last heard from, and its recent gaps between RTCP packets."""

    heard_at: float | None = None
    gaps: deque = field(default_factory=lambda: deque(maxlen=GAPS_KEPT))

    def heard(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.heard_at is not None:
            gap = now - self.heard_at
            if gap < SAME_DATAGRAM_S:
                return
            self.gaps.append(gap)
        self.heard_at = now

    def silent_for(self, now: float) -> float | None:
        """Seconds the viewer has been silent beyond its usual gaps; None while it is
        not, or was never heard (a client that sends no RTCP at all is left to ICE)."""
        if self.heard_at is None:
            return None
        quiet = now - self.heard_at
        usual = statistics.median(self.gaps) if self.gaps else FIRST_GAP_S
        return quiet if quiet > max(SILENT_MIN_S, SILENT_GAPS * usual) else None
