"""Classroom (issue 4): teachers, class sessions, realtime chat, quizzes, engagement.

`setup(app, classroom)` registers the classroom (built by the composition root over the
node's store, teacher accounts and stream keys) as a service. The routes are in .routes.
"""

from __future__ import annotations

from aiohttp import web

from ..node import NODE
from .service import CLASSROOM, Classroom


def setup(app: web.Application, classroom: Classroom) -> None:
    app[CLASSROOM] = classroom
    app[NODE].add_service("classroom", classroom.start, classroom.stop)


__all__ = ["CLASSROOM", "Classroom", "setup"]
