#!/usr/bin/env python3
"""Engagement report benchmark: a 2-hour class of 450 students in a real SQLite store.

Builds the session (joins, coalesced presence changes, reconnects, chat, 20 quizzes with
every student answering, alerts), then requests the session report repeatedly, as teacher
pages do (one every 4 s each; here back to back, and several at once), while a ticker task
measures how late the event loop wakes up (the stall every other client of the node would
feel). Meanwhile the real fan-out sender (airclass_media.fanout, SRTP and UDP included)
sends a 30 fps stream to `--viewers` local UDP receivers in the same event loop: its send
delay (packet handed to the hub -> sent to every viewer) is measured before and during
the reports: the WebRTC send delay a viewer of a single-process node (`--workers 1`)
would see. Prints one JSON line.

    .venv/bin/python scripts/bench_engagement.py [--students 450] [--hours 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from airclass_web.classroom.engagement import EngagementService  # noqa: E402
from airclass_web.store.sqlite import SQLiteStore  # noqa: E402


def build(students: int, hours: float, presence_per_student: int, chats: int, quizzes: int):
    """Documents of one session, as the nodes would have stored them."""
    rnd = random.Random(7)
    start = time.time() - hours * 3600
    end = time.time()
    sid = "ses-bench"
    session = {"id": sid, "started_at": start, "ended_at": None, "status": "active"}
    events, chat_docs, answers, quiz_docs = [], [], [], []
    n = 0

    def ev(student, kind, t, **fields):
        nonlocal n
        n += 1
        events.append(
            {
                "id": f"ev-{n}",
                "session_id": sid,
                "student_id": student,
                "kind": kind,
                "timestamp": t,
                **fields,
            }
        )

    words = ["좋아요", "네", "질문 있어요?", "잘 모르겠어요", "ok", "why is that?", "thanks"]
    for i in range(students):
        stu = f"stu-{i}"
        joined = start + rnd.uniform(0, 600)
        ev(stu, "join", joined, name=f"student {i}")
        ev(stu, "online", joined + 1)
        times = sorted(rnd.uniform(joined + 2, end) for _ in range(presence_per_student))
        for k, t in enumerate(times):
            ev(stu, "presence", t, playing=True, visible=k % 2 == 0)
            if k % 30 == 29:  # a reconnect now and then
                ev(stu, "offline", t + 0.5)
                ev(stu, "online", t + 3)
        for k in range(chats):
            t = rnd.uniform(joined, end)
            chat_docs.append(
                {
                    "id": f"msg-{i}-{k}",
                    "session_id": sid,
                    "user_id": stu,
                    "name": f"student {i}",
                    "role": "student",
                    "text": rnd.choice(words),
                    "timestamp": t,
                    "deleted": False,
                }
            )
        if i % 10 == 0:
            ev(stu, "alert", rnd.uniform(joined, end), reason="confusion_words", detail="?")
    for q in range(quizzes):
        published = start + (q + 1) * (end - start) / (quizzes + 1)
        qid = f"quiz-{q}"
        quiz_docs.append(
            {
                "id": qid,
                "session_id": sid,
                "question": f"q{q}",
                "kind": "choice",
                "options": ["a", "b", "c", "d"],
                "correct": 1,
                "status": "closed",
                "created_at": published - 5,
                "published_at": published,
                "time_limit": 60,
            }
        )
        for i in range(students):
            answers.append(
                {
                    "id": f"ans-{q}-{i}",
                    "quiz_id": qid,
                    "session_id": sid,
                    "student_id": f"stu-{i}",
                    "name": f"student {i}",
                    "answer": rnd.randrange(4),
                    "correct": rnd.random() < 0.6,
                    "timestamp": published + rnd.uniform(1, 50),
                }
            )
    return session, {
        "engagement_events": events,
        "chat_messages": chat_docs,
        "quiz_responses": answers,
        "quizzes": quiz_docs,
    }


async def fill(store: SQLiteStore, docs: dict[str, list[dict]]) -> None:
    def bulk():
        conn = store._conn
        conn.execute("BEGIN")
        for collection, rows in docs.items():
            for doc in rows:
                store._write(collection, doc, "INSERT")
        conn.execute("COMMIT")

    await store._run(bulk)


class MediaLoad:
    """The fan-out sending a synthetic 30 fps ~2 Mbps stream to N local UDP receivers."""

    def __init__(self, viewers: int) -> None:
        import os
        import socket

        from pylibsrtp import Policy, Session

        from airclass_media.fanout import Fanout, RtpBinding, RtpTarget, UdpPath
        from airclass_media.hub import StreamHub

        self.delays: list[float] = []
        self.hub = StreamHub()
        self.stream = self.hub.stream("bench")
        self.stream.attach_publisher("bench")
        self.fanout = Fanout(
            on_sent=lambda name, packet, started, now: self.delays.append(now - packet.received_at)
        )
        self.receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.receiver.bind(("127.0.0.1", 0))
        self.receiver.setblocking(False)
        self.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        self.sockets = []
        for i in range(viewers):
            policy = Policy(
                key=os.urandom(28),
                ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
            )
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self.sockets.append(sock)
            binding = RtpBinding(
                kind="video",
                payload_type=102,
                header_tail=(1000 + i).to_bytes(4, "big"),
                first_byte=0x80,
                protect=Session(policy).protect,
                path=UdpPath(sock, self.receiver.getsockname()),
            )
            self.fanout.add(self.stream, RtpTarget(binding))

    def _drain(self) -> None:
        try:
            while True:
                self.receiver.recv(2048)
        except BlockingIOError:
            pass

    async def run(self) -> None:
        from airclass_media.packets import MediaPacket

        loop = asyncio.get_running_loop()
        loop.add_reader(self.receiver.fileno(), self._drain)
        rnd = random.Random(1)
        body = bytes(rnd.randrange(1, 256) for _ in range(8300))  # no start code inside
        frame = 0
        try:
            while True:
                pts = frame * 33_333
                keyframe = frame % 60 == 0
                nal = b"\x00\x00\x00\x01" + (b"\x65" if keyframe else b"\x41") + body
                self.stream.publish(
                    MediaPacket("video", nal, pts, pts, keyframe, received_at=time.monotonic())
                )
                frame += 1
                await asyncio.sleep(1 / 30)
        finally:
            loop.remove_reader(self.receiver.fileno())

    def take(self) -> dict:
        delays, self.delays = sorted(self.delays), []
        if not delays:
            return {}
        return {
            "p50": round(1000 * delays[len(delays) // 2], 2),
            "p99": round(1000 * delays[int(len(delays) * 0.99)], 2),
            "max": round(1000 * delays[-1], 1),
        }

    def close(self) -> None:
        self.fanout.close()
        for sock in [self.receiver, *self.sockets]:
            sock.close()


class Ticker:
    """How late the event loop wakes a task that sleeps 5 ms at a time."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            self.lags.append(loop.time() - t - 0.005)

    def __enter__(self) -> Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *exc) -> None:
        self._task.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=450)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--presence", type=int, default=60, help="presence changes per student")
    parser.add_argument("--chats", type=int, default=10, help="chat messages per student")
    parser.add_argument("--quizzes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pages", type=int, default=3, help="teacher pages asking at once")
    parser.add_argument("--viewers", type=int, default=50, help="fan-out receivers (0: none)")
    args = parser.parse_args()

    session, docs = build(args.students, args.hours, args.presence, args.chats, args.quizzes)
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "bench.sqlite3")
        await store.open()
        await fill(store, docs)
        engagement = EngagementService(store, lambda event: None)
        times: list[float] = []
        media = MediaLoad(args.viewers) if args.viewers else None
        sending = asyncio.ensure_future(media.run()) if media else None
        if media:
            await asyncio.sleep(3)  # the send delay with no report running
            quiet = media.take()
        with Ticker() as ticker:
            await asyncio.sleep(0.05)
            for _ in range(args.rounds):
                # Every round computes afresh (no report reused from the previous one).
                if hasattr(engagement, "forget_session"):
                    engagement.forget_session(session["id"])
                t0 = time.perf_counter()
                report = await engagement.session_report(session)
                times.append(time.perf_counter() - t0)
                # Several teacher/monitor pages at once (sharing one computation, if cached).
                if hasattr(engagement, "forget_session"):
                    engagement.forget_session(session["id"])
                t0 = time.perf_counter()
                await asyncio.gather(
                    *(engagement.session_report(session) for _ in range(args.pages))
                )
                times.append(time.perf_counter() - t0)
                # A student's report too (the teacher clicks a name).
                await engagement.student_report(session, "stu-1")
                await asyncio.sleep(0.05)
        busy = media.take() if media else {}
        if media:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            media.close()
        await store.close()
    lags = sorted(ticker.lags)
    print(
        json.dumps(
            {
                "students": args.students,
                "hours": args.hours,
                "documents": {k: len(v) for k, v in docs.items()},
                "report_s": {
                    "first": round(times[0], 3),
                    "p50": round(statistics.median(times), 3),
                    "max": round(max(times), 3),
                },
                "loop_stall_ms": {
                    "p50": round(1000 * lags[len(lags) // 2], 2),
                    "p99": round(1000 * lags[int(len(lags) * 0.99)], 2),
                    "max": round(1000 * lags[-1], 1),
                },
                "students_in_report": report["summary"]["students"],
                "fanout_viewers": args.viewers,
                "send_delay_ms_quiet": quiet if media else None,
                "send_delay_ms_during_reports": busy,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
