"""A viewer's loss figure comes from receiver reports' cumulative counters, not from each
report's own fraction (a browser sends one with each NACK, covering a few packets)."""

from __future__ import annotations

from airclass_media.estimate import (
    LOSS_PROBE_UP,
    LOSS_REPORT_FEW_PACKETS,
    LOSS_REPORT_PACKETS,
    PROBE_UP_INTERVAL_S,
    BandwidthEstimate,
)


def reports(
    estimate: BandwidthEstimate, lost: int, highest: int, count: int, every: int, lose: int
):
    """`count` reports, each `every` packets further, `lose` of them lost; the counters
    after the last."""
    for _ in range(count):
        highest += every
        lost += lose
        estimate.on_report(lost, highest)
    return lost, highest


def test_random_loss_in_short_reports_is_not_read_as_congestion():
    estimate = BandwidthEstimate()
    estimate.on_report(0, 1000)  # the count starts here
    # 1 packet lost in each report of 5 (20 % a report), none in the next three: 5 % of
    # what a count covers.
    lost, highest = 0, 1000
    for _ in range(5 * LOSS_REPORT_PACKETS // 20):
        lost, highest = reports(estimate, lost, highest, 1, 5, 1)
        lost, highest = reports(estimate, lost, highest, 3, 5, 0)
    assert estimate.reports == 5  # one figure per LOSS_REPORT_PACKETS expected
    assert abs(estimate.loss - 0.05) < 1e-9
    assert not estimate.backed_off
    # The link's background loss grows towards it; NACKs and loss are judged by it, and
    # once it is known the loss-based figure grows again, 8 % a second (it held).
    assert 0.03 < estimate.background_loss < 0.05
    assert estimate.tolerated(LOSS_PROBE_UP) == 2 * estimate.background_loss
    assert estimate.loss_bps == 2_500_000
    estimate.grow(estimate.grown_at + 2.5 * PROBE_UP_INTERVAL_S)
    assert estimate.loss_bps == 2_500_000 * 1.08**2


def test_congestion_backs_off_once_in_a_while_and_a_recount_forgets_what_was_lost():
    estimate = BandwidthEstimate()
    estimate.on_report(0, 0)
    # Most of a few packets lost: counted without waiting for LOSS_REPORT_PACKETS.
    few = LOSS_REPORT_FEW_PACKETS
    lost, highest = reports(estimate, 0, 0, 4, few, few // 2)
    assert estimate.reports == 4 and estimate.backed_off and estimate.loss == 0.5
    assert estimate.background_loss == 0.0  # congestion, not the link's own loss
    # As the congested spell ends, what the link still loses is not its own either.
    lost, highest = reports(estimate, lost, highest, 1, LOSS_REPORT_PACKETS, 5)
    assert estimate.reports == 5 and estimate.loss == 0.05
    assert estimate.background_loss == 0.0
    cut = estimate.bps
    assert cut == 2_500_000 * 0.75  # one cut: at most one each LOSS_DECREASE_INTERVAL_S

    estimate.recount()  # e.g. the viewer went audio only: video stopped
    assert estimate.loss == 0.0
    # The first report after it starts the new count, however much it says was lost.
    estimate.on_report(lost + 500, highest + 600)
    reports(estimate, lost + 500, highest + 600, 1, LOSS_REPORT_PACKETS, 0)
    assert estimate.reports == 6 and estimate.loss == 0.0
    estimate.grow(estimate.grown_at + PROBE_UP_INTERVAL_S)
    assert estimate.bps > cut  # grows again: no loss


def test_a_report_from_before_the_count_starts_it_again():
    estimate = BandwidthEstimate()
    estimate.on_report(10, 500)
    estimate.on_report(5, 400)  # reordered or a new sequence: no figure from it
    assert estimate.reports == 0
    estimate.on_report(5 + LOSS_REPORT_PACKETS, 400 + LOSS_REPORT_PACKETS)
    assert estimate.reports == 1 and estimate.loss == 1.0


def test_a_high_figure_on_a_lossy_link_is_congestion_only_beyond_chance():
    estimate = BandwidthEstimate()
    estimate.on_report(0, 0)
    # A link that loses 5 % anyway: its background loss is learnt.
    lost, highest = reports(estimate, 0, 0, 20, LOSS_REPORT_PACKETS, 5)
    assert 0.04 < estimate.background_loss <= 0.05
    # 11 of 100 lost happens by chance there (one figure in ~90): not congestion.
    lost, highest = reports(estimate, lost, highest, 1, LOSS_REPORT_PACKETS, 11)
    assert estimate.loss == 0.11 and not estimate.congested and not estimate.backed_off
    # 20 of 100 does not: the link is full.
    lost, highest = reports(estimate, lost, highest, 1, LOSS_REPORT_PACKETS, 20)
    assert estimate.congested and estimate.backed_off
    # On a clean link 11 of 100 is congestion.
    clean = BandwidthEstimate()
    clean.on_report(0, 0)
    reports(clean, 0, 0, 1, LOSS_REPORT_PACKETS, 11)
    assert clean.congested and clean.backed_off
    # NACKs: 6 of 40 packets is chance at 5 % background, not on a clean link.
    assert not estimate.too_many(6, 40, 0.03)
    assert clean.too_many(6, 40, 0.03)
    assert estimate.too_many(40, 200, 0.03)


def test_a_cut_goes_no_lower_than_what_reached_the_viewer():
    # 2.5 Mbit/s sent into a 1 Mbit/s link until the lower rung's keyframe: each figure
    # tells the same 70 % loss again; the loss-based figure stops where 30 % of it is.
    estimate = BandwidthEstimate()
    estimate.on_loss(0.7, LOSS_REPORT_FEW_PACKETS, 2_500_000)
    assert estimate.congested and estimate.bps == int(2_500_000 * 0.65)
    estimate.decreased_at -= 1.0  # the decrease interval has passed
    estimate.on_loss(0.7, LOSS_REPORT_FEW_PACKETS, 2_500_000)
    assert estimate.bps == int(2_500_000 * 0.65 * 0.65)
    for _ in range(3):
        estimate.decreased_at -= 1.0
        estimate.on_loss(0.7, LOSS_REPORT_FEW_PACKETS, 2_500_000)
        assert estimate.bps == 750_000  # not x 0.65 again and again: 73 k within 3 s
    estimate.decreased_at -= 1.0
    estimate.on_loss(0.7, LOSS_REPORT_FEW_PACKETS)  # the rate sent unknown: cut as before
    assert estimate.bps == int(750_000 * 0.65)


def test_a_remb_that_dipped_or_climbs_back_is_not_steady():
    """A padding probe starts only on a steady REMB: one growing back from a dip would
    pass any step (see adapt.Adaptation._remb_steady)."""
    estimate = BandwidthEstimate()
    assert not estimate.remb_steady(1.1)  # nothing heard yet
    for remb in (700_000, 720_000, 705_000):
        estimate.on_remb(remb)
    assert estimate.remb_steady(1.1)
    estimate.on_remb(343_000)  # a dip: the link's queue grew
    assert not estimate.remb_steady(1.1)
    estimate.on_remb(708_000)  # and back: still not steady within the window
    assert not estimate.remb_steady(1.1)


def test_padding_stops_at_nacks_beyond_the_background_loss():
    """At 2 % background loss 100 packets lose 2 by chance, up to 4 now and then: a
    padding probe stops at 5 NACKs; with almost no background, at a second NACK."""
    estimate = BandwidthEstimate()
    estimate.background_loss = 0.02
    assert not estimate.beyond_background(4, 100)
    assert estimate.beyond_background(5, 100)
    estimate.background_loss = 0.001
    assert not estimate.beyond_background(1, 100)
    assert estimate.beyond_background(2, 100)
