"""Engagement: per-student attention, participation, quiz accuracy, overall (0-100),
confusion detection with alerts to the teacher, and a trend over the session.

Everything is computed from stored documents (engagement_events, chat_messages,
quiz_responses, quizzes), so every node gives the same answer and a restart loses nothing.

- attention: share of the time since the student joined during which the video was
  playing and the tab visible (disconnected time counts as not attentive);
- participation: answered / published quizzes (60%) and chat activity, 5 messages = full
  (40%); without quizzes, chat alone;
- quiz accuracy: correct / answered; None until the first answer;
- overall: 40% attention, 30% participation, 30% accuracy (reweighted without accuracy);
- confusion: confusion words in chat (Korean and English), repeated questions, low
  accuracy; a score >= 50 flags the student and alerts the teacher.

A report of a long, large class (2 hours, 450 students: ~40 000 documents) takes a few
hundred milliseconds of Python. It never runs on the event loop: the documents are read by
the store's thread and the report is computed in a worker thread, in one pass per student
(attentive intervals computed once, then split into trend buckets). Requests for the same
session share one computation, and a report younger than REPORT_TTL is reused, so any
number of teacher and monitor pages polling every 4 s cost one computation per session
per REPORT_TTL. Per-session state (alert times, cached reports) is evicted when the
session ends (`forget_session`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from collections.abc import Callable

from ..store import Store
from .sessions import new_id

CONFUSION_WORDS = (
    "모르겠",
    "이해가 안",
    "이해 안",
    "이해못",
    "이해 못",
    "헷갈",
    "어려워",
    "어렵다",
    "무슨 말",
    "뭔 말",
    "다시 설명",
    "confused",
    "confusing",
    "don't understand",
    "dont understand",
    "do not understand",
    "don't get it",
    "dont get it",
    "i'm lost",
    "im lost",
    "no idea",
    "what does that mean",
    "can you repeat",
    "explain again",
)
QUESTION = re.compile(r"[?？]|^(왜|어떻게|뭐|무엇|what|why|how)\b", re.IGNORECASE)
CONFUSED_AT = 50
LOW_ACCURACY = 50.0
ALERT_EVERY = 60.0
TREND_BUCKETS = 12
#: A session report is reused by every page asking within this many seconds.
REPORT_TTL = 2.0


def confusion_words(text: str) -> list[str]:
    low = text.casefold()
    return [w for w in CONFUSION_WORDS if w in low]


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.casefold()).strip()


def repeated_questions(texts: list[str]) -> int:
    """Questions asked again: same normalised text, or the 3rd+ question in chat."""
    questions = [_norm(t) for t in texts if QUESTION.search(t)]
    repeats = len(questions) - len(set(questions))
    return repeats + max(0, len(questions) - 2)


def attentive_intervals(events: list[dict], start: float, end: float) -> list[tuple[float, float]]:
    """Intervals within [start, end] during which the student was attentive (video
    playing and tab visible), from their events in time order."""
    out: list[tuple[float, float]] = []
    state = False
    last = None
    for ev in events:
        t = min(max(ev["timestamp"], start), end)
        if last is not None and state and t > last:
            out.append((last, t))
        last = t
        kind = ev["kind"]
        if kind == "presence" or kind == "online":
            state = bool(ev.get("playing")) and bool(ev.get("visible"))
        elif kind in ("offline", "join", "leave"):
            state = False
    if last is not None and state and end > last:
        out.append((last, end))
    return out


def _bucket_shares(
    intervals: list[tuple[float, float]], join: float, start: float, width: float
) -> list[float | None]:
    """Per trend bucket: the attentive share of the time since joining (None: not joined)."""
    attentive = [0.0] * TREND_BUCKETS
    for a, b in intervals:
        i = max(0, min(TREND_BUCKETS - 1, int((a - start) / width)))
        while i < TREND_BUCKETS and a < b:
            b1 = start + (i + 1) * width
            cut = min(b, b1) if i < TREND_BUCKETS - 1 else b
            attentive[i] += max(0.0, cut - a)
            a = cut
            i += 1
    shares: list[float | None] = []
    for i in range(TREND_BUCKETS):
        b0, b1 = start + i * width, start + (i + 1) * width
        total = b1 - max(b0, join)
        shares.append(attentive[i] / total if join < b1 and total > 0 else None)
    return shares


def _score(value: float) -> int:
    return int(round(max(0.0, min(100.0, value))))


class EngagementService:
    def __init__(self, store: Store, publish: Callable[[dict], None]) -> None:
        self.store = store
        self.publish = publish
        self._last_alert: dict[tuple[str, str, str], float] = {}
        self._reports: dict[str, tuple[float, dict]] = {}
        self._running: dict[str, asyncio.Future] = {}

    # -- recording -----------------------------------------------------------------
    async def record(self, session_id: str, student_id: str, kind: str, **fields) -> None:
        await self.store.insert(
            "engagement_events",
            {
                "id": new_id("ev"),
                "session_id": session_id,
                "student_id": student_id,
                "kind": kind,
                "timestamp": time.time(),
                **fields,
            },
        )

    async def alert(
        self, session_id: str, student_id: str, name: str, reason: str, detail: str = ""
    ) -> bool:
        """Alert the teacher (at most once a minute per student and reason, per node)."""
        key = (session_id, student_id, reason)
        now = time.monotonic()
        if now - self._last_alert.get(key, -ALERT_EVERY) < ALERT_EVERY:
            return False
        self._last_alert[key] = now
        await self.record(session_id, student_id, "alert", reason=reason, detail=detail)
        self.publish(
            {
                "session_id": session_id,
                "type": "alert",
                "to": "staff",
                "alert": {
                    "kind": "confusion",
                    "reason": reason,
                    "student_id": student_id,
                    "name": name,
                    "detail": detail,
                    "timestamp": time.time(),
                },
            }
        )
        return True

    # -- live detection --------------------------------------------------------------
    async def on_chat(self, message: dict) -> None:
        if message.get("role") != "student":
            return
        words = confusion_words(message["text"])
        if words:
            await self.alert(
                message["session_id"],
                message["user_id"],
                message["name"],
                "confusion_words",
                message["text"][:200],
            )
            return
        if QUESTION.search(message["text"]):
            recent = await self.store.find(
                "chat_messages",
                {"session_id": message["session_id"], "user_id": message["user_id"]},
                order_by="timestamp",
                descending=True,
                limit=10,
            )
            if repeated_questions([m["text"] for m in recent]) > 0:
                await self.alert(
                    message["session_id"],
                    message["user_id"],
                    message["name"],
                    "repeated_questions",
                    message["text"][:200],
                )

    async def on_answer(self, quiz: dict, response: dict) -> None:
        answers = await self.store.find(
            "quiz_responses",
            {"session_id": response["session_id"], "student_id": response["student_id"]},
        )
        if len(answers) >= 2:
            accuracy = 100.0 * sum(1 for a in answers if a.get("correct")) / len(answers)
            if accuracy < LOW_ACCURACY:
                await self.alert(
                    response["session_id"],
                    response["student_id"],
                    response.get("name", ""),
                    "low_accuracy",
                    f"{accuracy:.0f}%",
                )

    # -- reports ----------------------------------------------------------------------
    async def _load(self, session: dict, student_id: str | None = None):
        sid = session["id"]
        where = {"session_id": sid}
        if student_id:
            events = await self.store.find(
                "engagement_events", {**where, "student_id": student_id}, order_by="timestamp"
            )
            chats = await self.store.find(
                "chat_messages", {**where, "user_id": student_id}, order_by="timestamp"
            )
            answers = await self.store.find(
                "quiz_responses", {**where, "student_id": student_id}, order_by="timestamp"
            )
        else:
            events = await self.store.find("engagement_events", where, order_by="timestamp")
            chats = await self.store.find("chat_messages", where, order_by="timestamp")
            answers = await self.store.find("quiz_responses", where, order_by="timestamp")
        quizzes = await self.store.find("quizzes", where, order_by="created_at")
        return events, chats, answers, quizzes

    # -- reports (computed off the event loop) ------------------------------------------
    async def session_report(self, session: dict) -> dict:
        """The report of every student; shared by concurrent callers, reused briefly."""
        sid = session["id"]
        cached = self._reports.get(sid)
        if cached is not None and time.monotonic() - cached[0] < REPORT_TTL:
            return cached[1]
        running = self._running.get(sid)
        if running is None:
            running = asyncio.ensure_future(self._compute_session_report(session))
            self._running[sid] = running
            running.add_done_callback(lambda _t, sid=sid: self._running.pop(sid, None))
        return await asyncio.shield(running)

    async def _compute_session_report(self, session: dict) -> dict:
        events, chats, answers, quizzes = await self._load(session)
        report = await asyncio.to_thread(
            session_report, session, events, chats, answers, quizzes, time.time()
        )
        if session.get("status", "active") == "active":  # an ended session's is not kept
            now = time.monotonic()
            if len(self._reports) > 100:
                self._reports = {k: v for k, v in self._reports.items() if now - v[0] < REPORT_TTL}
            self._reports[session["id"]] = (now, report)
        return report

    async def student_report(self, session: dict, student_id: str) -> dict | None:
        events, chats, answers, quizzes = await self._load(session, student_id)
        if not any(e["kind"] == "join" for e in events):
            return None
        return await asyncio.to_thread(
            student_report, session, events, chats, answers, quizzes, time.time()
        )

    # -- per-session state --------------------------------------------------------------
    def forget_session(self, session_id: str) -> None:
        """The session ended: drop its alert times and cached report."""
        for key in [k for k in self._last_alert if k[0] == session_id]:
            del self._last_alert[key]
        self._reports.pop(session_id, None)

    def cache_sizes(self) -> dict[str, int]:
        return {"alert_times": len(self._last_alert), "reports": len(self._reports)}


# -- pure report functions (run in a worker thread) -------------------------------------
def _student(events, chats, answers, published, start, end) -> tuple[dict, list]:
    """(report of one student, their attentive intervals)."""
    join = next((e for e in events if e["kind"] == "join"), None)
    intervals = attentive_intervals(events, start, end)
    attentive = sum(b - a for a, b in intervals)
    begin = max(start, join["timestamp"]) if join else start
    total = max(0.0, end - begin)
    attention = 100.0 * attentive / total if total > 0 else 0.0
    chat_count = sum(1 for c in chats if c.get("role") == "student")
    answered = len(answers)
    correct = sum(1 for a in answers if a.get("correct"))
    chat_part = min(1.0, chat_count / 5.0)
    if published:
        participation = 100.0 * (0.6 * min(1.0, answered / published) + 0.4 * chat_part)
    else:
        participation = 100.0 * chat_part
    accuracy = 100.0 * correct / answered if answered else None
    if accuracy is None:
        overall = (0.4 * attention + 0.3 * participation) / 0.7
    else:
        overall = 0.4 * attention + 0.3 * participation + 0.3 * accuracy
    texts = [c["text"] for c in chats if not c.get("deleted")]
    words = sorted({w for t in texts for w in confusion_words(t)})
    repeats = repeated_questions(texts)
    reasons, score = [], 0.0
    if words:
        reasons.append("confusion_words")
        score += 50 + 10 * (len(words) - 1)
    if repeats:
        reasons.append("repeated_questions")
        score += 25 * repeats
    if accuracy is not None and answered >= 2 and accuracy < LOW_ACCURACY:
        reasons.append("low_accuracy")
        score += (LOW_ACCURACY - accuracy) + 30
    last_presence = next(
        (e for e in reversed(events) if e["kind"] in ("presence", "online", "offline")), None
    )
    report = {
        "student_id": join["student_id"] if join else events[0]["student_id"],
        "name": join.get("name") if join else "",
        "joined_at": join["timestamp"] if join else None,
        "attention": _score(attention),
        "participation": _score(participation),
        "quiz_accuracy": None if accuracy is None else _score(accuracy),
        "overall": _score(overall),
        "chat_messages": chat_count,
        "answers": answered,
        "correct": correct,
        "confusion": {
            "score": _score(score),
            "confused": score >= CONFUSED_AT,
            "reasons": reasons,
            "words": words,
        },
        "online": bool(last_presence and last_presence["kind"] != "offline"),
        "alerts": sum(1 for e in events if e["kind"] == "alert"),
    }
    return report, intervals


def _trend(per_student, chats, answers, start, end) -> list[dict]:
    """Per time bucket: average attention of joined students, chat and answers.

    per_student: (join time, attentive intervals) of each student."""
    width = max(end - start, 1.0) / TREND_BUCKETS
    shares: list[list[float]] = [[] for _ in range(TREND_BUCKETS)]
    for join, intervals in per_student:
        if join is None:
            continue
        for i, share in enumerate(_bucket_shares(intervals, join, start, width)):
            if share is not None:
                shares[i].append(share)

    def bucket(t: float) -> int | None:
        i = int((t - start) // width)
        return i if 0 <= i < TREND_BUCKETS else None

    chat_n = [0] * TREND_BUCKETS
    for c in chats:
        i = bucket(c["timestamp"])
        if i is not None:
            chat_n[i] += 1
    ans_n, ans_ok = [0] * TREND_BUCKETS, [0] * TREND_BUCKETS
    for a in answers:
        i = bucket(a["timestamp"])
        if i is not None:
            ans_n[i] += 1
            ans_ok[i] += 1 if a.get("correct") else 0
    return [
        {
            "start": start + i * width,
            "end": start + (i + 1) * width,
            "attention": _score(100 * sum(shares[i]) / len(shares[i])) if shares[i] else None,
            "chat_messages": chat_n[i],
            "answers": ans_n[i],
            "accuracy": _score(100 * ans_ok[i] / ans_n[i]) if ans_n[i] else None,
        }
        for i in range(TREND_BUCKETS)
    ]


def session_report(session, events, chats, answers, quizzes, now: float) -> dict:
    start = session["started_at"]
    end = session.get("ended_at") or now
    published = sum(1 for q in quizzes if q.get("published_at"))
    ev_by, chat_by, ans_by = defaultdict(list), defaultdict(list), defaultdict(list)
    for e in events:
        ev_by[e["student_id"]].append(e)
    for c in chats:
        chat_by[c["user_id"]].append(c)
    for a in answers:
        ans_by[a["student_id"]].append(a)
    students, per_student = [], []
    for s, evs in ev_by.items():
        if not any(e["kind"] == "join" for e in evs):
            continue
        report, intervals = _student(evs, chat_by[s], ans_by[s], published, start, end)
        students.append(report)
        per_student.append((report["joined_at"], intervals))
    students.sort(key=lambda s: s["joined_at"] or 0)

    def avg(key):
        vals = [s[key] for s in students if s[key] is not None]
        return _score(sum(vals) / len(vals)) if vals else None

    return {
        "session_id": session["id"],
        "generated_at": now,
        "students": students,
        "summary": {
            "students": len(students),
            "online": sum(1 for s in students if s["online"]),
            "attention": avg("attention"),
            "participation": avg("participation"),
            "quiz_accuracy": avg("quiz_accuracy"),
            "overall": avg("overall"),
            "confused": [s["student_id"] for s in students if s["confusion"]["confused"]],
            "quizzes_published": published,
        },
        "trend": _trend(per_student, chats, answers, start, end),
    }


def student_report(session, events, chats, answers, quizzes, now: float) -> dict:
    start = session["started_at"]
    end = session.get("ended_at") or now
    published = sum(1 for q in quizzes if q.get("published_at"))
    report, intervals = _student(events, chats, answers, published, start, end)
    report["session_id"] = session["id"]
    report["trend"] = _trend([(report["joined_at"], intervals)], chats, answers, start, end)
    report["alerts_detail"] = [
        {k: e.get(k) for k in ("reason", "detail", "timestamp")}
        for e in events
        if e["kind"] == "alert"
    ]
    return report
