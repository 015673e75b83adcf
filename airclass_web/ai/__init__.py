"""AI class analysis (issue 10): providers (local default, Gemini, OpenAI-compatible),
local analysers (slide OCR, chat NLP, feedback report), cache, per-teacher keys.

`setup(app)` runs after the classroom and the recorder are set up.
"""

from __future__ import annotations

from aiohttp import web

from ..classroom import CLASSROOM
from ..node import NODE
from .service import AI, AIService


def setup(app: web.Application) -> None:
    from ..recording import RECORDER

    node = app[NODE]
    service = AIService(
        app[CLASSROOM],
        lambda: app.get(RECORDER),
        node.config.gemini_base_url,
        node.config.ai_calls_per_minute,
        node.config.ai_allowed_base_urls,
    )
    app[AI] = service
    node.add_service("ai", service.start, service.stop)


__all__ = ["AI", "AIService", "setup"]
