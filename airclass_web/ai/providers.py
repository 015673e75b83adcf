"""AI providers behind one interface: `generate(Request) -> dict` (parsed JSON) or
ProviderError with a machine-readable reason the caller falls back on.

- local: nothing leaves the machine (the analysers in nlp.py / vision.py / feedback.py;
  the service calls them directly, `LOCAL` is its name);
- gemini: REST `POST {base}/v1beta/models/{model}:generateContent`, key in the
  `x-goog-api-key` header (never in the URL or logs), inline JPEG, JSON output requested
  with a response schema;
- openai: any OpenAI-compatible `POST {base}/v1/chat/completions` (Ollama, llama.cpp,
  vLLM), images as base64 data URLs, `response_format` json_schema.

Upstream answers are never echoed: errors carry fixed strings ("upstream returned HTTP
502"), redirects are not followed, and at most MAX_RESPONSE bytes are read.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import aiohttp

LOCAL = "local"
GEMINI = "gemini"
OPENAI = "openai"
PROVIDERS = (GEMINI, OPENAI)
DEFAULT_MODELS = {GEMINI: "gemini-3-flash", OPENAI: "llama3.2-vision"}
DEFAULT_GEMINI_BASE = "https://generativelanguage.googleapis.com"
TIMEOUT = 30.0
MAX_RESPONSE = 4 * 1024 * 1024
#: Gemini's block reasons (anything else is reported as OTHER, never as the upstream text).
BLOCK_REASONS = {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "OTHER"}
MAX_OUTPUT_TOKENS = 1024
PACIFIC = ZoneInfo("America/Los_Angeles")


@dataclass
class Request:
    """One structured-output call."""

    system: str
    prompt: str
    schema: dict
    image: bytes | None = None  # JPEG


@dataclass
class ProviderError(Exception):
    """The provider gave no usable answer. reason: rate_limited, quota_exhausted,
    invalid_key, bad_request, server_error, timeout, blocked, unparseable, unreachable,
    base_url_not_allowed. `detail` is one of our fixed strings, never upstream text."""

    reason: str
    detail: str = ""
    #: Do not call this provider for this teacher before this time.time() (0: no wait).
    retry_at: float = 0.0
    status: int = 0
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"[:300]


def _seconds(text: str) -> float:
    """'47s' / '1.5s' (protobuf Duration as JSON) -> seconds."""
    m = re.fullmatch(r"\s*(\d{1,6}(?:\.\d{1,9})?)s\s*", str(text or ""))
    return float(m.group(1)) if m else 0.0


def next_pacific_midnight(now: float) -> float:
    """When a Gemini per-day quota resets (midnight Pacific time)."""
    local = dt.datetime.fromtimestamp(now, PACIFIC)
    midnight = (local + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight.timestamp()


def parse_json_text(text: str) -> dict:
    """The JSON object in a model's text (code fences tolerated)."""
    t = text.strip()
    if t.startswith("```"):
        t = re.sub(r"^```(?:json)?\s*|\s*```$", "", t)
    try:
        value = json.loads(t)
    except ValueError as exc:
        raise ProviderError("unparseable", "the model's output is not JSON") from exc
    if not isinstance(value, dict):
        raise ProviderError("unparseable", "the model's output is not a JSON object")
    return value


class Provider:
    name = "abstract"

    def __init__(self, http: aiohttp.ClientSession, api_key: str, model: str, base_url: str):
        self.http = http
        self._key = api_key
        self.model = model
        self.base_url = base_url.rstrip("/")

    def __repr__(self) -> str:  # the key is never shown
        return f"<{type(self).__name__} model={self.model} base={self.base_url}>"

    async def generate(self, req: Request) -> dict:
        raise NotImplementedError

    async def _post(self, url: str, headers: dict, body: dict) -> tuple[int, dict, dict]:
        try:
            async with self.http.post(
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
                allow_redirects=False,
            ) as resp:
                status, hdrs = resp.status, dict(resp.headers)
                raw = await _read_limited(resp)
        except TimeoutError as exc:
            raise ProviderError("timeout", f"no answer within {TIMEOUT:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError("unreachable", "upstream unreachable") from exc
        if 300 <= status < 400:
            raise ProviderError(
                "bad_request",
                f"upstream returned HTTP {status} (redirects are not followed)",
                status=status,
            )
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if status < 400 and not isinstance(data, dict):
            raise ProviderError("unparseable", "response is not a JSON object", status=status)
        return status, data if isinstance(data, dict) else {}, hdrs


async def _read_limited(resp: aiohttp.ClientResponse) -> bytes:
    """The body, or ProviderError when it is larger than MAX_RESPONSE."""
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise ProviderError("unparseable", "upstream answer too large", status=resp.status)
        chunks.append(chunk)
    return b"".join(chunks)


def _upstream(status: int) -> str:
    return f"upstream returned HTTP {status}"


class GeminiProvider(Provider):
    name = GEMINI

    async def generate(self, req: Request) -> dict:
        parts: list[dict] = []
        if req.image is not None:
            parts.append(
                {
                    "inlineData": {
                        "mimeType": "image/jpeg",
                        "data": base64.b64encode(req.image).decode(),
                    }
                }
            )
        parts.append({"text": req.prompt})
        body = {
            "systemInstruction": {"parts": [{"text": req.system}]},
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": req.schema,
                "maxOutputTokens": MAX_OUTPUT_TOKENS,
            },
        }
        url = f"{self.base_url}/v1beta/models/{self.model}:generateContent"
        headers = {"x-goog-api-key": self._key, "Content-Type": "application/json"}
        status, data, _ = await self._post(url, headers, body)
        if status >= 400:
            raise self._error(status, data)
        feedback = data.get("promptFeedback") or {}
        candidates = data.get("candidates") or []
        if not candidates:
            reason = str(feedback.get("blockReason") or "")
            reason = reason if reason in BLOCK_REASONS else "OTHER"
            raise ProviderError("blocked", f"prompt blocked: {reason}", status=status)
        cand = candidates[0]
        finish = cand.get("finishReason", "STOP")
        if finish in ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII"):
            raise ProviderError("blocked", f"answer blocked: {finish}", status=status)
        text = "".join(p.get("text", "") for p in (cand.get("content") or {}).get("parts", []))
        if not text:
            raise ProviderError("unparseable", "empty answer", status=status)
        return parse_json_text(text)

    @staticmethod
    def _error(status: int, data: dict) -> ProviderError:
        err = data.get("error") if isinstance(data.get("error"), dict) else {}
        details = err.get("details") if isinstance(err.get("details"), list) else []
        details = [d for d in details if isinstance(d, dict)]
        if status == 429:
            delay, per_day = 0.0, False
            for d in details:
                kind = str(d.get("@type", ""))
                if kind.endswith("google.rpc.RetryInfo"):
                    delay = _seconds(d.get("retryDelay"))
                elif kind.endswith("google.rpc.QuotaFailure"):
                    for v in d.get("violations") or []:
                        if "perday" in str(v.get("quotaId", "")).replace("_", "").lower():
                            per_day = True
            now = time.time()
            if per_day:
                return ProviderError(
                    "quota_exhausted",
                    "per-day quota used up; calls resume after midnight Pacific time",
                    retry_at=next_pacific_midnight(now),
                    status=status,
                )
            return ProviderError(
                "rate_limited", _upstream(status), retry_at=now + (delay or 60.0), status=status
            )
        reasons = {str(d.get("reason", "")) for d in details}
        if status == 400 and "API_KEY_INVALID" in reasons:
            return ProviderError("invalid_key", "the API key is not valid", status=status)
        if status in (401, 403):
            return ProviderError("invalid_key", _upstream(status), status=status)
        if status >= 500:
            return ProviderError("server_error", _upstream(status), status=status)
        return ProviderError("bad_request", _upstream(status), status=status)


class OpenAIProvider(Provider):
    name = OPENAI

    async def generate(self, req: Request) -> dict:
        content: list[dict] = [{"type": "text", "text": req.prompt}]
        if req.image is not None:
            url = "data:image/jpeg;base64," + base64.b64encode(req.image).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": req.system},
                {"role": "user", "content": content},
            ],
            "max_tokens": MAX_OUTPUT_TOKENS,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "result", "schema": req.schema},
            },
        }
        headers = {"Authorization": f"Bearer {self._key or 'none'}"}
        status, data, hdrs = await self._post(f"{self.base_url}/v1/chat/completions", headers, body)
        if status >= 400:
            raise self._error(status, data, hdrs)
        choices = data.get("choices") or []
        if not choices:
            raise ProviderError("unparseable", "no choices", status=status)
        choice = choices[0]
        if choice.get("finish_reason") == "content_filter":
            raise ProviderError("blocked", "content filter", status=status)
        text = (choice.get("message") or {}).get("content") or ""
        if not isinstance(text, str) or not text:
            raise ProviderError("unparseable", "empty answer", status=status)
        return parse_json_text(text)

    @staticmethod
    def _error(status: int, data: dict, headers: dict) -> ProviderError:
        err = data.get("error") if isinstance(data.get("error"), dict) else {}
        code = str(err.get("code") or err.get("type") or "")
        now = time.time()
        if status == 429:
            if code == "insufficient_quota":
                return ProviderError(
                    "quota_exhausted", "quota used up", retry_at=now + 3600, status=429
                )
            try:
                wait = float(headers.get("Retry-After", "") or 20.0)
            except ValueError:
                wait = 20.0
            wait = min(max(wait, 1.0), 86400.0) if math.isfinite(wait) else 20.0
            return ProviderError("rate_limited", _upstream(429), retry_at=now + wait, status=429)
        if status in (401, 403) or code == "invalid_api_key":
            return ProviderError("invalid_key", _upstream(status), status=status)
        if status >= 500:
            return ProviderError("server_error", _upstream(status), status=status)
        return ProviderError("bad_request", _upstream(status), status=status)


def make_provider(
    name: str, http: aiohttp.ClientSession, api_key: str, model: str, base_url: str
) -> Provider:
    cls = {GEMINI: GeminiProvider, OPENAI: OpenAIProvider}[name]
    return cls(http, api_key, model or DEFAULT_MODELS[name], base_url)
