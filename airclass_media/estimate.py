"""One viewer's bandwidth estimate: the browser's REMB combined with receiver-report loss.

REMB (goog-remb, computed by the browser from abs-send-time arrival trends) is the
delay-based ceiling; receiver reports give the loss, and a loss-based controller (Google
Congestion Control's: above 10 % loss back off by half the loss, while the latest figure
is below 2 % (or twice the link's background loss where that is more) grow 8 % a
second) keeps its own figure. The estimate is the smaller of the two.

The loss is read from the reports' cumulative counters (packets lost, highest sequence
number) over LOSS_REPORT_PACKETS expected packets (fewer when most were lost), not from
each report's own fraction: a browser sends a receiver report with each NACK, covering
the few packets since the previous one, so 2-5 % random loss reads as 7-33 % in single
reports, and a viewer would be sent down on a link that carries its rung. What a link
loses while it is not congested (Wi-Fi, radio) is its `background_loss`: the adaptation
holds NACKs and loss to it, not to zero, before it calls a link full.
Costs a few arithmetic operations per RTCP packet; nothing per RTP packet.
"""

from __future__ import annotations

import math
import time
from collections import deque

#: Before any feedback: what a viewer is assumed to carry (bit/s).
START_BPS = 2_500_000
MIN_BPS = 50_000
MAX_BPS = 50_000_000
LOSS_BACK_OFF = 0.10
LOSS_PROBE_UP = 0.02
PROBE_UP_FACTOR = 1.08
#: ... once per this many seconds (libwebrtc's kBweIncreaseInterval), however often loss
#: figures come (one per 100 packets: every 2 s at 360p).
PROBE_UP_INTERVAL_S = 1.0
#: The loss-based figure may probe at most this far above the latest REMB.
ABOVE_REMB = 1.5
#: A REMB older than this no longer caps the estimate (seconds).
REMB_STALE_S = 10.0
#: A REMB this much under the previous one is a drop: a browser's delay-based estimator
#: lowers its REMB only when it sees its link's queue grow (over-use).
REMB_DROP = 0.97
#: REMBs are kept this long for `remb_steady` (seconds).
REMB_HISTORY_S = 3.0
#: Receiver reports add up to one loss figure once they cover this many expected
#: packets (5 % random loss then reads over 10 % once in ~90 figures), or
#: LOSS_REPORT_FEW_PACKETS when more than LOSS_REPORT_FEW_SHARE of those were lost (a
#: congested link is told in a few packets).
LOSS_REPORT_PACKETS = 100
LOSS_REPORT_FEW_PACKETS = 20
LOSS_REPORT_FEW_SHARE = 0.25
#: Each loss figure not above LOSS_BACK_OFF moves `background_loss` this far to it, once
#: none was above it for BACKGROUND_QUIET_S: the few percent a link loses as a
#: congested spell ends (its queue draining) are not what it loses anyway.
BACKGROUND_WEIGHT = 0.2
BACKGROUND_QUIET_S = 2.0
#: The loss-based figure backs off at most this often (libwebrtc's kBweDecreaseInterval):
#: a congested link's figures come every 20 packets, and each cut the estimate of a
#: viewer still on a rung its link cannot carry (to 0.1 Mbit/s in a second at 80 %
#: loss: then even the lowest rung "did not fit").
LOSS_DECREASE_INTERVAL_S = 0.3
#: A loss figure above LOSS_BACK_OFF says congestion only when its count of lost packets
#: is this many standard deviations above what the background loss would lose: 13 of
#: 100 at 5 % (one figure in ~500 by chance), 2 of 20 on a clean link.
CONGESTED_DEVIATIONS = 3


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
        "background_loss",
        "decreased_at",
        "congested_at",
        "grown_at",
        "congested",
        "_counted",
        "_rembs_kept",
    )

    def __init__(self, start_bps: int = START_BPS) -> None:
        self.remb: int | None = None
        self.remb_at = 0.0
        self.loss_bps = float(start_bps)
        self.loss = 0.0
        #: The latest loss figure says the link is full (see `on_loss`).
        self.congested = False
        self.background_loss = 0.0
        self.decreased_at = -LOSS_DECREASE_INTERVAL_S
        self.congested_at = -BACKGROUND_QUIET_S
        self.grown_at = time.monotonic()
        self.rembs = 0
        self.remb_drops = 0
        self.reports = 0
        self.backed_off = False
        self.changed_at = time.monotonic()
        #: (cumulative lost, extended highest sequence number) where the loss figure
        #: being added up starts; None: the next report starts one.
        self._counted: tuple[int, int] | None = None
        #: (time, REMB) of the last REMB_HISTORY_S.
        self._rembs_kept: deque[tuple[float, int]] = deque()

    @property
    def known(self) -> bool:
        """True once the viewer said something about its rate (a REMB, or loss that made
        the estimate back off): until then START_BPS only paces, it chooses nothing."""
        return self.remb is not None or self.backed_off

    @property
    def bps(self) -> int:
        self.grow(time.monotonic())
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
        kept = self._rembs_kept
        kept.append((self.remb_at, self.remb))
        while kept[0][0] < self.remb_at - REMB_HISTORY_S:
            kept.popleft()
        # The loss controller probes from where the delay-based figure is, not far above.
        self.loss_bps = min(self.loss_bps, self.remb * ABOVE_REMB)
        self.changed_at = self.remb_at

    def remb_steady(self, spread: float) -> bool:
        """Did the REMBs of the last REMB_HISTORY_S stay within `spread` (highest over
        lowest)? A REMB that dipped or still climbs back moves on its own."""
        rembs = [remb for _, remb in self._rembs_kept]
        return bool(rembs) and max(rembs) <= min(rembs) * spread

    def on_probe(self, bitrate: int) -> None:
        """A probe found the link carries `bitrate` (bit/s): the loss-based figure, cut
        by loss on a weak spell and climbing back 8 % a report, starts there."""
        self.loss_bps = max(self.loss_bps, float(bitrate))
        self.changed_at = time.monotonic()

    def on_report(self, lost: int, highest_sequence: int, sent_bps: float = 0.0) -> None:
        """A receiver report's cumulative packets lost and extended highest sequence
        number: once LOSS_REPORT_PACKETS more are expected than where the count started
        (or LOSS_REPORT_FEW_PACKETS, most of them lost), the share of them lost is one
        loss figure (`on_loss`). `sent_bps`: the rate of the video sent (0: unknown)."""
        if self._counted is None:
            self._counted = (lost, highest_sequence)
            return
        expected = highest_sequence - self._counted[1]
        if expected < 0:  # a report reordered, or a new sequence: count from here
            self._counted = (lost, highest_sequence)
            return
        if expected < LOSS_REPORT_FEW_PACKETS:
            return
        fraction = min(max((lost - self._counted[0]) / expected, 0.0), 1.0)
        if expected < LOSS_REPORT_PACKETS and fraction <= LOSS_REPORT_FEW_SHARE:
            return
        self._counted = (lost, highest_sequence)
        self.on_loss(fraction, expected, sent_bps)

    def recount(self) -> None:
        """Forget the loss counted so far: the next report starts a new count (what was
        lost before it, of video no longer sent, says nothing of what is sent now)."""
        self._counted = None
        self.loss = 0.0
        self.congested = False

    def on_loss(
        self, fraction: float, packets: int = LOSS_REPORT_PACKETS, sent_bps: float = 0.0
    ) -> None:
        """A loss figure (0..1): the share of the `packets` expected since the previous
        one that were lost. Above LOSS_BACK_OFF it says the link is full (`congested`),
        unless the link's background loss makes that count likely by chance (one figure
        in ~90 reads over 10 % at 5 % random loss, and each sent a viewer a rung down).
        A cut goes no lower than what reached the viewer of `sent_bps`: the video sent
        changes only at a rung's keyframe, and until then each figure told the same
        loss again (2.5 Mbit/s into 1 Mbit/s was cut to 73 kbit/s in 3 s)."""
        self.reports += 1
        self.loss = fraction
        now = time.monotonic()
        self.congested = fraction > LOSS_BACK_OFF and _beyond_chance(
            fraction * packets, self.background_loss * packets, CONGESTED_DEVIATIONS
        )
        if self.congested:
            if now - self.decreased_at >= LOSS_DECREASE_INTERVAL_S:
                cut = self.loss_bps * (1 - 0.5 * fraction)
                reached = min(self.loss_bps, sent_bps * (1 - fraction))
                self.loss_bps = max(MIN_BPS, cut, reached)
                self.decreased_at = now
            self.congested_at = now
            self.backed_off = True
        elif now - self.congested_at >= BACKGROUND_QUIET_S:
            self.background_loss += BACKGROUND_WEIGHT * (fraction - self.background_loss)
        if fraction >= self.tolerated(LOSS_PROBE_UP):
            self.grown_at = now  # held (or cut): growth starts again from here
        self.changed_at = now

    def grow(self, now: float) -> None:
        """The loss-based figure grows PROBE_UP_FACTOR per PROBE_UP_INTERVAL_S while the
        latest loss figure is low (none yet: no news), up to ABOVE_REMB x the REMB."""
        if not self.reports or self.loss >= self.tolerated(LOSS_PROBE_UP):
            self.grown_at = now
            return
        steps = int((now - self.grown_at) / PROBE_UP_INTERVAL_S)
        if steps > 0:
            ceiling = MAX_BPS if self.remb is None else self.remb * ABOVE_REMB
            if self.loss_bps < ceiling:
                self.loss_bps = min(self.loss_bps * PROBE_UP_FACTOR**steps, ceiling)
            self.grown_at += steps * PROBE_UP_INTERVAL_S

    def tolerated(self, share: float) -> float:
        """A share of loss (or NACKs) that says a link is full, on this link: `share`, or
        twice its background loss where that is more (a link that drops 5 % at any rate
        is not full when it drops 5 % of a rung)."""
        return max(share, 2 * self.background_loss)

    def too_many(self, events: int, packets: int, share: float) -> bool:
        """Are `events` (NACKs, losses) among `packets` more than this link's tolerated
        `share` of them, by more than chance? Half a second of 360p is a few dozen
        packets; at 5 % random loss those hold 4 or 5 losses now and then, which a bare
        share read as a full link (a probe up failed at 8.6 % NACKed against 8.4 %). The
        bound is the expected count plus two standard deviations, plus one."""
        return _beyond_chance(events, self.tolerated(share) * packets, 2)

    def beyond_background(self, events: int, packets: int) -> bool:
        """Are `events` among `packets` more than one and more than what the background
        loss makes likely (two standard deviations)? Tighter than `too_many`: what a
        padding probe stops at (with twice the background tolerated, padding into a full
        1 Mbit/s link lost 28 % of it)."""
        expected = self.background_loss * packets
        return events > max(1.0, expected + 2 * math.sqrt(expected))

    def as_dict(self) -> dict:
        return {
            "estimate_kbps": round(self.bps / 1000, 1),
            "remb_kbps": None if self.remb is None else round(self.remb / 1000, 1),
            "loss_based_kbps": round(self.loss_bps / 1000, 1),
            "fraction_lost": round(self.loss, 4),
            "background_loss": round(self.background_loss, 4),
        }


def _beyond_chance(count: float, expected: float, deviations: float) -> bool:
    """Is `count` more than `deviations` standard deviations (Poisson) and one above an
    `expected` count of random events?"""
    return count > expected + deviations * math.sqrt(expected) + 1
