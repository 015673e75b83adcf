"""Quizzes: create, publish (pushed to every student), answer once, close, statistics.

An answer is inserted in the store (a unique index allows one per student per quiz)
before it is acknowledged. Statistics are always computed from the store, so they are
exact whatever happened to the event bus; live pushes to the teacher are coalesced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from ..store import DuplicateError, Store
from .errors import ClassroomError
from .sessions import new_id

log = logging.getLogger(__name__)

KINDS = ("choice", "short")
MAX_QUESTION = 1000
MAX_OPTIONS = 10
MAX_OPTION = 200
MAX_ANSWER = 200
MIN_TIME, MAX_TIME = 5, 3600
#: Answers are accepted this long after the deadline (network delay).
GRACE = 1.0
#: Live statistics are pushed at most this often per quiz and node.
STATS_INTERVAL = 0.2
#: Cached quiz documents are re-read after this many seconds.
CACHE_TTL = 1.0


def normalize(text: str) -> str:
    return " ".join(str(text).casefold().split())


def effective_status(quiz: dict, now: float | None = None) -> str:
    """draft / open / closed; an open quiz past its deadline counts as closed."""
    status = quiz.get("status", "draft")
    now = time.time() if now is None else now
    if status == "open" and quiz.get("closes_at") and now > quiz["closes_at"] + GRACE:
        return "closed"
    return status


def student_view(quiz: dict) -> dict:
    """What students see: no correct answer until the quiz is closed."""
    keys = (
        "id",
        "session_id",
        "question",
        "kind",
        "options",
        "time_limit",
        "published_at",
        "closes_at",
    )
    view = {k: quiz.get(k) for k in keys}
    view["status"] = effective_status(quiz)
    if view["status"] == "closed":
        view["correct"] = quiz.get("correct")
    return view


def staff_view(quiz: dict) -> dict:
    return {**quiz, "status": effective_status(quiz)}


def is_correct(quiz: dict, answer) -> bool:
    if quiz["kind"] == "choice":
        return answer == quiz["correct"]
    accepted = quiz["correct"] if isinstance(quiz["correct"], list) else [quiz["correct"]]
    return normalize(answer) in {normalize(a) for a in accepted}


class QuizService:
    def __init__(
        self,
        store: Store,
        publish: Callable[[dict], None],
        spawn: Callable,
        on_answer: Callable[[dict, dict], object] | None = None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.spawn = spawn
        self.on_answer = on_answer
        self._cache: dict[str, tuple[float, dict]] = {}
        self._stats_dirty: set[str] = set()
        self._stats_running: set[str] = set()

    # -- teacher --------------------------------------------------------------------
    async def create(self, session: dict, spec: dict, by: str) -> dict:
        kind = spec.get("kind", "choice")
        if kind not in KINDS:
            raise ClassroomError(400, "kind must be choice or short")
        question = spec.get("question")
        if not isinstance(question, str) or not question.strip():
            raise ClassroomError(400, "question is required")
        if len(question) > MAX_QUESTION:
            raise ClassroomError(400, f"question longer than {MAX_QUESTION} characters")
        try:
            time_limit = int(spec.get("time_limit", 60))
        except (TypeError, ValueError) as exc:
            raise ClassroomError(400, "time_limit must be a number of seconds") from exc
        if not MIN_TIME <= time_limit <= MAX_TIME:
            raise ClassroomError(400, f"time_limit must be {MIN_TIME}-{MAX_TIME} seconds")
        correct = spec.get("correct")
        options: list[str] = []
        if kind == "choice":
            options = spec.get("options")
            if (
                not isinstance(options, list)
                or not 2 <= len(options) <= MAX_OPTIONS
                or not all(
                    isinstance(o, str) and o.strip() and len(o) <= MAX_OPTION for o in options
                )
            ):
                raise ClassroomError(
                    400, f"options: 2-{MAX_OPTIONS} non-empty strings of at most {MAX_OPTION}"
                )
            options = [o.strip() for o in options]
            if isinstance(correct, str) and correct.isdigit():
                correct = int(correct)
            if (
                not isinstance(correct, int)
                or isinstance(correct, bool)
                or not (0 <= correct < len(options))
            ):
                raise ClassroomError(400, "correct must be the index of an option")
        else:
            alts = correct if isinstance(correct, list) else [correct]
            if not alts or not all(
                isinstance(a, str) and a.strip() and len(a) <= MAX_ANSWER for a in alts
            ):
                raise ClassroomError(400, "correct must be the expected answer text")
        doc = {
            "id": new_id("quiz"),
            "session_id": session["id"],
            "question": question.strip(),
            "kind": kind,
            "options": options,
            "correct": correct,
            "time_limit": time_limit,
            "status": "draft",
            "created_at": time.time(),
            "created_by": by,
            "published_at": None,
            "closes_at": None,
            "closed_at": None,
        }
        await self.store.insert("quizzes", doc)
        self._remember(doc)
        return doc

    async def publish_quiz(self, quiz: dict) -> dict:
        if effective_status(quiz) != "draft":
            raise ClassroomError(409, f"quiz is already {effective_status(quiz)}")
        now = time.time()
        quiz = await self.store.update(
            "quizzes",
            quiz["id"],
            {"status": "open", "published_at": now, "closes_at": now + quiz["time_limit"]},
        )
        self._remember(quiz)
        sid = quiz["session_id"]
        self.publish(
            {"session_id": sid, "type": "quiz", "to": "students", "quiz": student_view(quiz)}
        )
        self.publish({"session_id": sid, "type": "quiz", "to": "staff", "quiz": staff_view(quiz)})
        self.spawn(self._close_at_deadline(quiz["id"], quiz["time_limit"]), "quiz-deadline")
        return quiz

    async def _close_at_deadline(self, quiz_id: str, delay: float) -> None:
        await asyncio.sleep(delay + GRACE)
        quiz = await self.store.get("quizzes", quiz_id)
        if quiz and quiz.get("status") == "open":
            await self.close(quiz)

    async def close(self, quiz: dict) -> dict:
        if quiz.get("status") == "closed":
            return quiz
        if quiz.get("status") == "draft":
            raise ClassroomError(409, "quiz was never published")
        quiz = await self.store.update(
            "quizzes", quiz["id"], {"status": "closed", "closed_at": time.time()}
        )
        self._remember(quiz)
        stats = await self.statistics(quiz)
        sid = quiz["session_id"]
        self.publish(
            {
                "session_id": sid,
                "type": "quiz_closed",
                "to": "all",
                "quiz": student_view(quiz),
                "stats": _student_stats(stats),
            }
        )
        self.publish({"session_id": sid, "type": "quiz_stats", "to": "staff", "stats": stats})
        return quiz

    # -- lookups --------------------------------------------------------------------
    def _remember(self, quiz: dict) -> None:
        now = time.monotonic()
        if len(self._cache) > 1000:  # sessions that never end: drop stale copies
            self._cache = {k: v for k, v in self._cache.items() if now - v[0] < CACHE_TTL}
        self._cache[quiz["id"]] = (now, quiz)

    def forget(self, quiz_id: str) -> None:
        self._cache.pop(quiz_id, None)

    def forget_session(self, session_id: str) -> None:
        """The session ended: drop its cached quizzes."""
        for quiz_id in [k for k, (_, q) in self._cache.items() if q["session_id"] == session_id]:
            del self._cache[quiz_id]

    def cache_sizes(self) -> dict[str, int]:
        return {"quizzes": len(self._cache)}

    async def get(self, quiz_id, *, fresh: bool = False) -> dict:
        if not isinstance(quiz_id, str) or not quiz_id or len(quiz_id) > 100:
            raise ClassroomError(400, "quiz_id is required")
        cached = self._cache.get(quiz_id)
        if cached and not fresh and time.monotonic() - cached[0] < CACHE_TTL:
            return cached[1]
        quiz = await self.store.get("quizzes", quiz_id)
        if quiz is None:
            raise ClassroomError(404, "no such quiz")
        self._remember(quiz)
        return quiz

    async def for_session(self, session_id: str) -> list[dict]:
        return await self.store.find("quizzes", {"session_id": session_id}, order_by="created_at")

    async def open_quiz(self, session_id: str) -> dict | None:
        """The most recent quiz still open in this session."""
        for quiz in reversed(await self.for_session(session_id)):
            if effective_status(quiz) == "open":
                return quiz
        return None

    # -- students -------------------------------------------------------------------
    async def answer(self, quiz: dict, *, student_id: str, name: str, answer) -> dict:
        """Store the answer (once per student); the stored response."""
        now = time.time()
        status = effective_status(quiz, now)
        if status == "draft":
            raise ClassroomError(409, "quiz is not published")
        if status == "closed":
            raise ClassroomError(409, "quiz is closed", "quiz_closed")
        if quiz["kind"] == "choice":
            if isinstance(answer, str) and answer.isdigit():
                answer = int(answer)
            if (
                not isinstance(answer, int)
                or isinstance(answer, bool)
                or not (0 <= answer < len(quiz["options"]))
            ):
                raise ClassroomError(400, "answer must be the index of an option")
        elif not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_ANSWER:
            raise ClassroomError(400, f"answer: 1-{MAX_ANSWER} characters")
        doc = {
            "id": new_id("ans"),
            "quiz_id": quiz["id"],
            "session_id": quiz["session_id"],
            "student_id": student_id,
            "name": name,
            "answer": answer.strip() if isinstance(answer, str) else answer,
            "correct": is_correct(quiz, answer),
            "timestamp": now,
        }
        try:
            await self.store.insert("quiz_responses", doc)
        except DuplicateError as exc:
            raise ClassroomError(409, "you already answered this quiz", "duplicate") from exc
        self.stats_changed(quiz["id"])
        if self.on_answer is not None:
            self.spawn(self.on_answer(quiz, doc), "quiz-on-answer")
        return doc

    # -- statistics -----------------------------------------------------------------
    async def statistics(self, quiz: dict) -> dict:
        responses = await self.store.find(
            "quiz_responses", {"quiz_id": quiz["id"]}, order_by="timestamp"
        )
        total = len(responses)
        correct = sum(1 for r in responses if r.get("correct"))
        stats = {
            "quiz_id": quiz["id"],
            "session_id": quiz["session_id"],
            "question": quiz["question"],
            "kind": quiz["kind"],
            "options": quiz.get("options") or [],
            "correct_answer": quiz.get("correct"),
            "status": effective_status(quiz),
            "closes_at": quiz.get("closes_at"),
            "total": total,
            "correct": correct,
            "accuracy": round(100.0 * correct / total, 1) if total else None,
        }
        if quiz["kind"] == "choice":
            counts = [0] * len(quiz["options"])
            for r in responses:
                if isinstance(r["answer"], int) and 0 <= r["answer"] < len(counts):
                    counts[r["answer"]] += 1
            stats["counts"] = counts
        else:
            top = Counter(normalize(r["answer"]) for r in responses).most_common(20)
            stats["answers"] = [{"answer": a, "count": n} for a, n in top]
        stats["recent"] = [
            {k: r.get(k) for k in ("student_id", "name", "answer", "correct", "timestamp")}
            for r in responses[-20:]
        ][::-1]
        return stats

    def stats_changed(self, quiz_id: str) -> None:
        """Push fresh statistics to the teacher soon (coalesced per quiz)."""
        self._stats_dirty.add(quiz_id)
        if quiz_id not in self._stats_running:
            self._stats_running.add(quiz_id)
            self.spawn(self._push_stats(quiz_id), "quiz-stats")

    async def _push_stats(self, quiz_id: str) -> None:
        try:
            while quiz_id in self._stats_dirty:
                self._stats_dirty.discard(quiz_id)
                quiz = await self.get(quiz_id)
                stats = await self.statistics(quiz)
                self.publish(
                    {
                        "session_id": quiz["session_id"],
                        "type": "quiz_stats",
                        "to": "staff",
                        "stats": stats,
                    }
                )
                await asyncio.sleep(STATS_INTERVAL)
        except Exception:
            log.exception("quiz statistics push failed")
        finally:
            self._stats_running.discard(quiz_id)


def _student_stats(stats: dict) -> dict:
    keys = ("quiz_id", "total", "correct", "accuracy", "counts", "answers", "correct_answer")
    return {k: stats[k] for k in keys if k in stats}
