"""One viewer's bandwidth estimate: the browser's REMB combined with receiver-report loss.

REMB (goog-remb, computed by the browser from abs-send-time arrival trends) is the
delay-based ceiling; receiver reports give the loss fraction, and a loss-based
controller (Google Congestion Control's: above 10 % loss back off by half the loss,
below 2 % probe up by 8 %) keeps its own figure. The estimate is the smaller of the two.
Costs a few arithmetic operations per RTCP packet; nothing per RTP packet.
"""

from __future__ import annotations

import time

#: Before any feedback: what a viewer is assumed to carry (bit/s).
START_BPS = 2_500_000
MIN_BPS = 50_000
MAX_BPS = 50_000_000
LOSS_BACK_OFF = 0.10
LOSS_PROBE_UP = 0.02
PROBE_UP_FACTOR = 1.08
#: The loss-based figure may probe at most this far above the latest REMB.
ABOVE_REMB = 1.5
#: A REMB older than this no longer caps the estimate (seconds).
REMB_STALE_S = 10.0
#: A REMB this much under the previous one is a drop: a browser's delay-based estimator
#: lowers its REMB only when it sees its link's queue grow (over-use).
REMB_DROP = 0.97


class BandwidthEstimate:
    """The estimate of one viewer's downlink, in bit/s (`bps`)."""

    __slots__ = (
        "remb",
        "remb_at",
        "loss_bps",
        "loss",
        "rembs",
        "remb_drops",
        "reports",
        "backed_off",
        "changed_at",
    )

    def __init__(self, start_bps: int = START_BPS) -> None:
        self.remb: int | None = None
        self.remb_at = 0.0
        self.loss_bps = float(start_bps)
        self.loss = 0.0
        self.rembs = 0
        self.remb_drops = 0
        self.reports = 0
        self.backed_off = False
        self.changed_at = time.monotonic()

    @property
    def known(self) -> bool:
        """True once the viewer said something about its rate (a REMB, or loss that made
        the estimate back off): until then START_BPS only paces, it chooses nothing."""
        return self.remb is not None or self.backed_off

    @property
    def bps(self) -> int:
        value = self.loss_bps
        if self.remb is not None and time.monotonic() - self.remb_at < REMB_STALE_S:
            value = min(value, self.remb)
        return int(max(MIN_BPS, min(value, MAX_BPS)))

    def on_remb(self, bitrate: int) -> None:
        """A REMB from the viewer (bit/s)."""
        self.rembs += 1
        if self.remb is not None and bitrate < self.remb * REMB_DROP:
            self.remb_drops += 1
        self.remb = max(int(bitrate), MIN_BPS)
        self.remb_at = time.monotonic()
        # The loss controller probes from where the delay-based figure is, not far above.
        self.loss_bps = min(self.loss_bps, self.remb * ABOVE_REMB)
        self.changed_at = self.remb_at

    def on_probe(self, bitrate: int) -> None:
        """A probe found the link carries `bitrate` (bit/s): the loss-based figure, cut
        by loss on a weak spell and climbing back 8 % a report, starts there."""
        self.loss_bps = max(self.loss_bps, float(bitrate))
        self.changed_at = time.monotonic()

    def on_loss(self, fraction: float) -> None:
        """A receiver report's fraction lost (0..1) since the previous report."""
        self.reports += 1
        self.loss = fraction
        if fraction > LOSS_BACK_OFF:
            self.loss_bps = max(MIN_BPS, self.loss_bps * (1 - 0.5 * fraction))
            self.backed_off = True
        elif fraction < LOSS_PROBE_UP:
            ceiling = MAX_BPS if self.remb is None else self.remb * ABOVE_REMB
            self.loss_bps = min(self.loss_bps * PROBE_UP_FACTOR, ceiling)
        self.changed_at = time.monotonic()

    def as_dict(self) -> dict:
        return {
            "estimate_kbps": round(self.bps / 1000, 1),
            "remb_kbps": None if self.remb is None else round(self.remb / 1000, 1),
            "loss_based_kbps": round(self.loss_bps / 1000, 1),
            "fraction_lost": round(self.loss, 4),
        }
