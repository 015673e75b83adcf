"""Classroom (issue 4): teachers, class sessions, realtime chat, quizzes, engagement.

`setup(app)` creates the node's store and classroom, registers them as services and adds
the routes; it also replaces the node's teacher check (`node.teacher_auth`).
"""

from __future__ import annotations

from aiohttp import web

from ..node import NODE
from .routes import CLASSROOM, setup_routes, teacher_auth
from .service import Classroom


def setup(app: web.Application) -> None:
    node = app[NODE]
    classroom = Classroom(node)
    node.store = classroom.store
    node.stream_keys = classroom.stream_keys
    app[CLASSROOM] = classroom
    node.add_service("classroom", classroom.start, classroom.stop)
    node.teacher_auth = teacher_auth
    setup_routes(app)


__all__ = ["CLASSROOM", "Classroom", "setup"]
