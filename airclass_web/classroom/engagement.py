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
"""

from __future__ import annotations

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


def attentive_seconds(events: list[dict], start: float, end: float) -> tuple[float, float]:
    """(attentive seconds, total seconds) in [start, end] from a student's events."""
    attentive = 0.0
    state = False
    last = None
    for ev in events:
        t = min(max(ev["timestamp"], start), end)
        if last is not None and state:
            attentive += max(0.0, t - last)
        last = t
        kind = ev["kind"]
        if kind == "presence":
            state = bool(ev.get("playing")) and bool(ev.get("visible"))
        elif kind in ("offline", "join", "online", "leave"):
            state = (
                False if kind != "online" else bool(ev.get("playing")) and bool(ev.get("visible"))
            )
    if last is not None and state:
        attentive += max(0.0, end - last)
    first = next((e["timestamp"] for e in events if e["kind"] == "join"), None)
    begin = max(start, first if first is not None else start)
    return attentive, max(0.0, end - begin)


def _score(value: float) -> int:
    return int(round(max(0.0, min(100.0, value))))


class EngagementService:
    def __init__(self, store: Store, publish: Callable[[dict], None]) -> None:
        self.store = store
        self.publish = publish
        self._last_alert: dict[tuple[str, str, str], float] = {}

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

    def _student(self, sid, events, chats, answers, published, start, end) -> dict:
        join = next((e for e in events if e["kind"] == "join"), None)
        attentive, total = attentive_seconds(events, start, end)
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
        return {
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

    def _trend(self, events, chats, answers, start, end, students) -> list[dict]:
        """Per time bucket: average attention of joined students, chat and answers."""
        span = max(end - start, 1.0)
        width = span / TREND_BUCKETS
        out = []
        by_student = defaultdict(list)
        for e in events:
            by_student[e["student_id"]].append(e)
        for i in range(TREND_BUCKETS):
            b0, b1 = start + i * width, start + (i + 1) * width
            shares = []
            for evs in by_student.values():
                join = next((e["timestamp"] for e in evs if e["kind"] == "join"), None)
                if join is None or join >= b1:
                    continue
                attentive, total = attentive_seconds(evs, b0, b1)
                if total > 0:
                    shares.append(attentive / total)
            in_bucket = [a for a in answers if b0 <= a["timestamp"] < b1]
            correct = sum(1 for a in in_bucket if a.get("correct"))
            out.append(
                {
                    "start": b0,
                    "end": b1,
                    "attention": _score(100 * sum(shares) / len(shares)) if shares else None,
                    "chat_messages": sum(1 for c in chats if b0 <= c["timestamp"] < b1),
                    "answers": len(in_bucket),
                    "accuracy": _score(100 * correct / len(in_bucket)) if in_bucket else None,
                }
            )
        return out

    async def session_report(self, session: dict) -> dict:
        events, chats, answers, quizzes = await self._load(session)
        now = time.time()
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
        students = [
            self._student(session["id"], evs, chat_by[s], ans_by[s], published, start, end)
            for s, evs in ev_by.items()
            if any(e["kind"] == "join" for e in evs)
        ]
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
            "trend": self._trend(events, chats, answers, start, end, students),
        }

    async def student_report(self, session: dict, student_id: str) -> dict | None:
        events, chats, answers, quizzes = await self._load(session, student_id)
        if not any(e["kind"] == "join" for e in events):
            return None
        now = time.time()
        start = session["started_at"]
        end = session.get("ended_at") or now
        published = sum(1 for q in quizzes if q.get("published_at"))
        report = self._student(session["id"], events, chats, answers, published, start, end)
        report["session_id"] = session["id"]
        report["trend"] = self._trend(events, chats, answers, start, end, [report])
        report["alerts_detail"] = [
            {k: e.get(k) for k in ("reason", "detail", "timestamp")}
            for e in events
            if e["kind"] == "alert"
        ]
        return report
