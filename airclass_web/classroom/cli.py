"""`airclass teacher add|list`: manage teacher accounts in the store."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import Config
from ..store import open_store
from .errors import ClassroomError
from .teachers import TeacherService


def read_password(prompt: str = "Password: ") -> str:
    """From stdin when it is not a TTY (first line), else getpass twice."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(prompt)
    second = getpass.getpass("Repeat password: ")
    if first != second:
        raise ClassroomError(400, "passwords do not match")
    return first


async def _with_teachers(args: argparse.Namespace, action):
    config = Config(data_dir=Path(args.data_dir), mongo_url=args.mongo_url)
    store = await open_store(config)
    try:
        return await action(TeacherService(store))
    finally:
        await store.close()


def teacher_add(args: argparse.Namespace) -> int:
    try:
        password = read_password()

        async def add(teachers: TeacherService):
            await teachers.add(args.username, password, replace=args.replace)

        asyncio.run(_with_teachers(args, add))
    except ClassroomError as exc:
        print(f"airclass: {exc.message}", file=sys.stderr)
        return 1
    print(f"teacher {args.username} {'updated' if args.replace else 'added'}")
    return 0


def teacher_list(args: argparse.Namespace) -> int:
    async def names(teachers: TeacherService):
        return [t["username"] for t in await teachers.list()]

    for name in asyncio.run(_with_teachers(args, names)):
        print(name)
    return 0


def add_teacher_command(commands, add_store_options: Callable) -> None:
    teacher = commands.add_parser("teacher", help="manage teacher accounts")
    sub = teacher.add_subparsers(dest="teacher_command", required=True)
    add = sub.add_parser(
        "add",
        help="add a teacher account",
        description="Add a teacher. The password is read from stdin when it is not a "
        "terminal (first line), else asked twice.",
    )
    add.add_argument("username")
    add.add_argument(
        "--replace",
        "--reset",
        dest="replace",
        action="store_true",
        help="replace an existing password; revokes every token issued before",
    )
    add_store_options(add)
    add.set_defaults(handler=teacher_add)
    lst = sub.add_parser("list", help="list teacher accounts")
    add_store_options(lst)
    lst.set_defaults(handler=teacher_list)
