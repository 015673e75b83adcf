"""The session report for the teacher, computed locally from stored documents: confusion
peaks lined up with the slide shown at the time, unanswered questions, topics per slide,
participation, suggestions and a short note per student. Pure functions (run in a worker
thread). Suggestions and notes carry a `code` + `params` for the page to translate and
an English `text` for everything else.
"""

from __future__ import annotations

import bisect
from collections import Counter

#: A student question counts as answered when the teacher writes within this many seconds.
ANSWER_WINDOW = 120.0
PEAK_BUCKET = 60.0


def slide_at(slides: list[dict], t: float) -> dict | None:
    """The slide on screen at wall time t (slides sorted by "at")."""
    times = [s["at"] for s in slides]
    i = bisect.bisect_right(times, t) - 1
    return slides[i] if i >= 0 else None


def unanswered_questions(chats: list[dict], analysis: dict[str, dict], now: float) -> list[dict]:
    """Student questions with no teacher message in the ANSWER_WINDOW after them (those
    younger than the window and still without a reply are open too)."""
    teacher_times = sorted(c["timestamp"] for c in chats if c.get("role") == "teacher")
    out = []
    for c in chats:
        a = analysis.get(c["id"])
        if c.get("role") != "student" or not a or not a["question"]:
            continue
        i = bisect.bisect_right(teacher_times, c["timestamp"])
        reply = teacher_times[i] if i < len(teacher_times) else None
        if reply is None or reply - c["timestamp"] > ANSWER_WINDOW:
            out.append(
                {
                    "message_id": c["id"],
                    "student_id": c["user_id"],
                    "name": c.get("name", ""),
                    "text": c["text"],
                    "at": c["timestamp"],
                    "open": now - c["timestamp"] <= ANSWER_WINDOW or reply is None,
                }
            )
    return out


def confusion_peaks(chats, analysis, slides, start: float, end: float) -> list[dict]:
    """Minutes with the most confusion messages (at least 2), with the slide shown then."""
    counts: Counter[int] = Counter()
    samples: dict[int, list[str]] = {}
    for c in chats:
        a = analysis.get(c["id"])
        if c.get("role") == "student" and a and a["confusion"]:
            b = int((c["timestamp"] - start) // PEAK_BUCKET)
            counts[b] += 1
            samples.setdefault(b, []).append(c["text"][:120])
    peaks = []
    for b, n in counts.most_common(5):
        if n < 2:
            continue
        t0 = start + b * PEAK_BUCKET
        slide = slide_at(slides, t0 + PEAK_BUCKET / 2)
        peaks.append(
            {
                "start": t0,
                "end": min(end, t0 + PEAK_BUCKET),
                "confusion_messages": n,
                "examples": samples[b][:3],
                "slide": _slide_ref(slide),
            }
        )
    return sorted(peaks, key=lambda p: p["start"])


def _slide_ref(slide: dict | None) -> dict | None:
    if slide is None:
        return None
    return {"index": slide.get("index"), "at": slide["at"], "title": slide.get("title", "")}


def topics_per_slide(slides, chats, analysis, end: float) -> list[dict]:
    out = []
    for i, s in enumerate(slides):
        until = slides[i + 1]["at"] if i + 1 < len(slides) else end
        words: Counter[str] = Counter()
        questions = confusion = messages = 0
        for c in chats:
            if s["at"] <= c["timestamp"] < until and c.get("role") == "student":
                a = analysis.get(c["id"]) or {}
                messages += 1
                questions += bool(a.get("question"))
                confusion += bool(a.get("confusion"))
                words.update(a.get("keywords") or [])
        out.append(
            {
                "index": s.get("index", i),
                "at": s["at"],
                "until": until,
                "title": s.get("title", ""),
                "slide_keywords": (s.get("keywords") or [])[:6],
                "chat_keywords": [w for w, _ in words.most_common(5)],
                "messages": messages,
                "questions": questions,
                "confusion": confusion,
            }
        )
    return out


def _suggest(code: str, text: str, **params) -> dict:
    return {"code": code, "params": params, "text": text}


def suggestions(
    peaks, unanswered, topics, engagement: dict, quizzes: list[dict], confused: int = 0
) -> list[dict]:
    """What the teacher could do next; `confused`: student messages showing confusion."""
    out = []
    for p in peaks[:3]:
        title = (p["slide"] or {}).get("title") or ""
        out.append(
            _suggest(
                "revisit",
                f"Many students were confused around '{title or 'this part'}': go over it "
                f"again with another example.",
                title=title,
                n=p["confusion_messages"],
            )
        )
    open_q = [q for q in unanswered if q["open"]]
    if unanswered:
        out.append(
            _suggest(
                "answer_questions",
                f"{len(unanswered)} question(s) got no answer in chat; answer them at the start "
                f"of the next class or in a note.",
                n=len(unanswered),
                open=len(open_q),
            )
        )
    hard = [q for q in quizzes if q.get("accuracy") is not None and q["accuracy"] < 50]
    for q in hard[:2]:
        out.append(
            _suggest(
                "hard_quiz",
                f"Quiz '{q['question'][:60]}' was answered correctly by {q['accuracy']:.0f}%: "
                f"explain the answer.",
                question=q["question"][:60],
                accuracy=round(q["accuracy"]),
            )
        )
    summary = engagement.get("summary") or {}
    students = summary.get("students") or 0
    silent = sum(1 for s in engagement.get("students", []) if not s.get("chat_messages"))
    if students >= 3 and silent / students >= 0.6:
        out.append(
            _suggest(
                "invite_participation",
                f"{silent} of {students} students wrote nothing: ask an open question or run a "
                f"quick poll.",
                silent=silent,
                students=students,
            )
        )
    if confused and not peaks:  # confusion too spread out for a peak is still confusion
        out.append(
            _suggest(
                "check_in",
                f"{confused} message(s) said a student did not understand: check in with them.",
                n=confused,
            )
        )
    if not out:
        out.append(_suggest("keep_going", "No sign of trouble: keep the pace."))
    return out


def student_notes(engagement: dict, chats, analysis) -> list[dict]:
    """A short, factual note per student (participation signals, not grades)."""
    by: dict[str, dict] = {}
    for c in chats:
        if c.get("role") != "student":
            continue
        a = analysis.get(c["id"]) or {}
        s = by.setdefault(c["user_id"], {"messages": 0, "questions": 0, "confusion": 0})
        s["messages"] += 1
        s["questions"] += bool(a.get("question"))
        s["confusion"] += bool(a.get("confusion"))
    notes = []
    for st in engagement.get("students", []):
        sid = st["student_id"]
        counts = by.get(sid, {"messages": 0, "questions": 0, "confusion": 0})
        codes, parts = [], []
        if counts["confusion"]:
            codes.append({"code": "confused", "params": {"n": counts["confusion"]}})
            parts.append(f"said {counts['confusion']} time(s) they did not follow")
        if counts["questions"]:
            codes.append({"code": "asked", "params": {"n": counts["questions"]}})
            parts.append(f"asked {counts['questions']} question(s)")
        if st.get("answers"):
            acc = st.get("quiz_accuracy")
            codes.append({"code": "quiz", "params": {"n": st["answers"], "accuracy": acc}})
            parts.append(f"answered {st['answers']} quiz(zes), {acc}% correct")
        if not counts["messages"] and not st.get("answers"):
            codes.append({"code": "quiet", "params": {}})
            parts.append("was quiet: no chat, no quiz answer")
        notes.append(
            {
                "student_id": sid,
                "name": st.get("name", ""),
                "items": codes,
                "text": "; ".join(parts).capitalize() + "." if parts else "",
            }
        )
    return notes


def build_report(
    session: dict,
    chats: list[dict],
    analysis: dict[str, dict],
    slides: list[dict],
    engagement: dict,
    quizzes: list[dict],
    now: float,
) -> dict:
    """The local report. chats: stored messages (time order, deleted ones removed);
    analysis: message id -> nlp.analyse_message result; slides: [{at, title, keywords}]."""
    start = session["started_at"]
    end = session.get("ended_at") or now
    peaks = confusion_peaks(chats, analysis, slides, start, end)
    unanswered = unanswered_questions(chats, analysis, now)
    topics = topics_per_slide(slides, chats, analysis, end)
    student_msgs = [c for c in chats if c.get("role") == "student"]
    minutes = max((end - start) / 60.0, 1.0)
    summary = engagement.get("summary") or {}
    participation = {
        "students": summary.get("students", 0),
        "messages": len(student_msgs),
        "messages_per_minute": round(len(student_msgs) / minutes, 2),
        "questions": sum(1 for c in student_msgs if (analysis.get(c["id"]) or {}).get("question")),
        "confusion_messages": sum(
            1 for c in student_msgs if (analysis.get(c["id"]) or {}).get("confusion")
        ),
        "students_who_wrote": len({c["user_id"] for c in student_msgs}),
        "quiz_accuracy": summary.get("quiz_accuracy"),
    }
    sentiment = Counter((analysis.get(c["id"]) or {}).get("sentiment") for c in student_msgs)
    keywords = Counter(
        w for c in student_msgs for w in (analysis.get(c["id"]) or {}).get("keywords", [])
    )
    sug = suggestions(
        peaks, unanswered, topics, engagement, quizzes, participation["confusion_messages"]
    )
    text = (
        f"{participation['students']} students, {participation['messages']} messages "
        f"({participation['questions']} questions, {participation['confusion_messages']} "
        f"confused), {len(slides)} slides, {len(peaks)} confusion peak(s), "
        f"{len(unanswered)} unanswered question(s)."
    )
    return {
        "session_id": session["id"],
        "generated_at": now,
        "final": session.get("status") == "ended",
        "summary": text,
        "confusion_peaks": peaks,
        "unanswered_questions": unanswered,
        "topics_per_slide": topics,
        "top_keywords": [w for w, _ in keywords.most_common(10)],
        "sentiment": {k: sentiment.get(k, 0) for k in ("positive", "neutral", "negative")},
        "participation": participation,
        "suggestions": sug,
        "student_notes": student_notes(engagement, chats, analysis),
    }
