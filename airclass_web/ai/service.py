"""AI analysis of a node: per-teacher provider keys, calls with fallback to the local
analysers, rate limits, cache, slide tracking and session reports.

Every result carries `source` (local / gemini / openai) and, when a configured provider
was not used, `fallback: {provider, reason, detail, retry_at}` (detail: our fixed text,
never the upstream's). Nothing leaves the node unless the teacher configured a provider,
and only to an allowed base URL (egress.py); the names of every student who joined the
session become pseudonyms first.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from recorder.manager import RecordingManager

from ..classroom.chat import RateLimiter
from ..classroom.errors import ClassroomError
from . import egress, feedback, nlp, vision
from .cache import AICache, cache_key, content_hash
from .providers import (
    DEFAULT_MODELS,
    GEMINI,
    LOCAL,
    OPENAI,
    PROVIDERS,
    ProviderError,
    Request,
    make_provider,
)

log = logging.getLogger(__name__)

PROMPT_VERSION = {"vision": "v1", "nlp": "v1", "feedback": "v1"}
CHAT_BATCH = 40
MAX_CHAT_MESSAGES = 200
MAX_IMAGE = 8 * 1024 * 1024
#: Reports of a running class are regenerated this often (and at its end).
REPORT_EVERY = 180.0
#: A report asked for again within this many seconds is reused.
REPORT_REUSE = 20.0
MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/-]{1,100}\Z")

SLIDE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "text": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "text", "keywords"],
}
CHAT_SCHEMA = {
    "type": "object",
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "i": {"type": "integer"},
                    "lang": {"type": "string"},
                    "question": {"type": "boolean"},
                    "confusion": {"type": "boolean"},
                    "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
                    "keywords": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["i", "question", "confusion", "sentiment"],
            },
        }
    },
    "required": ["results"],
}
FEEDBACK_SCHEMA = {
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "suggestions": {"type": "array", "items": {"type": "string"}},
        "student_notes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"student": {"type": "string"}, "note": {"type": "string"}},
                "required": ["student", "note"],
            },
        },
    },
    "required": ["summary", "suggestions", "student_notes"],
}


HANGUL = re.compile(r"^[\uac00-\ud7a3]+$")


def name_forms(name: str) -> list[str]:
    """How a student's name may appear in chat: the whole name, each word of a name of
    several words ("Minji", "Park"), and the given name of a 3-4 syllable Hangul name
    ("민지" of "박민지"). Forms shorter than 2 characters are left out."""
    name = " ".join(name.split())
    forms = {name}
    words = name.split(" ")
    if len(words) > 1:
        forms.update(words)
    elif HANGUL.match(name) and 3 <= len(name) <= 4:
        forms.add(name[1:])
    return [f for f in forms if len(f) >= 2]


class Pseudonyms:
    """Student names -> "Student N" in everything sent out, and back in what returns.
    `names`: every student who joined the session (student id -> name), not only those
    who wrote, since one student may name another."""

    def __init__(self, names: dict[str, str]) -> None:
        self.by_id = {sid: f"Student {i + 1}" for i, sid in enumerate(sorted(names))}
        forms = {}
        for sid, name in names.items():
            for form in name_forms(name or ""):
                forms.setdefault(form.casefold(), (form, self.by_id[sid]))
        self._patterns = [
            (self._pattern(form), alias)
            for form, alias in sorted(forms.values(), key=lambda p: -len(p[0]))
        ]
        self.to_id = {p: sid for sid, p in self.by_id.items()}

    @staticmethod
    def _pattern(form: str) -> re.Pattern:
        """Hangul matches anywhere (particles attach: 민지가); other words whole."""
        body = re.escape(form)
        if not re.search(r"[\uac00-\ud7a3]", form):
            body = rf"(?<!\w){body}(?!\w)"
        return re.compile(body, re.IGNORECASE)

    def hide(self, text: str) -> str:
        for pattern, alias in self._patterns:
            text = pattern.sub(alias, text)
        return text

    def hide_all(self, value):
        """hide() on every string inside lists and dicts."""
        if isinstance(value, str):
            return self.hide(value)
        if isinstance(value, list):
            return [self.hide_all(v) for v in value]
        if isinstance(value, dict):
            return {k: self.hide_all(v) for k, v in value.items()}
        return value


def _strings(value, limit: int = 20) -> list[str]:
    if not isinstance(value, list):
        raise ProviderError("unparseable", "expected a list of strings")
    return [str(v)[:80] for v in value if isinstance(v, str | int | float)][:limit]


class AIService:
    def __init__(
        self,
        classroom,
        recorder: RecordingManager | None,
        gemini_base_url: str,
        calls_per_minute: float,
        allowed_base_urls: list[str] | None = None,
    ) -> None:
        self.c = classroom
        self.store = classroom.store
        self.recorder = recorder
        self.gemini_base_url = gemini_base_url
        #: Base URLs a teacher's OpenAI-compatible provider may use (Gemini's is the
        #: operator's --gemini-base-url, never a teacher's).
        self.allowlist = egress.Allowlist(allowed_base_urls or egress.DEFAULT_ALLOWED)
        self.cache = AICache(self.store)
        # Burst: half a minute's worth of calls, at least 5.
        self.limiter = RateLimiter(
            burst=max(5, round(calls_per_minute / 2)), refill=60.0 / max(calls_per_minute, 0.001)
        )
        #: (teacher, provider) -> (retry_at, reason, detail): provider paused after 429.
        self.paused: dict[tuple[str, str], tuple[float, str, str]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._hashes: dict[str, int] = {}  # screenshot path -> perceptual hash
        self._reports: dict[str, tuple[float, dict]] = {}
        self._running: dict[str, asyncio.Future] = {}
        self._active: set[str] = set()
        self.calls = {"provider": 0, "fallback": 0, "local": 0}

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._http = egress.http_session()
        if self.c.node.config.role != "sub":
            self.c.node.spawn(self._report_loop(), "ai-reports")

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- keys ---------------------------------------------------------------------------
    @staticmethod
    def _check_provider(provider: str) -> None:
        if provider not in PROVIDERS:
            raise ClassroomError(404, f"unknown provider; one of {', '.join(PROVIDERS)}")

    async def set_key(self, teacher: str, provider: str, params: dict) -> dict:
        self._check_provider(provider)
        api_key = params.get("api_key", "")
        model = params.get("model") or DEFAULT_MODELS[provider]
        base_url = params.get("base_url") or ""
        if not isinstance(api_key, str) or len(api_key) > 512:
            raise ClassroomError(400, "api_key: a string of at most 512 characters")
        api_key = api_key.strip()
        if provider == GEMINI and not api_key:
            raise ClassroomError(400, "api_key is required")
        if not isinstance(model, str) or not MODEL_NAME.match(model):
            raise ClassroomError(400, "model: 1-100 letters, digits, '.', '_', ':', '/' or '-'")
        if provider == GEMINI and base_url:
            raise ClassroomError(400, "the Gemini base URL is a node option (--gemini-base-url)")
        if provider == OPENAI:
            base_url = self._allowed_base_url(base_url)
        doc = {
            "id": f"{teacher}:{provider}",
            "teacher": teacher,
            "provider": provider,
            "key_encrypted": self.c.teachers.encrypt_secret(api_key),
            "model": model,
            "base_url": base_url,
            "updated_at": time.time(),
            "last_error": None,
            "last_ok": None,
        }
        await self.store.upsert("ai_keys", doc)
        self.paused.pop((teacher, provider), None)
        log.info("ai: teacher %s configured %s (model %s)", teacher, provider, model)
        return self._status(doc, provider, teacher)

    def _allowed_base_url(self, base_url) -> str:
        """The teacher's base URL when this node allows it; else 400 (the same answer for
        every refused URL: nothing is sent, nothing about the address is told)."""
        if not isinstance(base_url, str) or not base_url:
            raise ClassroomError(
                400,
                "base_url is required: the URL of the OpenAI-compatible API / "
                "base_url(OpenAI 호환 API 주소)를 입력하세요",
            )
        try:
            return self.allowlist.check(base_url)
        except egress.BaseUrlRefused as exc:
            raise ClassroomError(
                400,
                "base_url is not allowed on this node; ask the operator "
                "(--ai-allowed-base-url) / 이 서버에서 허용되지 않은 base_url입니다. "
                "운영자에게 문의하세요 (--ai-allowed-base-url)",
                code="base_url_not_allowed",
            ) from exc

    async def key_status(self, teacher: str, provider: str) -> dict:
        self._check_provider(provider)
        doc = await self.store.get("ai_keys", f"{teacher}:{provider}")
        return self._status(doc, provider, teacher)

    def _status(self, doc: dict | None, provider: str, teacher: str) -> dict:
        paused = self.paused.get((teacher, provider))
        return {
            "provider": provider,
            "configured": doc is not None,
            "model": doc["model"] if doc else None,
            "base_url": (doc or {}).get("base_url") or (self.gemini_base_url if doc else None),
            "updated_at": doc["updated_at"] if doc else None,
            "last_error": (doc or {}).get("last_error"),
            "last_ok": (doc or {}).get("last_ok"),
            "paused_until": paused[0] if paused and paused[0] > time.time() else None,
            "allowed_base_urls": self.allowlist.urls if provider == OPENAI else None,
        }

    async def delete_key(self, teacher: str, provider: str) -> bool:
        self._check_provider(provider)
        self.paused.pop((teacher, provider), None)
        return await self.store.delete("ai_keys", f"{teacher}:{provider}")

    async def active(self, teacher: str) -> dict | None:
        """The teacher's configured provider (the most recently configured one)."""
        docs = await self.store.find("ai_keys", {"teacher": teacher})
        docs = [d for d in docs if d.get("provider") in PROVIDERS]
        return max(docs, key=lambda d: d["updated_at"]) if docs else None

    async def external(self, teacher: str) -> dict:
        doc = await self.active(teacher)
        return {"external": doc is not None, "provider": doc["provider"] if doc else None}

    # -- one analysis: provider or local -------------------------------------------------
    async def run(
        self,
        teacher: str,
        task: str,
        digest: str,
        request: Callable[[], Request],
        normalise: Callable[[dict], dict],
        local: Callable[[], Awaitable[dict]],
    ) -> dict:
        cfg = await self.active(teacher)
        fallback = None
        if cfg is not None:
            name, model = cfg["provider"], cfg["model"]
            key = cache_key(task, PROMPT_VERSION[task], name, model, digest)
            cached = await self.cache.get(key)
            if cached is not None:
                return {**cached, "source": name, "model": model, "cached": True}
            try:
                result = normalise(await self._call(teacher, cfg, request()))
            except ProviderError as exc:
                fallback = {
                    "provider": name,
                    "reason": exc.reason,
                    "detail": exc.detail[:200],
                    "retry_at": exc.retry_at or None,
                }
                self.calls["fallback"] += 1
            else:
                await self.cache.put(key, task, result)
                return {**result, "source": name, "model": model, "cached": False}
        key = cache_key(task, PROMPT_VERSION[task], LOCAL, "", digest)
        result = await self.cache.get(key)
        cached = result is not None
        if result is None:
            self.calls["local"] += 1
            result = await local()
            await self.cache.put(key, task, result)
        out = {**result, "source": LOCAL, "cached": cached}
        if fallback:
            out["fallback"] = fallback
        return out

    async def _call(self, teacher: str, cfg: dict, req: Request) -> dict:
        name = cfg["provider"]
        paused = self.paused.get((teacher, name))
        now = time.time()
        if paused and paused[0] > now:
            raise ProviderError(paused[1], paused[2], retry_at=paused[0])
        if not self.limiter.allow((teacher, "ai")):
            raise ProviderError("teacher_rate_limit", "too many AI calls for this teacher")
        if self._http is None:
            raise ProviderError("unreachable", "the AI service is stopped")
        base = self.gemini_base_url if name == GEMINI else cfg["base_url"]
        if name != GEMINI:
            try:
                self.allowlist.check(base)  # again: the allowlist may have changed since
            except egress.BaseUrlRefused as exc:
                raise ProviderError(
                    "base_url_not_allowed", "the base URL is not allowed on this node"
                ) from exc
        api_key = self.c.teachers.decrypt_secret(cfg["key_encrypted"])
        provider = make_provider(name, self._http, api_key, cfg["model"], base)
        self.calls["provider"] += 1
        try:
            result = await provider.generate(req)
        except ProviderError as exc:
            if exc.retry_at:
                self.paused[(teacher, name)] = (exc.retry_at, exc.reason, exc.detail)
            log.warning("ai: %s call for %s failed: %s", name, teacher, exc)  # never the key
            await self.store.update(
                "ai_keys",
                cfg["id"],
                {
                    "last_error": {
                        "reason": exc.reason,
                        "at": time.time(),
                        "detail": exc.detail[:200],
                    }
                },
            )
            raise
        await self.store.update("ai_keys", cfg["id"], {"last_ok": time.time()})
        return result

    # -- slides -------------------------------------------------------------------------
    async def analyze_slide(self, teacher: str, image: bytes) -> dict:
        if not image or len(image) > MAX_IMAGE:
            raise ClassroomError(400, "body: one JPEG image of at most 8 MiB")
        if not image.startswith(b"\xff\xd8"):
            raise ClassroomError(415, "body must be image/jpeg")

        def normalise(r: dict) -> dict:
            if not isinstance(r.get("text"), str) or not isinstance(r.get("title"), str):
                raise ProviderError("unparseable", "title/text missing")
            return {
                "title": r["title"][:200],
                "text": r["text"][:5000],
                "keywords": _strings(r.get("keywords", [])),
            }

        async def local() -> dict:
            try:
                r = await asyncio.to_thread(vision.ocr_slide, image)
            except vision.OCRUnavailable as exc:
                raise ClassroomError(503, str(exc), code="ocr_unavailable") from exc
            except OSError as exc:  # PIL: not an image
                raise ClassroomError(400, f"unreadable image: {exc}") from exc
            return {"title": r["title"], "text": r["text"], "keywords": r["keywords"]}

        return await self.run(
            teacher,
            "vision",
            content_hash(image),
            lambda: Request(
                system="You read lecture slides. Answer in the slide's own language.",
                prompt="Return the slide's title, all of its text, and up to 10 keywords.",
                schema=SLIDE_SCHEMA,
                image=image,
            ),
            normalise,
            local,
        )

    async def session_slides(self, session: dict) -> list[dict]:
        """Slides of the session's recordings: a new slide whenever the screenshot's
        perceptual hash changed; each analysed (cached) with the teacher's provider."""
        manager = self.recorder
        if manager is None:
            return []
        docs = await self.store.list_recordings(session_id=session["id"])
        slides: list[dict] = []
        previous: int | None = None
        for rec in sorted(docs, key=lambda d: d.get("started_at", 0)):
            live = await manager.get(rec["id"]) or rec
            directory = manager.directory(rec["id"])
            if directory is None:
                continue
            for shot in live.get("screenshots", []):
                path = Path(directory) / "shots" / shot["file"]
                h = self._hashes.get(str(path))
                if h is None:
                    try:
                        h = await asyncio.to_thread(vision.phash_bytes, path.read_bytes())
                    except OSError:
                        continue
                    self._hashes[str(path)] = h
                if not vision.changed(previous, h):
                    continue
                previous = h
                at = shot.get("at") or rec.get("started_at", 0) + shot.get("t", 0)
                try:
                    image = await asyncio.to_thread(path.read_bytes)
                    result = await self.analyze_slide(session["teacher"], image)
                except (OSError, ClassroomError) as exc:
                    result = {"title": "", "text": "", "keywords": [], "error": str(exc)[:200]}
                slides.append(
                    {
                        "index": len(slides),
                        "at": at,
                        "recording_id": rec["id"],
                        "file": shot["file"],
                        "title": result.get("title", ""),
                        "keywords": result.get("keywords", []),
                        "text": result.get("text", "")[:1000],
                        "source": result.get("source", LOCAL),
                    }
                )
        if len(self._hashes) > 20000:
            self._hashes.clear()
        return slides

    # -- chat ---------------------------------------------------------------------------
    async def analyze_chat(
        self, teacher: str, texts: list, names: dict[str, str] | None = None
    ) -> dict:
        if not isinstance(texts, list) or not texts or len(texts) > MAX_CHAT_MESSAGES:
            raise ClassroomError(400, f"messages: a list of 1-{MAX_CHAT_MESSAGES} strings")
        if not all(isinstance(t, str) and 0 < len(t) <= 2000 for t in texts):
            raise ClassroomError(400, "messages: strings of 1-2000 characters")
        aliases = Pseudonyms(names or {})
        results: list[dict] = []
        sources, fallback, model = set(), None, None
        for i in range(0, len(texts), CHAT_BATCH):
            batch = texts[i : i + CHAT_BATCH]
            out = await self._chat_batch(teacher, batch, aliases)
            sources.add(out["source"])
            model = out.get("model") or model
            fallback = fallback or out.get("fallback")
            results.extend({**r, "text": t} for r, t in zip(out["results"], batch, strict=True))
        body = {"results": results, "source": sources.pop() if len(sources) == 1 else "mixed"}
        if model:
            body["model"] = model
        if fallback:
            body["fallback"] = fallback
        return body

    async def _chat_batch(self, teacher: str, batch: list[str], aliases: Pseudonyms) -> dict:
        hidden = [aliases.hide(t) for t in batch]

        def normalise(r: dict) -> dict:
            items = r.get("results")
            if not isinstance(items, list) or len(items) != len(batch):
                raise ProviderError("unparseable", "results do not match the messages")
            out = []
            for k, item in enumerate(sorted(items, key=lambda x: x.get("i", 0))):
                if not isinstance(item, dict) or item.get("sentiment") not in (
                    "positive",
                    "neutral",
                    "negative",
                ):
                    raise ProviderError("unparseable", "bad result item")
                out.append(
                    {
                        "lang": str(item.get("lang") or nlp.language(batch[k]))[:5],
                        "question": bool(item.get("question")),
                        "confusion": bool(item.get("confusion")),
                        "sentiment": item["sentiment"],
                        "keywords": _strings(item.get("keywords", []), 5),
                    }
                )
            return {"results": out}

        async def local() -> dict:
            results = await asyncio.to_thread(nlp.analyse_messages, batch)
            return {"results": [{k: v for k, v in r.items() if k != "text"} for r in results]}

        numbered = "\n".join(f"{k}: {t}" for k, t in enumerate(hidden))
        return await self.run(
            teacher,
            "nlp",
            content_hash(hidden),
            lambda: Request(
                system="You analyse students' chat messages in a live class (Korean or "
                "English). For each numbered message: lang (ko/en), question (asks for an "
                "answer), confusion (does not follow or understand), sentiment "
                "(positive/neutral/negative), up to 5 topic keywords.",
                prompt=f"Messages:\n{numbered}\nReturn results with i = the message number.",
                schema=CHAT_SCHEMA,
            ),
            normalise,
            local,
        )

    # -- session report -------------------------------------------------------------------
    async def session_report(self, session: dict, *, fresh: bool = False) -> dict:
        """The report (shared by concurrent callers; a final one is read from the store)."""
        sid = session["id"]
        if session.get("status") == "ended" and not fresh:
            stored = await self.store.get("ai_reports", sid)
            if stored and stored.get("final"):
                return stored["report"]
        cached = self._reports.get(sid)
        if cached and not fresh and time.monotonic() - cached[0] < REPORT_REUSE:
            return cached[1]
        running = self._running.get(sid)
        if running is None:
            running = asyncio.ensure_future(self._make_report(session))
            self._running[sid] = running
            running.add_done_callback(lambda _t: self._running.pop(sid, None))
        return await asyncio.shield(running)

    async def _make_report(self, session: dict) -> dict:
        sid = session["id"]
        chats = [
            c
            for c in await self.store.find(
                "chat_messages", {"session_id": sid}, order_by="timestamp"
            )
            if not c.get("deleted")
        ]
        student_chats = [c for c in chats if c.get("role") == "student"]
        local = await asyncio.to_thread(nlp.analyse_messages, [c["text"] for c in chats])
        analysis = {c["id"]: a for c, a in zip(chats, local, strict=True)}
        names = await self.roster(sid)
        for c in student_chats:  # a writer with no join event (should not happen)
            names.setdefault(c["user_id"], c.get("name", ""))
        chat_source = LOCAL
        chat_fallback = None
        if student_chats:
            remote = (
                await self.analyze_chat(
                    session["teacher"], [c["text"] for c in student_chats], names
                )
                if len(student_chats) <= MAX_CHAT_MESSAGES
                else None
            )
            if remote is not None:
                chat_source, chat_fallback = remote["source"], remote.get("fallback")
                for c, r in zip(student_chats, remote["results"], strict=True):
                    analysis[c["id"]] = r
        slides = await self.session_slides(session)
        engagement = await self.c.engagement.session_report(session)
        quizzes = []
        for q in await self.c.quizzes.for_session(sid):
            stats = await self.c.quizzes.statistics(q)
            quizzes.append({"question": q.get("question", ""), "accuracy": stats.get("accuracy")})
        report = await asyncio.to_thread(
            feedback.build_report,
            session,
            chats,
            analysis,
            slides,
            engagement,
            quizzes,
            time.time(),
        )
        report["slides"] = slides
        report["chat_source"] = chat_source
        report["source"] = LOCAL
        if chat_fallback:
            report["fallback"] = chat_fallback
        await self._provider_feedback(session, report, Pseudonyms(names))
        self._reports[sid] = (time.monotonic(), report)
        await self.store.upsert(
            "ai_reports",
            {
                "id": sid,
                "session_id": sid,
                "generated_at": report["generated_at"],
                "final": report["final"],
                "report": report,
            },
        )
        return report

    async def roster(self, session_id: str) -> dict[str, str]:
        """Every student who joined the session: student id -> name."""
        joins = await self.store.find(
            "engagement_events", {"session_id": session_id, "kind": "join"}
        )
        return {e["student_id"]: e.get("name", "") for e in joins}

    async def _provider_feedback(self, session: dict, report: dict, aliases: Pseudonyms) -> None:
        """Summary, suggestions and notes from the provider, on pseudonymous facts."""
        facts = {
            "participation": report["participation"],
            "confusion_peaks": [
                {
                    "minute": round((p["start"] - session["started_at"]) / 60),
                    "messages": p["confusion_messages"],
                    "slide": (p["slide"] or {}).get("title", ""),
                    "examples": p["examples"],
                }
                for p in report["confusion_peaks"]
            ],
            "unanswered_questions": [q["text"] for q in report["unanswered_questions"]][:20],
            "slides": [
                {"title": t["title"], "keywords": t["chat_keywords"], "confusion": t["confusion"]}
                for t in report["topics_per_slide"]
            ][:30],
            "students": [
                {"student": aliases.by_id[n["student_id"]], "facts": n["text"]}
                for n in report["student_notes"]
                if n["student_id"] in aliases.by_id
            ],
        }
        facts = aliases.hide_all(facts)  # chat text, OCR'd slide titles, keywords

        def normalise(r: dict) -> dict:
            if not isinstance(r.get("summary"), str):
                raise ProviderError("unparseable", "summary missing")
            notes = []
            for n in r.get("student_notes") or []:
                if isinstance(n, dict) and n.get("student") in aliases.to_id:
                    notes.append({"student": n["student"], "note": str(n.get("note", ""))[:400]})
            return {
                "summary": r["summary"][:2000],
                "suggestions": _strings(r.get("suggestions", []), 10),
                "student_notes": notes,
            }

        async def local() -> dict:
            return {}

        out = await self.run(
            session["teacher"],
            "feedback",
            content_hash(facts),
            lambda: Request(
                system="You help a teacher after a live class. Be brief, concrete and kind. "
                "Write in the language most students wrote in. Students are pseudonyms.",
                prompt="Class facts (JSON):\n" + _dumps(facts) + "\nReturn a summary (3-5 "
                "sentences), up to 5 suggestions, and one short note per student.",
                schema=FEEDBACK_SCHEMA,
            ),
            normalise,
            local,
        )
        if out["source"] == LOCAL:
            if out.get("fallback"):
                report["fallback"] = out["fallback"]
            return
        report["source"] = out["source"]
        report["model"] = out.get("model")
        report["ai_summary"] = out["summary"]
        report["ai_suggestions"] = out["suggestions"]
        by_alias = {n["student"]: n["note"] for n in out["student_notes"]}
        for note in report["student_notes"]:
            alias = aliases.by_id.get(note["student_id"])
            if alias in by_alias:
                note["ai_note"] = by_alias[alias]

    async def _report_loop(self) -> None:
        """Regenerate reports of running classes every REPORT_EVERY, and once at the end."""
        while True:
            await asyncio.sleep(REPORT_EVERY)
            try:
                active = await self.store.find("sessions", {"status": "active"})
                ids = {s["id"] for s in active}
                for sid in self._active - ids:  # ended since the last round
                    session = await self.store.get("sessions", sid)
                    if session is not None:
                        await self._publish_report(session, fresh=True)
                for s in active:
                    await self._publish_report(s, fresh=True)
                self._active = ids
                await self._sweep_cache()
            except Exception:  # noqa: BLE001 - keep the loop; the next round retries
                log.exception("ai: report round failed")

    async def _publish_report(self, session: dict, fresh: bool) -> None:
        report = await self.session_report(session, fresh=fresh)
        self.c.publish(
            {
                "session_id": session["id"],
                "type": "ai_report",
                "to": "staff",
                "generated_at": report["generated_at"],
                "final": report["final"],
                "source": report["source"],
                "summary": report.get("ai_summary") or report["summary"],
            }
        )

    async def _sweep_cache(self) -> None:
        now = time.time()
        old = await self.store.find("ai_cache", order_by="expires_at", limit=500)
        for doc in old:
            if doc["expires_at"] > now:
                break
            await self.store.delete("ai_cache", doc["id"])

    def forget_session(self, session_id: str) -> None:
        self._reports.pop(session_id, None)


def _dumps(value) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


AI = web.AppKey("ai", AIService)


def ai_of(request: web.Request) -> AIService:
    """The AI service of the node serving this request."""
    return request.app[AI]
