"""The teacher's analytics dashboard (issue 10). `setup(app)` after ai.setup."""

from __future__ import annotations

from aiohttp import web

from ..ai import AI
from ..classroom import CLASSROOM
from ..node import NODE
from .service import DASHBOARD, DashboardService

#: Signed links in the dashboard live this long (seconds).
LINK_TTL = 6 * 3600


def setup(app: web.Application) -> None:
    from ..recording import with_urls

    node = app[NODE]
    app[DASHBOARD] = DashboardService(
        app[CLASSROOM], app[AI], lambda doc: with_urls(node, doc, LINK_TTL)
    )


__all__ = ["DASHBOARD", "DashboardService", "setup"]
