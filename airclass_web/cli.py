"""`airclass` command line: serve a node, manage teachers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping

from .config import (
    DEV_JWT_SECRET,
    OPTIONS,
    Config,
    ConfigError,
    option_help,
    options_markdown,
    read_options,
    secrets_help,
)

#: Where the namespace keeps the names of the command's Config options.
_OPTIONS_OF_COMMAND = "config_options"


class _Repeated(argparse.Action):
    """A repeatable option whose values are collected as given (the list's default is
    None: "not on the command line")."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), values])


class _PrintOptions(argparse.Action):
    """--options-markdown: print README's options table and exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(options_markdown(), end="")
        parser.exit()


def add_options(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add Config's options (all, or those named) to `parser`, each in its group.

    Every flag's default is None ("not given"): `read_args` then gives the option the
    environment variable's value or Config's default. Call it once per parser."""
    names = tuple(OPTIONS if names is None else names)
    parser.set_defaults(**{_OPTIONS_OF_COMMAND: names})
    groups: dict[str | None, argparse._ActionsContainer] = {None: parser}
    for name in names:
        opt = OPTIONS[name]
        if opt.flag is None:  # a secret: from the environment only
            parser.set_defaults(**{name: None})
            continue
        if opt.group not in groups:
            groups[opt.group] = parser.add_argument_group(opt.group)
        how: dict = {"dest": name, "default": None, "help": option_help(name).replace("%", "%%")}
        if opt.switch:
            how["action"] = "store_true"
        else:
            how["metavar"] = opt.metavar
            how["choices"] = opt.choices
            if opt.many:
                how["action"] = _Repeated
        groups[opt.group].add_argument(opt.flag, **how)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that opens the store."""
    add_options(parser, ("data_dir", "mongo_url"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airclass", description="AIRClass live classroom node")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a node",
        description="Run a node. Every option can also be set by the AIRCLASS_* variable "
        "shown in brackets.",
        epilog=f"Secrets come only from the environment: {secrets_help()}.",
    )
    serve.add_argument(
        "--options-markdown",
        action=_PrintOptions,
        help="print the options as a Markdown table (README's) and exit",
    )
    add_options(serve)
    from .classroom.cli import add_teacher_command

    add_teacher_command(commands, add_store_options)
    from .ops.cli import add_ops_commands

    add_ops_commands(commands, add_store_options)
    from .tls import add_cert_command

    add_cert_command(commands)
    return parser


def read_args(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Give each option of the command its value: the flag's, else the environment
    variable's, else the default (ConfigError for a value that does not parse)."""
    given = {name: getattr(args, name) for name in getattr(args, _OPTIONS_OF_COMMAND, ())}
    for name, value in read_options(given, environ).items():
        setattr(args, name, value)


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of `airclass serve` (after `read_args`)."""
    return Config(**{name: getattr(args, name) for name in OPTIONS})


async def _serve(config: Config) -> int:
    """Run a node until SIGINT/SIGTERM: 0; 1 when it cannot start (a busy port, say),
    after stopping what had started."""
    from .app import create_node

    if config.dev:
        logging.getLogger("airclass").warning(
            "--dev: INSECURE development mode: %s, teacher tokens without credentials, "
            "every stream public, /metrics open. Never use it on a network.",
            "the public dev JWT secret"
            if config.jwt_secret == DEV_JWT_SECRET
            else "AIRCLASS_JWT_SECRET",
        )

    node, app = create_node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if node.tls is not None:
        loop.add_signal_handler(signal.SIGHUP, node.tls.reload)
    try:
        await node.start(app)
    except OSError as exc:
        print(f"airclass: could not start: {exc}", file=sys.stderr)
        return 1
    try:
        await stop.wait()
    finally:
        logging.getLogger("airclass").info("shutting down")
        await node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        read_args(args, os.environ)
    except ConfigError as exc:
        print(f"airclass: {exc}", file=sys.stderr)
        return 2
    from .datadir import private_umask, secure_data_dir
    from .logsafe import setup_logging

    setup_logging(
        getattr(args, "log_level", "INFO"), "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command != "cert":
        private_umask()  # the data directory's files: 0600, directories 0700
    if args.command == "serve":
        from .app import node_config  # the node's modules load only to serve

        try:
            config = node_config(config_from_args(args))
        except ConfigError as exc:
            print(f"airclass: {exc}", file=sys.stderr)
            return 2
        secure_data_dir(config.data_dir)
        return asyncio.run(_serve(config))
    handler = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
