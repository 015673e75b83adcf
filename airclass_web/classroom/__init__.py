"""Classroom (issue 4): teachers, class sessions, realtime chat, quizzes, engagement.

`setup(app)` creates the node's store and classroom and registers them as services; it
also replaces the node's teacher check (`node.teacher_auth`). The routes are in .routes.
"""

from __future__ import annotations

from aiohttp import web

from ..node import NODE
from .service import CLASSROOM, Classroom
from .teacher_auth import teacher_auth


def setup(app: web.Application) -> None:
    node = app[NODE]
    classroom = Classroom(node)
    node.store = classroom.store
    node.stream_keys = classroom.stream_keys
    app[CLASSROOM] = classroom
    node.add_service("classroom", classroom.start, classroom.stop)
    node.teacher_auth = teacher_auth


__all__ = ["CLASSROOM", "Classroom", "setup"]
