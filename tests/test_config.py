"""`airclass serve` options: one declaration each (airclass_web/config.py) makes the
parser, the environment reading and README's table; resolving a config changes nothing."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from airclass_web.cli import build_parser, config_from_args, read_args
from airclass_web.config import (
    DEV_JWT_SECRET,
    OPTIONS,
    Config,
    ConfigError,
    options_markdown,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def serve_config(argv: list[str], environ: dict[str, str]) -> Config:
    args = build_parser().parse_args(["serve", *argv])
    read_args(args, environ)
    return config_from_args(args)


def test_readme_table_is_the_declared_options():
    text = README.read_text()
    start = text.index("<!-- options: airclass serve --options-markdown -->\n")
    table = text[text.index("\n", start) + 1 : text.index("<!-- end of options -->")]
    assert table == options_markdown()


def test_help_lists_every_flag_and_variable():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    text = " ".join(serve.format_help().split())
    for opt in OPTIONS.values():
        if opt.flag:
            assert opt.flag in text
        assert opt.env in text.replace("- ", "-")


def test_defaults_are_todays():
    config = serve_config([], {})
    assert (config.host, config.http_port, config.rtmp_port, config.rtmps_port) == (
        "", 8000, 1935, 1936
    )  # fmt: skip
    assert (config.capacity, config.max_viewers_per_ip, config.max_pending_per_ip) == (
        0, None, None
    )  # fmt: skip
    assert config.data_dir == Path("data") and config.ladder == "540p:1200,360p:500"
    assert (config.turn_ttl, config.hls_part_seconds, config.ip_rate_limit) == (14400, 0.5, 5.0)
    assert config.workers >= 1 and config.role == "standalone" and not config.dev


def test_flag_then_variable_then_default():
    env = {
        "AIRCLASS_HTTP_PORT": "8100",
        "AIRCLASS_RTMP_PORT": "",  # empty: unset
        "AIRCLASS_ICE_HOST": "10.0.0.1, 10.0.0.2",
        "AIRCLASS_DEV": "yes",
        "AIRCLASS_UDP_PORTS": "40000-40009",
        "AIRCLASS_JWT_SECRET": "s" * 32,
    }
    config = serve_config(["--http-port", "9000", "--auto-record", "a", "--auto-record", "b"], env)
    assert (config.http_port, config.rtmp_port) == (9000, 1935)
    assert config.ice_hosts == ["10.0.0.1", "10.0.0.2"] and config.auto_record == ["a", "b"]
    assert config.dev and config.udp_ports == (40000, 40009) and config.jwt_secret == "s" * 32
    assert serve_config(["--ice-host", "10.0.0.3"], env).ice_hosts == ["10.0.0.3"]
    assert not serve_config([], {"AIRCLASS_DEV": "0"}).dev
    with pytest.raises(ConfigError, match="AIRCLASS_WORKERS"):
        serve_config([], {"AIRCLASS_WORKERS": "many"})


def test_resolving_changes_nothing_and_is_idempotent():
    config = serve_config(["--dev", "--role", "main", "--workers", "2"], {})
    before = asdict(config)
    resolved = config.resolved()
    assert asdict(config) == before
    assert resolved.resolved() == resolved
    assert (resolved.host, resolved.jwt_secret, resolved.cluster_secret) == (
        "127.0.0.1", DEV_JWT_SECRET, DEV_JWT_SECRET
    )  # fmt: skip
    assert (resolved.capacity, resolved.max_viewers_per_ip, resolved.max_pending_per_ip) == (
        500, 475, 100
    )  # fmt: skip
    with pytest.raises(ConfigError, match="AIRCLASS_JWT_SECRET"):
        serve_config([], {}).resolved()
