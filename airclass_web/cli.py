"""`airclass` command line: serve a node, manage teachers."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from .config import DEV_JWT_SECRET, VIEWERS_PER_CORE, Config, ConfigError, parse_port_range


def _env_int(name: str) -> int | None:
    """An integer AIRCLASS_ variable, or None when unset (the default is then computed)."""
    value = _env(name)
    return int(value) if value not in (None, "") else None


def _env(name: str, default=None):
    return os.environ.get("AIRCLASS_" + name, default)


def _env_list(name: str) -> list[str]:
    raw = _env(name, "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def _env_flag(name: str) -> bool:
    return str(_env(name, "")).lower() in ("1", "true", "yes", "on")


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that opens the store."""
    parser.add_argument(
        "--data-dir",
        default=_env("DATA_DIR", "data"),
        help="recordings, SQLite store, screenshots [AIRCLASS_DATA_DIR, default: data]",
    )
    parser.add_argument(
        "--mongo-url",
        default=_env("MONGO_URL", ""),
        help="MongoDB URL; SQLite in --data-dir when unset [AIRCLASS_MONGO_URL]",
    )


def add_recording_options(parser: argparse.ArgumentParser) -> None:
    """Recording, screenshots, retention (recorder/)."""
    group = parser.add_argument_group("recording")
    group.add_argument(
        "--auto-record",
        action="append",
        default=None,
        metavar="STREAM",
        help="record this stream whenever it goes live ('*' for every stream); "
        "repeatable [AIRCLASS_AUTO_RECORD, comma-separated]",
    )
    group.add_argument(
        "--record-segment-seconds",
        type=float,
        default=float(_env("RECORD_SEGMENT_SECONDS", 60)),
        help="length of recording segments [AIRCLASS_RECORD_SEGMENT_SECONDS, default: 60]",
    )
    group.add_argument(
        "--screenshot-interval",
        type=float,
        default=float(_env("SCREENSHOT_INTERVAL", 10)),
        help="seconds between recording screenshots, 0 for none "
        "[AIRCLASS_SCREENSHOT_INTERVAL, default: 10]",
    )
    group.add_argument(
        "--retention-days",
        type=float,
        default=float(_env("RETENTION_DAYS", 7)),
        help="delete recordings older than this, 0 keeps them "
        "[AIRCLASS_RETENTION_DAYS, default: 7]",
    )
    group.add_argument(
        "--min-free-disk-mb",
        type=int,
        default=int(_env("MIN_FREE_DISK_MB", 1024)),
        help="refuse to start, and stop, recordings below this free disk "
        "[AIRCLASS_MIN_FREE_DISK_MB, default: 1024]",
    )
    group.add_argument(
        "--record-offline-grace",
        type=float,
        default=float(_env("RECORD_OFFLINE_GRACE", 120)),
        help="seconds a recorded stream may stay offline (publisher reconnecting) "
        "before its recording ends [AIRCLASS_RECORD_OFFLINE_GRACE, default: 120]",
    )


def add_ai_options(parser: argparse.ArgumentParser) -> None:
    """AI analysis (airclass_web/ai/)."""
    group = parser.add_argument_group("AI analysis")
    group.add_argument(
        "--gemini-base-url",
        default=_env("GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
        help="Gemini REST API base URL [AIRCLASS_GEMINI_BASE_URL, "
        "default: https://generativelanguage.googleapis.com]",
    )
    group.add_argument(
        "--ai-calls-per-minute",
        type=float,
        default=float(_env("AI_CALLS_PER_MINUTE", 10)),
        help="provider calls per teacher per minute (burst: half of it, at least 5); more "
        "fall back to the "
        "local analysers [AIRCLASS_AI_CALLS_PER_MINUTE, default: 10]",
    )
    group.add_argument(
        "--ai-allowed-base-url",
        action="append",
        default=None,
        metavar="URL",
        help="base URL a teacher's OpenAI-compatible provider may use; repeatable; a URL "
        "whose host is an IP address may be private (a local Ollama), host names must "
        "resolve to public addresses [AIRCLASS_AI_ALLOWED_BASE_URL, comma-separated, "
        "default: https://api.openai.com]",
    )


def add_delivery_options(parser: argparse.ArgumentParser) -> None:
    """TURN relay and HLS fallback for viewers WebRTC cannot reach directly."""
    group = parser.add_argument_group("TURN and HLS fallback")
    group.add_argument(
        "--turn-url",
        action="append",
        default=None,
        metavar="URL",
        help="TURN server handed to viewers with short-lived credentials (needs "
        "AIRCLASS_TURN_SECRET = coturn's static-auth-secret), e.g. "
        "turn:host:3478?transport=tcp; repeatable [AIRCLASS_TURN_URLS, comma-separated]",
    )
    group.add_argument(
        "--turn-ttl",
        type=int,
        default=int(_env("TURN_TTL", 4 * 3600)),
        help="seconds TURN credentials stay valid [AIRCLASS_TURN_TTL, default: 14400]",
    )
    group.add_argument(
        "--hls-part-seconds",
        type=float,
        default=float(_env("HLS_PART_SECONDS", 0.5)),
        help="Low-Latency HLS part duration [AIRCLASS_HLS_PART_SECONDS, default: 0.5]",
    )
    group.add_argument(
        "--ladder",
        default=_env("LADDER", "540p:1200,360p:500"),
        metavar="RUNGS",
        help="renditions encoded once per stream for slow links, HEIGHTp:KBITS,... or none "
        "[AIRCLASS_LADDER, default: 540p:1200,360p:500]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airclass", description="AIRClass live classroom node")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a node",
        description="Run a node. Every option can also be set by the AIRCLASS_* variable "
        "shown in brackets.",
    )
    serve.add_argument(
        "--host",
        default=_env("HOST"),
        help="address to bind HTTP and RTMP [AIRCLASS_HOST, default: 0.0.0.0; "
        "127.0.0.1 under --dev]",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        default=None,
        metavar="IP/CIDR",
        help="reverse proxy whose X-Forwarded-For gives the client address (rate limits, "
        "password attempts); repeatable [AIRCLASS_TRUSTED_PROXY, comma-separated]",
    )
    serve.add_argument(
        "--ip-rate-limit",
        type=float,
        default=float(_env("IP_RATE_LIMIT", 5)),
        help="R: /api/token and /api/sessions/join refused requests R/s per client address "
        "(burst 10 R), and all of them 10 R/s (burst 100 R: a school behind one address), "
        "0 = no limit [AIRCLASS_IP_RATE_LIMIT, default: 5]",
    )
    serve.add_argument(
        "--http-port",
        type=int,
        default=int(_env("HTTP_PORT", 8000)),
        help="HTTP port (pages, API, WHEP) [AIRCLASS_HTTP_PORT, default: 8000]",
    )
    serve.add_argument(
        "--rtmp-port",
        type=int,
        default=int(_env("RTMP_PORT", 1935)),
        help="RTMP ingest port; with TLS, 0 turns plain RTMP off [AIRCLASS_RTMP_PORT, "
        "default: 1935]",
    )
    serve.add_argument(
        "--tls-cert",
        default=_env("TLS_CERT", ""),
        metavar="PEM",
        help="certificate chain: HTTPS and WSS on --http-port, RTMPS on --rtmps-port, HSTS; "
        "reloaded on SIGHUP [AIRCLASS_TLS_CERT]",
    )
    serve.add_argument(
        "--tls-key",
        default=_env("TLS_KEY", ""),
        metavar="PEM",
        help="private key of --tls-cert [AIRCLASS_TLS_KEY]",
    )
    serve.add_argument(
        "--http-redirect-port",
        type=int,
        default=int(_env("HTTP_REDIRECT_PORT", 0)),
        metavar="PORT",
        help="with --tls-cert: plain HTTP on this port redirects to HTTPS, e.g. 80 "
        "[AIRCLASS_HTTP_REDIRECT_PORT, default: off]",
    )
    serve.add_argument(
        "--rtmps-port",
        type=int,
        default=int(_env("RTMPS_PORT", 1936)),
        help="RTMPS ingest port, with --tls-cert [AIRCLASS_RTMPS_PORT, default: 1936]",
    )
    serve.add_argument(
        "--ice-host",
        action="append",
        default=None,
        metavar="ADDR",
        help="only host address gathered and advertised as ICE candidate; "
        "repeatable [AIRCLASS_ICE_HOST, comma-separated]",
    )
    serve.add_argument(
        "--ice-public-ip",
        action="append",
        default=None,
        metavar="ADDR",
        help="address clients reach this node at through a 1:1 NAT or Docker port mapping "
        "(same UDP ports): added to the ICE candidates; repeatable [AIRCLASS_ICE_PUBLIC_IP, "
        "comma-separated]",
    )
    serve.add_argument(
        "--udp-ports",
        default=_env("UDP_PORTS", ""),
        metavar="LO-HI",
        help="keep WebRTC media UDP ports in this range [AIRCLASS_UDP_PORTS]",
    )
    serve.add_argument(
        "--ice-server",
        action="append",
        default=None,
        metavar="URL",
        help="STUN/TURN server for clients and server, e.g. stun:host:3478; "
        "repeatable [AIRCLASS_ICE_SERVERS, comma-separated]",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        default=_env_flag("DEV"),
        help="development mode, INSECURE: dev JWT secret, teacher tokens without "
        "credentials, every stream public, binds 127.0.0.1 unless --host [AIRCLASS_DEV=1]",
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        default=_env_flag("DEMO"),
        help="publish a test pattern with a tone and a clock on stream 'demo' [AIRCLASS_DEMO=1]",
    )
    serve.add_argument(
        "--role",
        choices=("standalone", "main", "sub"),
        default=_env("ROLE", "standalone"),
        help="node role in a cluster [AIRCLASS_ROLE, default: standalone]",
    )
    serve.add_argument(
        "--main-url",
        default=_env("MAIN_URL", ""),
        help="main node URL, for a sub node [AIRCLASS_MAIN_URL]",
    )
    serve.add_argument(
        "--public-url",
        default=_env("PUBLIC_URL", ""),
        help="URL clients use to reach this node [AIRCLASS_PUBLIC_URL]",
    )
    serve.add_argument(
        "--redis-url",
        default=_env("REDIS_URL", ""),
        help="Redis for the node registry and shared events; in-process "
        "when unset; redis+sentinel://[:PW@]HOST:PORT,HOST:PORT/MASTER for Redis "
        "watched by Sentinels [AIRCLASS_REDIS_URL]",
    )
    serve.add_argument(
        "--capacity",
        type=int,
        default=int(_env("CAPACITY", 0)),
        help="viewers this node serves at most [AIRCLASS_CAPACITY, default: "
        f"{VIEWERS_PER_CORE} x workers]",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(_env("WORKERS", os.cpu_count() or 1)),
        help="media worker processes serving WebRTC viewers; 1 serves them in the node "
        "process [AIRCLASS_WORKERS, default: the CPU count]",
    )
    serve.add_argument(
        "--max-viewers-per-user",
        type=int,
        default=int(_env("MAX_VIEWERS_PER_USER", 5)),
        help="concurrent viewer sessions per user, 0 = no limit; more get 429 "
        "[AIRCLASS_MAX_VIEWERS_PER_USER, default: 5]",
    )
    serve.add_argument(
        "--max-viewers-per-ip",
        type=int,
        default=_env_int("MAX_VIEWERS_PER_IP"),
        help="concurrent viewer sessions per client address, 0 = no limit; more get 429 "
        "[AIRCLASS_MAX_VIEWERS_PER_IP, default: capacity - capacity/20]",
    )
    serve.add_argument(
        "--max-pending-per-ip",
        type=int,
        default=_env_int("MAX_PENDING_PER_IP"),
        help="viewer offers per client address not connected yet; more wait up to 30 s, "
        "then 429; 0 = no limit [AIRCLASS_MAX_PENDING_PER_IP, default: max(20, capacity/5)]",
    )
    serve.add_argument(
        "--rtmp-max-connections",
        type=int,
        default=int(_env("RTMP_MAX_CONNECTIONS", 200)),
        help="RTMP connections at once [AIRCLASS_RTMP_MAX_CONNECTIONS, default: 200]",
    )
    serve.add_argument(
        "--rtmp-max-per-ip",
        type=int,
        default=int(_env("RTMP_MAX_PER_IP", 10)),
        help="RTMP connections at once from one address [AIRCLASS_RTMP_MAX_PER_IP, default: 10]",
    )
    serve.add_argument(
        "--log-level",
        default=_env("LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING [AIRCLASS_LOG_LEVEL, default: INFO]",
    )
    add_store_options(serve)
    add_recording_options(serve)
    add_ai_options(serve)
    add_delivery_options(serve)
    serve.epilog = (
        "Secrets come only from the environment: AIRCLASS_JWT_SECRET (required unless "
        "--dev, 32+ bytes), AIRCLASS_CLUSTER_SECRET (main/sub, 32+ bytes), "
        "AIRCLASS_DATA_KEY (Fernet keys for AI keys at rest), AIRCLASS_METRICS_TOKEN "
        "(Bearer token for /metrics), AIRCLASS_TEACHER_PASSWORD, AIRCLASS_TURN_SECRET "
        "(coturn's static-auth-secret)."
    )
    from .classroom.cli import add_teacher_command

    add_teacher_command(commands, add_store_options)
    from .ops.cli import add_ops_commands

    add_ops_commands(commands, add_store_options)
    from .tls import add_cert_command

    add_cert_command(commands)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    host = args.host or ("127.0.0.1" if args.dev else "0.0.0.0")
    return Config(
        host=host,
        trusted_proxies=args.trusted_proxy or _env_list("TRUSTED_PROXY"),
        ip_rate_limit=args.ip_rate_limit,
        metrics_token=_env("METRICS_TOKEN", ""),
        data_keys=_env("DATA_KEY", ""),
        http_port=args.http_port,
        rtmp_port=args.rtmp_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        rtmps_port=args.rtmps_port,
        http_redirect_port=args.http_redirect_port,
        ice_hosts=args.ice_host if args.ice_host else _env_list("ICE_HOST"),
        ice_public_ips=args.ice_public_ip or _env_list("ICE_PUBLIC_IP"),
        udp_ports=parse_port_range(args.udp_ports) if args.udp_ports else None,
        ice_servers=args.ice_server if args.ice_server else _env_list("ICE_SERVERS"),
        data_dir=Path(args.data_dir),
        dev=args.dev,
        demo=args.demo,
        jwt_secret=_env("JWT_SECRET", ""),
        teacher_password=_env("TEACHER_PASSWORD", ""),
        role=args.role,
        main_url=args.main_url,
        public_url=args.public_url,
        cluster_secret=_env("CLUSTER_SECRET", ""),
        redis_url=args.redis_url,
        mongo_url=args.mongo_url,
        capacity=args.capacity,
        workers=args.workers,
        max_viewers_per_user=args.max_viewers_per_user,
        max_viewers_per_ip=args.max_viewers_per_ip,
        max_pending_per_ip=args.max_pending_per_ip,
        rtmp_max_connections=args.rtmp_max_connections,
        rtmp_max_per_ip=args.rtmp_max_per_ip,
        log_level=args.log_level,
        record_segment_seconds=args.record_segment_seconds,
        screenshot_interval=args.screenshot_interval,
        retention_days=args.retention_days,
        min_free_disk_mb=args.min_free_disk_mb,
        auto_record=args.auto_record if args.auto_record else _env_list("AUTO_RECORD"),
        record_offline_grace=args.record_offline_grace,
        gemini_base_url=args.gemini_base_url,
        ai_calls_per_minute=args.ai_calls_per_minute,
        ai_allowed_base_urls=args.ai_allowed_base_url or _env_list("AI_ALLOWED_BASE_URL"),
        turn_urls=args.turn_url if args.turn_url else _env_list("TURN_URLS"),
        turn_secret=_env("TURN_SECRET", ""),
        turn_ttl=args.turn_ttl,
        hls_part_seconds=args.hls_part_seconds,
        ladder=args.ladder,
    )


async def _serve(config: Config) -> None:
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
    await node.start(app)
    try:
        await stop.wait()
    finally:
        logging.getLogger("airclass").info("shutting down")
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .datadir import private_umask, secure_data_dir
    from .logsafe import setup_logging

    setup_logging(
        getattr(args, "log_level", "INFO"), "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command != "cert":
        private_umask()  # the data directory's files: 0600, directories 0700
    if args.command == "serve":
        try:
            config = config_from_args(args)
            config.validate()
        except ConfigError as exc:
            print(f"airclass: {exc}", file=sys.stderr)
            return 2
        secure_data_dir(config.data_dir)
        asyncio.run(_serve(config))
        return 0
    handler = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
