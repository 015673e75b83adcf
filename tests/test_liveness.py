"""When a viewer counts as silent (airclass_media.liveness): pure, no clock."""

from __future__ import annotations

from airclass_media.liveness import FIRST_GAP_S, SILENT_GAPS, SILENT_MIN_S, Liveness


def test_a_browser_reporting_every_second_is_silent_after_a_few_seconds():
    viewer = Liveness()
    assert viewer.silent_for(100.0) is None  # never heard: left to ICE consent
    for second in range(10):
        viewer.heard(float(second))
        viewer.heard(second + 0.001)  # the REMB in the same datagram: one hearing
    assert viewer.silent_for(9.0 + SILENT_MIN_S) is None
    assert viewer.silent_for(9.0 + SILENT_GAPS + 0.1) == SILENT_GAPS + 0.1
    viewer.heard(20.0)  # heard again
    assert viewer.silent_for(20.5) is None


def test_a_client_reporting_every_five_seconds_is_not_cut_off_between_reports():
    viewer = Liveness()
    viewer.heard(0.0)
    # One hearing: RTCP's nominal interval is assumed.
    assert viewer.silent_for(SILENT_GAPS * FIRST_GAP_S - 1) is None
    assert viewer.silent_for(SILENT_GAPS * FIRST_GAP_S + 1) is not None
    for at in (5.0, 10.5, 14.8, 20.0):
        viewer.heard(at)
    assert viewer.silent_for(20.0 + 7.5) is None  # a report late by half its interval
    assert viewer.silent_for(20.0 + SILENT_GAPS * 5.2) is not None
    # One long gap (a connection coming up, a lost report) is not its habit.
    quick = Liveness()
    for at in (0.0, 8.0, 9.0, 10.0, 11.0):
        quick.heard(at)
    assert quick.silent_for(11.0 + SILENT_GAPS + 0.5) is not None
