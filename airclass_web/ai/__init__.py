"""AI class analysis (issue 10): providers (local default, Gemini, OpenAI-compatible),
local analysers (slide OCR, chat NLP, feedback report), cache, per-teacher keys.

`setup(app, classroom, recorder)` builds the service over the classroom and the recorder it
is given.
"""

from __future__ import annotations

from aiohttp import web

from recorder.manager import RecordingManager

from ..classroom import Classroom
from ..node import NODE
from .service import AI, AIService


def setup(app: web.Application, classroom: Classroom, recorder: RecordingManager) -> AIService:
    node = app[NODE]
    service = AIService(
        classroom,
        recorder,
        node.config.gemini_base_url,
        node.config.ai_calls_per_minute,
        node.config.ai_allowed_base_urls,
    )
    app[AI] = service
    node.add_service("ai", service.start, service.stop)
    return service


__all__ = ["AI", "AIService", "setup"]
