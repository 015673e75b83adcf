"""The report's suggestions never contradict its figures: confusion shown on the dashboard
is never met with "no sign of trouble"."""

from __future__ import annotations

from airclass_web.ai import feedback

QUIET_CLASS = {"summary": {"students": 2}, "students": []}


def codes(**kwargs) -> list[str]:
    args = {"peaks": [], "unanswered": [], "topics": [], "engagement": QUIET_CLASS, "quizzes": []}
    return [s["code"] for s in feedback.suggestions(**(args | kwargs))]


def test_a_calm_class_keeps_the_pace():
    assert codes() == ["keep_going"]


def test_one_confused_message_without_a_peak_is_not_no_trouble():
    found = codes(confused=1)
    assert "keep_going" not in found and "check_in" in found
