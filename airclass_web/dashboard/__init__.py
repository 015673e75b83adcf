"""The teacher's analytics dashboard (issue 10): `setup(app, classroom, ai)`."""

from __future__ import annotations

from aiohttp import web

from ..ai import AIService
from ..classroom import Classroom
from ..node import NODE
from .service import DASHBOARD, DashboardService

#: Signed links in the dashboard live this long (seconds).
LINK_TTL = 6 * 3600


def setup(app: web.Application, classroom: Classroom, ai: AIService) -> None:
    from ..recording import with_urls

    node = app[NODE]
    app[DASHBOARD] = DashboardService(classroom, ai, lambda doc: with_urls(node, doc, LINK_TTL))


__all__ = ["DASHBOARD", "DashboardService", "setup"]
