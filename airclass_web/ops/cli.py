"""Operator commands: `airclass admin`, `monitor`, `backup`, `restore`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from ..classroom.cli import read_password
from ..classroom.errors import ClassroomError
from ..classroom.teachers import TeacherService
from ..config import Config
from ..store import open_store


async def _with_store(args: argparse.Namespace, action):
    store = await open_store(Config(data_dir=Path(args.data_dir), mongo_url=args.mongo_url))
    try:
        return await action(store)
    finally:
        await store.close()


def admin_add(args: argparse.Namespace) -> int:
    """Mark an account admin; create it (password from stdin or asked) when it is new."""

    async def add(store) -> str:
        existing = await store.get_teacher(args.username)
        if existing is None:
            await TeacherService(store).add(args.username, read_password())
            existing = await store.get_teacher(args.username)
            made = "added"
        else:
            made = "is now an admin"
        await store.update("teachers", existing["id"], {"admin": True})
        return made

    try:
        made = asyncio.run(_with_store(args, add))
    except ClassroomError as exc:
        print(f"airclass: {exc.message}", file=sys.stderr)
        return 1
    print(f"admin {args.username} {made}")
    return 0


def admin_remove(args: argparse.Namespace) -> int:
    async def remove(store) -> bool:
        existing = await store.get_teacher(args.username)
        if existing is None:
            return False
        await store.update("teachers", existing["id"], {"admin": False})
        return True

    if not asyncio.run(_with_store(args, remove)):
        print(f"airclass: no account {args.username}", file=sys.stderr)
        return 1
    print(f"{args.username} is no longer an admin")
    return 0


def admin_list(args: argparse.Namespace) -> int:
    async def names(store) -> list[str]:
        return [t["username"] for t in await store.find("teachers", order_by="username")
                if t.get("admin")]  # fmt: skip

    for name in asyncio.run(_with_store(args, names)):
        print(name)
    return 0


def add_admin_command(commands, add_store_options: Callable) -> None:
    admin = commands.add_parser(
        "admin", help="manage operator (admin) accounts for /admin and /api/admin"
    )
    sub = admin.add_subparsers(dest="admin_command", required=True)
    add = sub.add_parser(
        "add",
        help="make an account an admin (creating it when new)",
        description="Make NAME an admin. A new account's password is read from stdin when "
        "it is not a terminal (first line), else asked twice.",
    )
    add.add_argument("username")
    add_store_options(add)
    add.set_defaults(handler=admin_add)
    remove = sub.add_parser("remove", help="take admin rights away (the account stays)")
    remove.add_argument("username")
    add_store_options(remove)
    remove.set_defaults(handler=admin_remove)
    lst = sub.add_parser("list", help="list admin accounts")
    add_store_options(lst)
    lst.set_defaults(handler=admin_list)


def add_ops_commands(commands, add_store_options: Callable) -> None:
    """Every operator command (called by airclass_web.cli.build_parser)."""
    add_admin_command(commands, add_store_options)
    from .backup import add_backup_commands
    from .monitor import add_monitor_command

    add_monitor_command(commands)
    add_backup_commands(commands, add_store_options)
