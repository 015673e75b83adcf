"""The teacher's analytics dashboard: figures computed from stored documents, so a
finished session's dashboard stays available and every node answers the same.

Activity score (like BigBlueButton's learning dashboard: participation signals, not
grades): for each signal (time present, chat messages, questions, quiz answers) the
student's value / the best student's value x 2.5, summed: 0-10.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time

from aiohttp import web

from ..ai import nlp
from ..ai.feedback import unanswered_questions

#: Live figures (messages per minute, confusion index) look at this many seconds.
WINDOW = 300.0
SIGNALS = ("present_seconds", "messages", "questions", "quiz_answers")
SCORE_FORMULA = (
    "activity = Σ over time present, chat messages, questions and quiz answers of "
    "(student ÷ best student) × 2.5 (0-10)"
)
CSV_FIELDS = (
    "student_id",
    "name",
    "joined_at",
    "left_at",
    "present_seconds",
    "messages",
    "questions",
    "quiz_answers",
    "quiz_correct",
    "quiz_accuracy",
    "activity_score",
)


def _iso(t: float | None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else ""


def presence_intervals(events: list[dict], end: float) -> list[tuple[float, float]]:
    """Connected intervals of one student from online/offline events (time order)."""
    out, since = [], None
    for e in events:
        if e["kind"] == "online" and since is None:
            since = e["timestamp"]
        elif e["kind"] in ("offline", "leave") and since is not None:
            out.append((since, min(e["timestamp"], end)))
            since = None
    if since is not None:
        out.append((since, end))
    return out


def student_rows(session, events, chats, answers, analysis, now) -> list[dict]:
    end = session.get("ended_at") or now
    by_student: dict[str, list[dict]] = {}
    for e in events:
        by_student.setdefault(e["student_id"], []).append(e)
    rows = []
    for sid, evs in by_student.items():
        join = next((e for e in evs if e["kind"] == "join"), None)
        if join is None:
            continue
        intervals = presence_intervals(evs, end)
        last = next((e for e in reversed(evs) if e["kind"] in ("online", "offline", "leave")), None)
        online = bool(last and last["kind"] == "online") and session.get("status") == "active"
        mine = [c for c in chats if c["user_id"] == sid and c.get("role") == "student"]
        ans = [a for a in answers if a["student_id"] == sid]
        correct = sum(1 for a in ans if a.get("correct"))
        rows.append(
            {
                "student_id": sid,
                "name": join.get("name", ""),
                "joined_at": join["timestamp"],
                "left_at": None if online or last is None else last["timestamp"],
                "online": online,
                "present_seconds": round(sum(b - a for a, b in intervals)),
                "messages": len(mine),
                "questions": sum(1 for c in mine if analysis[c["id"]]["question"]),
                "confusion": sum(1 for c in mine if analysis[c["id"]]["confusion"]),
                "quiz_answers": len(ans),
                "quiz_correct": correct,
                "quiz_accuracy": round(100 * correct / len(ans)) if ans else None,
            }
        )
    best = {k: max((r[k] for r in rows), default=0) for k in SIGNALS}
    for r in rows:
        parts = {k: (2.5 * r[k] / best[k] if best[k] else 0.0) for k in SIGNALS}
        r["activity_parts"] = {k: round(v, 2) for k, v in parts.items()}
        r["activity_score"] = round(sum(parts.values()), 1)
    rows.sort(key=lambda r: r["joined_at"])
    return rows


class DashboardService:
    def __init__(self, classroom, ai, recorder_urls) -> None:
        """recorder_urls(doc) -> the recording with signed URLs (recording.with_urls)."""
        self.c = classroom
        self.store = classroom.store
        self.ai = ai
        self.recorder_urls = recorder_urls

    async def _load(self, session: dict):
        sid = session["id"]
        events = await self.store.find(
            "engagement_events", {"session_id": sid}, order_by="timestamp"
        )
        chats = [
            c
            for c in await self.store.find(
                "chat_messages", {"session_id": sid}, order_by="timestamp"
            )
            if not c.get("deleted")
        ]
        answers = await self.store.find("quiz_responses", {"session_id": sid}, order_by="timestamp")
        analysis = dict(
            zip(
                (c["id"] for c in chats),
                await asyncio.to_thread(nlp.analyse_messages, [c["text"] for c in chats]),
                strict=True,
            )
        )
        return events, chats, answers, analysis

    async def students(self, session: dict) -> dict:
        events, chats, answers, analysis = await self._load(session)
        rows = await asyncio.to_thread(
            student_rows, session, events, chats, answers, analysis, time.time()
        )
        return {"session_id": session["id"], "formula": SCORE_FORMULA, "students": rows}

    async def alerts(self, session: dict) -> dict:
        events = await self.store.find(
            "engagement_events",
            {"session_id": session["id"], "kind": "alert"},
            order_by="timestamp",
        )
        names = {
            e["student_id"]: e.get("name", "")
            for e in await self.store.find(
                "engagement_events", {"session_id": session["id"], "kind": "join"}
            )
        }
        return {
            "session_id": session["id"],
            "alerts": [
                {
                    "student_id": e["student_id"],
                    "name": names.get(e["student_id"], ""),
                    "reason": e.get("reason"),
                    "detail": e.get("detail", ""),
                    "timestamp": e["timestamp"],
                }
                for e in events
            ],
        }

    async def quizzes(self, session: dict) -> list[dict]:
        out = []
        for q in await self.c.quizzes.for_session(session["id"]):
            s = await self.c.quizzes.statistics(q)
            acc = s.get("accuracy")
            out.append(
                {
                    "quiz_id": q["id"],
                    "question": q.get("question", ""),
                    "status": q.get("status"),
                    "answers": s.get("total", 0),
                    "correct": s.get("correct", 0),
                    "accuracy": acc,
                    # Difficulty: share of wrong answers (0 easy - 100 hard).
                    "difficulty": None if acc is None else round(100 - acc),
                }
            )
        return out

    async def recordings(self, session: dict) -> list[dict]:
        docs = await self.store.list_recordings(session_id=session["id"])
        out = []
        for d in docs:
            signed = self.recorder_urls(d)
            out.append(
                {
                    "id": d["id"],
                    "status": d.get("status"),
                    "started_at": d.get("started_at"),
                    "duration": d.get("duration"),
                    "page_url": signed.get("page_url") if signed else None,
                    "screenshots": len(d.get("screenshots", [])),
                }
            )
        return out

    async def overview(self, session: dict) -> dict:
        now = time.time()
        events, chats, answers, analysis = await self._load(session)
        rows = await asyncio.to_thread(student_rows, session, events, chats, answers, analysis, now)
        end = session.get("ended_at") or now
        active = session.get("status") == "active"
        since = max(session["started_at"], end - WINDOW) if active else session["started_at"]
        recent = [c for c in chats if c.get("role") == "student" and c["timestamp"] >= since]
        minutes = max((end - since) / 60.0, 1.0)
        confused = sum(1 for c in recent if analysis[c["id"]]["confusion"])
        unanswered = unanswered_questions(chats, analysis, now)
        engagement = await self.c.engagement.session_report(session)
        trend = engagement.get("trend", [])
        for b in trend:
            in_b = [
                c
                for c in chats
                if c.get("role") == "student" and b["start"] <= c["timestamp"] < b["end"]
            ]
            b["confusion"] = sum(1 for c in in_b if analysis[c["id"]]["confusion"])
            b["questions"] = sum(1 for c in in_b if analysis[c["id"]]["question"])
        return {
            "session": {
                k: session.get(k)
                for k in ("id", "title", "stream", "status", "started_at", "ended_at")
            },
            "cards": {
                "present": sum(1 for r in rows if r["online"]),
                "students": len(rows),
                "messages_per_minute": round(len(recent) / minutes, 2),
                "open_questions": sum(1 for q in unanswered if q["open"]),
                "unanswered_questions": len(unanswered),
                "confusion_index": round(100 * confused / len(recent)) if recent else 0,
                "window_seconds": WINDOW if active else round(end - session["started_at"]),
            },
            "questions": unanswered[-20:],
            "trend": trend,
            "quizzes": await self.quizzes(session),
            "recordings": await self.recordings(session),
            "external_ai": await self.ai.external(session["teacher"]),
            "generated_at": now,
        }

    async def slides(self, session: dict) -> dict:
        """The slide timeline with chat and confusion markers under each slide."""
        slides = await self.ai.session_slides(session)
        _, chats, _, analysis = await self._load(session)
        end = session.get("ended_at") or time.time()
        out = []
        for i, s in enumerate(slides):
            until = slides[i + 1]["at"] if i + 1 < len(slides) else end
            mine = [
                c for c in chats if c.get("role") == "student" and s["at"] <= c["timestamp"] < until
            ]
            signed = self.recorder_urls(
                {"id": s["recording_id"], "segments": [], "screenshots": [{"file": s["file"]}]}
            )
            out.append(
                {
                    **{k: s[k] for k in ("index", "at", "title", "keywords", "source")},
                    "until": until,
                    "thumbnail": signed["screenshots"][0]["url"] if signed else None,
                    "messages": len(mine),
                    "questions": sum(1 for c in mine if analysis[c["id"]]["question"]),
                    "confusion": sum(1 for c in mine if analysis[c["id"]]["confusion"]),
                }
            )
        return {"session_id": session["id"], "slides": out}

    async def export_csv(self, session: dict) -> str:
        rows = (await self.students(session))["students"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    **r,
                    "joined_at": _iso(r["joined_at"]),
                    "left_at": _iso(r["left_at"]),
                    "name": _csv_safe(r["name"]),
                    "quiz_accuracy": "" if r["quiz_accuracy"] is None else r["quiz_accuracy"],
                }
            )
        return buf.getvalue()

    async def sessions(self, teacher: str) -> list[dict]:
        """Past and running sessions with headline figures."""
        out = []
        for s in await self.c.sessions.list_for_teacher(teacher, limit=50):
            sid = s["id"]
            students = await self.store.count(
                "engagement_events", {"session_id": sid, "kind": "join"}
            )
            messages = await self.store.count("chat_messages", {"session_id": sid})
            quizzes = await self.store.count("quizzes", {"session_id": sid})
            recordings = await self.store.list_recordings(session_id=sid, limit=10)
            end = s.get("ended_at") or time.time()
            out.append(
                {
                    **{
                        k: s.get(k)
                        for k in ("id", "title", "stream", "status", "started_at", "ended_at")
                    },
                    "duration": round(end - s["started_at"]),
                    "students": students,
                    "messages": messages,
                    "quizzes": quizzes,
                    "recordings": len(recordings),
                }
            )
        return out


def _csv_safe(text: str) -> str:
    """No spreadsheet formula injection from a student's name."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


DASHBOARD = web.AppKey("dashboard", DashboardService)
