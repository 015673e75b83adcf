"""AI analysis on real nodes: local analysers (real Tesseract on a rendered Korean +
English slide, the labelled chat set with precision/recall thresholds), per-teacher keys
encrypted at rest, and fake Gemini / OpenAI-compatible servers (aiohttp apps on the test
host) speaking the real wire formats: success, 429 with RetryInfo, per-day quota,
400 API_KEY_INVALID, blocked prompt, 5xx, unparseable output; every failure falls back
to local with its reason, and the key is never in a URL or a log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from airclass_web.ai import vision

from .ai_support import render_slide
from .classroom_support import Api, add_teacher
from .support import TEST_HOST, NodeProcess, free_port

LABELLED = Path(__file__).parent / "fixtures" / "chat_labelled.tsv"
GEMINI_KEY = "AIzaSy-fake-gemini-key-7f3a9c"
OPENAI_KEY = "sk-fake-openai-key-51c2e0"
QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
SLIDE_TITLE = "광합성 Photosynthesis"
SLIDE_LINES = ["엽록체에서 빛 에너지를 흡수한다", "Chlorophyll absorbs light energy"]
UPSTREAM_SECRET = "UPSTREAM-SECRET-TEXT-9d2f"


class FakeServer:
    """A small aiohttp app on TEST_HOST that records requests; `mode` picks the answer."""

    def __init__(self, host: str = TEST_HOST) -> None:
        self.mode = "ok"
        self.host = host
        self.requests: list[dict] = []
        self.app = web.Application()
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> FakeServer:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def record(self, request: web.Request) -> dict:
        body = await request.json()
        self.requests.append(
            {
                "url": str(request.url),
                "headers": dict(request.headers),
                "body": body,
                "raw": json.dumps(body, ensure_ascii=False),
            }
        )
        return body


def answer_for(text_blob: str, schema_props: dict) -> dict:
    """A plausible structured answer for the schema the node asked for."""
    if "results" in schema_props:
        n = text_blob.count("\n") + 1 if "Messages:" in text_blob else 1
        lines = [ln for ln in text_blob.split("Messages:\n", 1)[1].split("\n") if ": " in ln]
        n = len([ln for ln in lines if ln.split(": ", 1)[0].isdigit()])
        return {
            "results": [
                {
                    "i": i,
                    "lang": "en",
                    "question": True,
                    "confusion": False,
                    "sentiment": "neutral",
                    "keywords": ["remote"],
                }
                for i in range(n)
            ]
        }
    if "title" in schema_props:
        return {"title": "Remote title", "text": "remote text", "keywords": ["remote"]}
    return {
        "summary": "Remote summary of the class.",
        "suggestions": ["Remote suggestion"],
        "student_notes": [{"student": "Student 1", "note": "Remote note"}],
    }


def make_gemini() -> FakeServer:
    fake = FakeServer()

    async def generate(request: web.Request) -> web.Response:
        body = await fake.record(request)
        mode = fake.mode
        if mode == "429":
            return web.json_response(
                {
                    "error": {
                        "code": 429,
                        "status": "RESOURCE_EXHAUSTED",
                        "message": "Resource has been exhausted (e.g. check quota).",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                "violations": [
                                    {
                                        "quotaMetric": QUOTA_METRIC,
                                        "quotaId": PER_MINUTE,
                                    }
                                ],
                            },
                            {
                                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": "47s",
                            },
                        ],
                    }
                },
                status=429,
            )
        if mode == "429-day":
            return web.json_response(
                {
                    "error": {
                        "code": 429,
                        "status": "RESOURCE_EXHAUSTED",
                        "message": "You exceeded your current quota.",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                                "violations": [
                                    {
                                        "quotaMetric": QUOTA_METRIC,
                                        "quotaId": PER_DAY,
                                    }
                                ],
                            },
                            {
                                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                                "retryDelay": "13s",
                            },
                        ],
                    }
                },
                status=429,
            )
        if mode == "bad-key":
            return web.json_response(
                {
                    "error": {
                        "code": 400,
                        "status": "INVALID_ARGUMENT",
                        "message": "API key not valid. Please pass a valid API key.",
                        "details": [
                            {
                                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                "reason": "API_KEY_INVALID",
                                "domain": "googleapis.com",
                            }
                        ],
                    }
                },
                status=400,
            )
        if mode == "blocked":
            return web.json_response(
                {
                    "promptFeedback": {
                        "blockReason": "SAFETY",
                        "safetyRatings": [
                            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}
                        ],
                    },
                    "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                }
            )
        if mode == "503":
            return web.json_response(
                {
                    "error": {
                        "code": 503,
                        "status": "UNAVAILABLE",
                        "message": "The model is overloaded.",
                    }
                },
                status=503,
            )
        if mode == "garbage":
            text = "Sure! Here is the analysis you asked for."
        else:
            parts = body["contents"][0]["parts"]
            blob = "\n".join(p.get("text", "") for p in parts)
            props = body["generationConfig"]["responseSchema"]["properties"]
            text = json.dumps(answer_for(blob, props))
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 100,
                    "candidatesTokenCount": 20,
                    "totalTokenCount": 120,
                },
                "modelVersion": "gemini-3-flash",
            }
        )

    fake.app.router.add_post("/v1beta/models/{model}:generateContent", generate)
    return fake


def make_openai(host: str = TEST_HOST) -> FakeServer:
    fake = FakeServer(host)

    async def completions(request: web.Request) -> web.Response:
        body = await fake.record(request)
        if fake.mode == "429":
            return web.json_response(
                {
                    "error": {
                        "message": "Rate limit reached",
                        "type": "requests",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"Retry-After": "20"},
            )
        if fake.mode == "leak":  # an upstream body the node must never echo
            return web.json_response(
                {"error": {"message": f"internal: {UPSTREAM_SECRET}", "code": "x"}}, status=502
            )
        if fake.mode == "redirect":  # must not be followed
            raise web.HTTPTemporaryRedirect(fake.url + "/v1/followed")
        if fake.mode == "quota":
            return web.json_response(
                {
                    "error": {
                        "message": "You exceeded your current quota",
                        "type": "insufficient_quota",
                        "param": None,
                        "code": "insufficient_quota",
                    }
                },
                status=429,
            )
        user = body["messages"][1]["content"]
        blob = "\n".join(p.get("text", "") for p in user if p["type"] == "text")
        props = body["response_format"]["json_schema"]["schema"]["properties"]
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": json.dumps(answer_for(blob, props)),
                        },
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
            }
        )

    async def followed(request: web.Request) -> web.Response:
        await fake.record(request)
        return web.json_response({"error": {"message": UPSTREAM_SECRET}}, status=400)

    fake.app.router.add_post("/v1/chat/completions", completions)
    fake.app.router.add_post("/v1/followed", followed)
    return fake


@pytest.fixture
async def gemini():
    fake = await make_gemini().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def openai_fake():
    fake = await make_openai().start()
    yield fake
    await fake.stop()


def start_node(tmp_path, *extra: str) -> NodeProcess:
    node = NodeProcess(tmp_path, *extra, dev=False, name="ai")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    assert add_teacher(node.data_dir, "lee").returncode == 0
    return node.start()


@pytest.fixture
def ai_node(tmp_path, gemini):
    # Many calls in a row: the per-teacher limit is tested with the OpenAI node.
    node = start_node(tmp_path, "--gemini-base-url", gemini.url, "--ai-calls-per-minute", "600")
    yield node
    node.stop()


def load_labelled() -> list[list[str]]:
    rows = [
        ln.rstrip("\n").split("\t")
        for ln in LABELLED.read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert len(rows) >= 200 and all(len(r) == 5 for r in rows)
    assert {r[0] for r in rows} == {"ko", "en"}
    return rows


def precision_recall(pred: list[bool], gold: list[bool]) -> tuple[float, float]:
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


async def test_local_analysers_slide_ocr_and_labelled_chat(ai_node, gemini):
    async with aiohttp.ClientSession() as http:
        api = Api(http, ai_node.url)
        token = await api.login("kim")
        # No provider configured: everything local, nothing sent out.
        slide = render_slide(SLIDE_TITLE, SLIDE_LINES)
        status, body = await api.call(
            "POST",
            "/api/ai/analyze/slide",
            token=token,
            data=slide,
            headers={"Content-Type": "image/jpeg"},
        )
        assert status == 200, body
        assert body["source"] == "local" and "fallback" not in body
        assert "광합성" in body["title"] and "Photosynthesis" in body["title"]
        assert "Chlorophyll absorbs light energy" in body["text"]
        assert "엽록체" in body["text"]
        assert "photosynthesis" in body["keywords"] and "광합성" in body["keywords"]
        # Wrong type and no token.
        status, _ = await api.call(
            "POST",
            "/api/ai/analyze/slide",
            token=token,
            data=b"x",
            headers={"Content-Type": "text/plain"},
        )
        assert status == 415
        assert (
            await api.call(
                "POST",
                "/api/ai/analyze/slide",
                token="",
                data=slide,
                headers={"Content-Type": "image/jpeg"},
            )
        )[0] == 401

        rows = load_labelled()
        results = []
        for i in range(0, len(rows), 200):
            out = await api.ok(
                "POST",
                "/api/ai/analyze/chat",
                {"messages": [r[4] for r in rows[i : i + 200]]},
                token=token,
            )
            assert out["source"] == "local"
            results += out["results"]
        assert [r["text"] for r in results] == [r[4] for r in rows]
        assert not gemini.requests
    figures = {}
    for name, col in (("question", 1), ("confusion", 2)):
        figures[name] = precision_recall([r[name] for r in results], [g[col] == "1" for g in rows])
    for label, short in (("positive", "pos"), ("negative", "neg")):
        figures[label] = precision_recall(
            [r["sentiment"] == label for r in results], [g[3] == short for g in rows]
        )
    for lang in ("ko", "en"):
        idx = [i for i, g in enumerate(rows) if g[0] == lang]
        figures[f"confusion_{lang}"] = precision_recall(
            [results[i]["confusion"] for i in idx], [rows[i][2] == "1" for i in idx]
        )
    print("precision/recall:", {k: (round(p, 3), round(r, 3)) for k, (p, r) in figures.items()})
    thresholds = {
        "question": 0.9,
        "confusion": 0.9,
        "confusion_ko": 0.85,
        "confusion_en": 0.85,
        "positive": 0.75,
        "negative": 0.85,
    }
    for name, minimum in thresholds.items():
        p, r = figures[name]
        assert p >= minimum and r >= minimum, (name, p, r)
    lang_ok = sum(r["lang"] == g[0] for r, g in zip(results, rows, strict=True)) / len(rows)
    assert lang_ok >= 0.97


def test_perceptual_hash_tells_slides_apart():
    a = render_slide(SLIDE_TITLE, SLIDE_LINES)
    a_again = render_slide(SLIDE_TITLE, SLIDE_LINES, fmt="PNG")  # same slide, other codec
    b = render_slide("미분 Derivatives", ["f'(x) = lim (f(x+h) - f(x)) / h", "기울기"])
    ha, ha2, hb = (vision.phash_bytes(x) for x in (a, a_again, b))
    assert not vision.changed(ha, ha2)
    assert vision.changed(ha, hb)
    assert vision.changed(None, ha)


async def test_gemini_keys_fallbacks_cache_and_privacy(ai_node, gemini):
    async with aiohttp.ClientSession() as http:
        api = Api(http, ai_node.url)
        token = await api.login("kim")
        base = "/api/ai/keys/gemini"
        status = await api.ok("GET", base + "/status", token=token)
        assert status["configured"] is False
        assert (await api.call("GET", "/api/ai/keys/nope/status", token=token))[0] == 404
        assert (await api.call("POST", base, {"api_key": GEMINI_KEY}, token=""))[0] == 401
        # A session and a student: the student page learns whether analysis is external.
        sess = await api.ok("POST", "/api/sessions", {"title": "Bio", "stream": "bio"}, token=token)
        student = await api.join(sess["join_code"], "Minji Park")
        privacy = f"/api/ai/session/{sess['session_id']}/privacy"
        assert (await api.ok("GET", privacy, token=student["token"]))["external"] is False

        configured = await api.ok(
            "POST", base, {"api_key": GEMINI_KEY, "model": "gemini-3-flash"}, token=token
        )
        assert configured["configured"] and configured["model"] == "gemini-3-flash"
        assert GEMINI_KEY not in json.dumps(configured)
        assert (await api.ok("GET", privacy, token=student["token"])) == {
            "external": True,
            "provider": "gemini",
        }
        # Encrypted at rest.
        import sqlite3

        conn = sqlite3.connect(ai_node.data_dir / "airclass.sqlite3")
        (doc,) = conn.execute("SELECT doc FROM ai_keys").fetchone()
        conn.close()
        assert GEMINI_KEY not in doc and json.loads(doc)["key_encrypted"]

        async def chat(*texts: str) -> dict:
            return await api.ok(
                "POST", "/api/ai/analyze/chat", {"messages": list(texts)}, token=token
            )

        # Success: the real wire format, key only in the header.
        out = await chat("What is ATP?", "I am lost")
        assert out["source"] == "gemini", out
        assert [r["keywords"] for r in out["results"]] == [["remote"], ["remote"]]
        req = gemini.requests[-1]
        assert req["url"].endswith("/v1beta/models/gemini-3-flash:generateContent")
        assert GEMINI_KEY not in req["url"] and req["headers"]["x-goog-api-key"] == GEMINI_KEY
        gen = req["body"]["generationConfig"]
        assert gen["responseMimeType"] == "application/json" and gen["responseSchema"]
        assert req["body"]["systemInstruction"]["parts"][0]["text"]
        # Same content again: from the cache, no call.
        calls = len(gemini.requests)
        again = await chat("What is ATP?", "I am lost")
        assert again["source"] == "gemini" and again["results"] == out["results"]
        assert len(gemini.requests) == calls
        # Slide: inline JPEG.
        slide = render_slide(SLIDE_TITLE, SLIDE_LINES)
        status, body = await api.call(
            "POST",
            "/api/ai/analyze/slide",
            token=token,
            data=slide,
            headers={"Content-Type": "image/jpeg"},
        )
        assert status == 200 and body["source"] == "gemini" and body["title"] == "Remote title"
        inline = gemini.requests[-1]["body"]["contents"][0]["parts"][0]["inlineData"]
        assert inline["mimeType"] == "image/jpeg" and len(inline["data"]) > 1000

        # 429 with RetryInfo: local with the reason, no more calls until the delay passed.
        gemini.mode = "429"
        before = time.time()
        out = await chat("Why is the sky blue?")
        assert out["source"] == "local" and out["results"][0]["question"] is True
        fb = out["fallback"]
        assert fb["provider"] == "gemini" and fb["reason"] == "rate_limited"
        assert before + 40 <= fb["retry_at"] <= time.time() + 48
        calls = len(gemini.requests)
        out = await chat("Is this on the exam?")
        assert out["fallback"]["reason"] == "rate_limited" and len(gemini.requests) == calls
        st = await api.ok("GET", base + "/status", token=token)
        assert st["paused_until"] and st["last_error"]["reason"] == "rate_limited"

        async def reconfigure(mode: str) -> None:
            gemini.mode = mode
            await api.ok("POST", base, {"api_key": GEMINI_KEY}, token=token)  # clears pauses

        # Per-day quota: stops calls until midnight Pacific (not the 13 s RetryInfo).
        await reconfigure("429-day")
        out = await chat("When is the homework due?")
        assert out["fallback"]["reason"] == "quota_exhausted"
        assert out["fallback"]["retry_at"] > time.time() + 60
        calls = len(gemini.requests)
        assert (await chat("Where are the notes?"))["fallback"]["reason"] == "quota_exhausted"
        assert len(gemini.requests) == calls

        for mode, reason in (
            ("bad-key", "invalid_key"),
            ("blocked", "blocked"),
            ("503", "server_error"),
            ("garbage", "unparseable"),
        ):
            await reconfigure(mode)
            out = await chat(f"message for {mode}: I don't understand")
            assert out["source"] == "local", (mode, out)
            assert out["fallback"]["reason"] == reason, (mode, out)
            assert out["results"][0]["confusion"] is True
        st = await api.ok("GET", base + "/status", token=token)
        assert st["last_error"]["reason"] == "unparseable"

        # Another teacher's status knows nothing of kim's key.
        lee = await api.login("lee")
        assert (await api.ok("GET", base + "/status", token=lee))["configured"] is False

        assert (await api.ok("DELETE", base, token=token))["deleted"] is True
        assert (await api.ok("GET", base + "/status", token=token))["configured"] is False
        assert (await api.ok("GET", privacy, token=student["token"]))["external"] is False
        calls = len(gemini.requests)
        assert (await chat("after delete?"))["source"] == "local"
        assert len(gemini.requests) == calls
    ai_node.stop()
    log = ai_node.log()
    assert "gemini call for kim failed" in log and GEMINI_KEY not in log


async def test_session_report_uses_provider_on_pseudonyms(ai_node, gemini):
    async with aiohttp.ClientSession() as http:
        api = Api(http, ai_node.url)
        token = await api.login("kim")
        sess = await api.ok(
            "POST", "/api/sessions", {"title": "Algebra", "stream": "alg"}, token=token
        )
        sid = sess["session_id"]
        report_url = f"/api/ai/session/{sid}/report"
        names = ["Minji Park", "Jisoo Lee", "Tom Baker"]
        students = [await api.join(sess["join_code"], n) for n in names]
        texts = [
            (0, "Minji Park here, 이해가 안 돼요"),
            (1, "헷갈려요 ㅠㅠ"),
            (2, "What is a matrix inverse?"),
            (2, "I'm lost, Jisoo Lee too"),
        ]
        for who, text in texts:
            await api.ok(
                "POST", f"/api/sessions/{sid}/chat", {"text": text}, token=students[who]["token"]
            )
        # Local report (no provider yet).
        report = await api.ok("GET", report_url + "?fresh=1", token=token)
        assert report["source"] == "local" and not gemini.requests
        assert report["participation"]["messages"] == 4
        assert [q["text"] for q in report["unanswered_questions"]] == ["What is a matrix inverse?"]
        assert report["confusion_peaks"] and report["confusion_peaks"][0]["confusion_messages"] >= 2
        codes = {s["code"] for s in report["suggestions"]}
        assert {"revisit", "answer_questions"} <= codes
        notes = {n["name"]: n for n in report["student_notes"]}
        assert set(notes) == set(names)
        assert any(i["code"] == "confused" for i in notes["Minji Park"]["items"])
        # A student or another teacher may not read it.
        assert (await api.call("GET", report_url, token=students[0]["token"]))[0] == 403
        assert (await api.call("GET", report_url, token=await api.login("lee")))[0] == 403

        await api.ok("POST", "/api/ai/keys/gemini", {"api_key": GEMINI_KEY}, token=token)
        report = await api.ok("GET", report_url + "?fresh=1", token=token)
        assert report["source"] == "gemini" and report["chat_source"] == "gemini"
        assert report["ai_summary"] == "Remote summary of the class."
        assert sum(1 for n in report["student_notes"] if n.get("ai_note") == "Remote note") == 1
        assert gemini.requests
        for req in gemini.requests:  # pseudonyms only
            for n in names:
                for part in n.split():
                    assert part not in req["raw"], (part, req["raw"][:300])
        assert any("Student " in r["raw"] for r in gemini.requests)
        # Ended: the final report is stored and served from the store.
        await api.ok("POST", f"/api/sessions/{sid}/end", token=token)
        final = await api.ok("GET", report_url + "?fresh=1", token=token)
        assert final["final"] is True
        calls = len(gemini.requests)
        assert (await api.ok("GET", report_url, token=token))["generated_at"] == final[
            "generated_at"
        ]
        assert len(gemini.requests) == calls


async def test_openai_compatible_provider_and_teacher_rate_limit(tmp_path, openai_fake):
    node = start_node(  # burst of 5, then ~none
        tmp_path, "--ai-calls-per-minute", "0.01", "--ai-allowed-base-url", openai_fake.url
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, node.url)
            token = await api.login("kim")
            base = "/api/ai/keys/openai"
            status, _ = await api.call(
                "POST", base, {"api_key": "x", "base_url": "ftp://x"}, token=token
            )
            assert status == 400
            cfg = {"api_key": OPENAI_KEY, "model": "llava:7b", "base_url": openai_fake.url + "/v1"}
            await api.ok("POST", base, cfg, token=token)

            async def chat(text: str) -> dict:
                return await api.ok(
                    "POST", "/api/ai/analyze/chat", {"messages": [text]}, token=token
                )

            out = await chat("What is entropy?")  # call 1
            assert out["source"] == "openai" and out["model"] == "llava:7b"
            req = openai_fake.requests[-1]
            assert req["url"] == openai_fake.url + "/v1/chat/completions"
            assert req["headers"]["Authorization"] == f"Bearer {OPENAI_KEY}"
            assert req["body"]["response_format"]["type"] == "json_schema"
            slide = render_slide(SLIDE_TITLE, SLIDE_LINES)
            status, body = await api.call(
                "POST",
                "/api/ai/analyze/slide",
                token=token,
                data=slide,
                headers={"Content-Type": "image/jpeg"},
            )
            assert status == 200 and body["source"] == "openai"  # call 2
            parts = openai_fake.requests[-1]["body"]["messages"][1]["content"]
            image = next(p for p in parts if p["type"] == "image_url")
            assert image["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")

            openai_fake.mode = "429"
            out = await chat("rate limited?")  # call 3
            assert out["fallback"]["reason"] == "rate_limited"
            assert out["fallback"]["retry_at"] >= time.time() + 10
            openai_fake.mode = "quota"
            await api.ok("POST", base, cfg, token=token)
            assert (await chat("quota?"))["fallback"]["reason"] == "quota_exhausted"  # call 4
            openai_fake.mode = "ok"
            await api.ok("POST", base, cfg, token=token)
            assert (await chat("fifth call"))["source"] == "openai"  # call 5: burst used up
            calls = len(openai_fake.requests)
            out = await chat("sixth call?")
            assert out["source"] == "local"
            assert out["fallback"]["reason"] == "teacher_rate_limit"
            assert len(openai_fake.requests) == calls
    finally:
        node.stop()
    assert OPENAI_KEY not in node.log()


def redis_connections(port: int) -> int:
    """redis-server's total_connections_received (this INFO connection included)."""
    import socket

    with socket.create_connection((TEST_HOST, port), timeout=5) as s:
        s.sendall(b"INFO stats\r\n")
        data = b""
        while b"total_connections_received:" not in data or not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    line = next(ln for ln in data.split(b"\r\n") if ln.startswith(b"total_connections_received:"))
    return int(line.split(b":")[1])


async def test_base_url_off_the_allowlist_is_refused_and_nothing_is_sent(
    tmp_path, openai_fake, redis_server
):
    """Issue 17 item 4: a teacher's base URL pointing into the node's network (a real
    redis-server, a closed port) is refused at save time with one answer for both, no
    connection is made, upstream text is never echoed, redirects are not followed, and a
    stored URL the operator no longer allows is refused at call time."""
    node = start_node(tmp_path, "--ai-allowed-base-url", openai_fake.url)
    closed = free_port()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, node.url)
            token = await api.login("kim")
            key_url = "/api/ai/keys/openai"
            status = await api.ok("GET", key_url + "/status", token=token)
            assert status["allowed_base_urls"] == [openai_fake.url]
            redis_before = redis_connections(redis_server.port)
            answers = []
            for base in (
                f"http://{TEST_HOST}:{redis_server.port}",
                f"http://{TEST_HOST}:{closed}",
                f"http://{TEST_HOST}:{redis_server.port}/v1",
                f"http://127.0.0.1:{redis_server.port}",
                f"http://localhost:{redis_server.port}",
                openai_fake.url.replace("http://", "https://"),
                openai_fake.url + "/../x",
                f"http://user:pw@{TEST_HOST}:{openai_fake.port}",
                "http://169.254.169.254/latest/meta-data",
            ):
                cfg = {"api_key": OPENAI_KEY, "base_url": base}
                answers.append(await api.call("POST", key_url, cfg, token=token))
            assert {a[0] for a in answers} == {400}, answers
            first = answers[0][1]
            assert answers[1][1] == first, answers  # redis and a closed port: same answer
            assert first["code"] == "base_url_not_allowed"
            assert "허용되지 않은" in first["error"] and "not allowed" in first["error"]
            assert (await api.ok("GET", key_url + "/status", token=token))["configured"] is False
            # Nothing configured: analysis stays local, nothing is sent anywhere.
            out = await api.ok(
                "POST", "/api/ai/analyze/chat", {"messages": ["What is a port?"]}, token=token
            )
            assert out["source"] == "local" and "fallback" not in out
            assert not openai_fake.requests
            assert redis_connections(redis_server.port) == redis_before + 1  # only ours

            # An allowed URL works; upstream error text is never echoed; no redirects.
            cfg = {"api_key": OPENAI_KEY, "base_url": openai_fake.url + "/v1/"}
            await api.ok("POST", key_url, cfg, token=token)
            for mode, text, reason in (
                ("leak", "upstream error?", "server_error"),
                ("redirect", "redirected?", "bad_request"),
            ):
                openai_fake.mode = mode
                out = await api.ok(
                    "POST", "/api/ai/analyze/chat", {"messages": [text]}, token=token
                )
                assert out["source"] == "local" and out["fallback"]["reason"] == reason, out
                st = await api.ok("GET", key_url + "/status", token=token)
                for body in (out, st):
                    assert UPSTREAM_SECRET not in json.dumps(body), body
                assert st["last_error"]["detail"].startswith("upstream returned HTTP")
            assert all(not r["url"].endswith("/followed") for r in openai_fake.requests)
            calls = len(openai_fake.requests)
    finally:
        node.stop()
    assert UPSTREAM_SECRET not in node.log()

    # The operator drops the URL from the allowlist: the stored key is refused at call time.
    again = NodeProcess(
        tmp_path, "--data-dir", str(node.data_dir), dev=False, name="ai-again"
    ).start()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, again.url)
            token = await api.login("kim")
            openai_fake.mode = "ok"
            out = await api.ok(
                "POST", "/api/ai/analyze/chat", {"messages": ["still allowed?"]}, token=token
            )
            assert out["source"] == "local", out
            assert out["fallback"]["reason"] == "base_url_not_allowed", out
            assert len(openai_fake.requests) == calls
    finally:
        again.stop()


async def test_joined_students_who_never_wrote_are_pseudonyms_too(ai_node, gemini):
    """Issue 17 item 10: pseudonyms come from the roster, not from the writers: a name
    of a student who joined but never chatted, written by another, is not sent out."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, ai_node.url)
        token = await api.login("kim")
        sess = await api.ok(
            "POST", "/api/sessions", {"title": "Bio", "stream": "bio2"}, token=token
        )
        sid = sess["session_id"]
        names = ["Minji Park", "Hana Choi", "최서연"]
        students = [await api.join(sess["join_code"], n) for n in names]
        for text in (
            "Hana Choi, can you explain this? I am lost",
            "서연이가 설명해줬는데 아직 헷갈려요",
            "hana said the answer is 4?",
            "최서연 말이 맞아요?",
        ):
            await api.ok(
                "POST", f"/api/sessions/{sid}/chat", {"text": text}, token=students[0]["token"]
            )
        await api.ok("POST", "/api/ai/keys/gemini", {"api_key": GEMINI_KEY}, token=token)
        report = await api.ok("GET", f"/api/ai/session/{sid}/report?fresh=1", token=token)
        assert report["source"] == "gemini" and report["chat_source"] == "gemini", report
        assert len(gemini.requests) >= 2  # chat analysis and the feedback
        forms = ["Minji", "Park", "Hana", "Choi", "최서연", "서연"]
        for req in gemini.requests:
            raw = req["raw"].casefold()
            for form in forms:
                assert form.casefold() not in raw, (form, req["raw"][:400])
        assert any("Student " in r["raw"] for r in gemini.requests)


async def test_teacher_page_key_form_sets_the_key_provider_calls_use(
    tmp_path, gemini, openai_fake, browser
):
    """The teacher page's AI key form (provider + key, Korean/English) saves the key the
    providers use: the exact key arrives as `Authorization: Bearer` / `x-goog-api-key`;
    a refused base URL and a node without AIRCLASS_DATA_KEY are explained next to the
    field in the teacher's language."""
    from playwright.async_api import expect

    node = start_node(
        tmp_path,
        "--gemini-base-url",
        gemini.url,
        "--ai-allowed-base-url",
        openai_fake.url,
        "--ai-calls-per-minute",
        "600",
    )
    nokey = NodeProcess(tmp_path, dev=False, name="nokey", env={"AIRCLASS_DATA_KEY": ""})
    assert add_teacher(nokey.data_dir, "kim").returncode == 0
    nokey.start()
    errors: list[str] = []

    async def teacher_page(target: NodeProcess, token: str, locale: str):
        ctx = await browser.new_context(locale=locale)
        await ctx.add_init_script(
            f"sessionStorage.setItem('airclass.teacher_token', {json.dumps(token)})"
        )
        page = await ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(target.url + "/teacher")
        await page.click("#t-ai summary")
        return page

    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, node.url)
            token = await api.login("kim")

            async def chat(text: str) -> dict:
                return await api.ok(
                    "POST", "/api/ai/analyze/chat", {"messages": [text]}, token=token
                )

            page = await teacher_page(node, token, "ko-KR")
            await expect(page.locator("#t-ai summary")).to_have_text("AI 분석 키")
            await expect(page.locator("label:has(#t-ai-key) > span")).to_have_text("API 키")
            await expect(page.locator("#t-ai-base-row")).to_be_hidden()
            await page.select_option("#t-ai-provider", "openai")
            await expect(page.locator("#t-ai-base-row")).to_be_visible()
            await page.fill("#t-ai-key", OPENAI_KEY)
            await page.fill("#t-ai-base", f"http://{TEST_HOST}:{free_port()}")
            await page.click("#t-ai-save")
            await expect(page.locator("#t-ai-error")).to_contain_text("허용되지 않은 API 주소")
            await page.fill("#t-ai-base", openai_fake.url + "/v1")
            await page.click("#t-ai-save")
            await expect(page.locator("#t-ai-state")).to_contain_text("저장됨: OpenAI")
            await expect(page.locator("#t-ai-error")).to_have_text("")
            out = await chat("What does the form save?")
            assert out["source"] == "openai", out
            assert openai_fake.requests[-1]["headers"]["Authorization"] == f"Bearer {OPENAI_KEY}"

            await page.select_option("#t-ai-provider", "gemini")
            await expect(page.locator("#t-ai-base-row")).to_be_hidden()
            await page.fill("#t-ai-key", GEMINI_KEY)
            await page.click("#t-ai-save")
            await expect(page.locator("#t-ai-state")).to_contain_text("저장됨: Gemini")
            out = await chat("And now which key?")
            assert out["source"] == "gemini", out
            assert gemini.requests[-1]["headers"]["x-goog-api-key"] == GEMINI_KEY
            assert await page.locator("#t-ai-key").input_value() == ""  # not kept in the page

            # No AIRCLASS_DATA_KEY on the node: said next to the field, in either language.
            nokey_token = await Api(http, nokey.url).login("kim")
            page = await teacher_page(nokey, nokey_token, "en-US")
            await page.fill("#t-ai-key", GEMINI_KEY)
            await page.click("#t-ai-save")
            error = page.locator("#t-ai-error")
            await expect(error).to_contain_text("AIRCLASS_DATA_KEY is not set")
            await page.click(".lang-toggle")
            await expect(error).to_contain_text("AIRCLASS_DATA_KEY가 설정되지 않아")
            assert (await page.locator("#t-ai-key").get_attribute("aria-describedby")) == (
                "t-ai-error"
            )
    finally:
        node.stop()
        nokey.stop()
    assert not errors, errors
    assert OPENAI_KEY not in node.log() and GEMINI_KEY not in node.log()


async def test_an_allowed_host_name_that_resolves_to_loopback_is_not_called(tmp_path):
    """The operator allowlists a host name: it must resolve to public addresses, so
    `localhost` (or a name made to point inside) is refused when the call connects; the
    same server by its IP address, spelt out by the operator, is called."""
    fake = await make_openai("127.0.0.1").start()
    by_name = f"http://localhost:{fake.port}"
    node = start_node(tmp_path, "--ai-allowed-base-url", by_name, "--ai-allowed-base-url", fake.url)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, node.url)
            token = await api.login("kim")
            cfg = {"api_key": OPENAI_KEY, "base_url": by_name}
            await api.ok("POST", "/api/ai/keys/openai", cfg, token=token)
            out = await api.ok(
                "POST", "/api/ai/analyze/chat", {"messages": ["by name?"]}, token=token
            )
            assert out["source"] == "local", out
            assert out["fallback"] == {
                "provider": "openai",
                "reason": "unreachable",
                "detail": "upstream unreachable",
                "retry_at": None,
            }
            assert not fake.requests
            await api.ok("POST", "/api/ai/keys/openai", {**cfg, "base_url": fake.url}, token=token)
            out = await api.ok(
                "POST", "/api/ai/analyze/chat", {"messages": ["by address?"]}, token=token
            )
            assert out["source"] == "openai" and len(fake.requests) == 1, out
    finally:
        node.stop()
        await fake.stop()
    assert "resolves to the non-public address" in node.log()
