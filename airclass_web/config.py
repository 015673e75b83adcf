"""Node configuration: one dataclass whose fields declare their own options.

Each setting of `airclass serve` is declared once, on its `Config` field: default, flag,
AIRCLASS_* environment variable, parser and help (`option(...)`). The command line
(airclass_web/cli.py), the environment reading (`read_options`) and README's options
table (`options_markdown`, `airclass serve --options-markdown`) are all made from it.
A value comes from the flag, else from the variable (empty counts as unset), else from
the default. Secrets have no flag: they come only from the environment.

`Config.validate` checks a config and changes nothing; `Config.resolved` returns the
config a node runs with (the values left to the node, such as --capacity 0, filled in).
Values that a feature parses (ladder, TLS files, AI URLs...) are checked by that
feature's own parser where the node is put together (`airclass_web.app.node_config`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: Secret used only under --dev when AIRCLASS_JWT_SECRET is not set.
DEV_JWT_SECRET = "airclass-dev-secret-do-not-use-in-production"

#: WebRTC viewers one media worker (one core) serves. scripts/bench_media.py measured
#: 0.0029-0.0031 core per 720p30 2 Mbps viewer (Opus included) at 100-300 viewers, i.e.
#: ~330 on a full core; this keeps a quarter of the core for bursts (keyframes, new
#: viewers catching up, RTCP). The default --capacity is this times the worker count.
VIEWERS_PER_CORE = 250
#: Shortest AIRCLASS_JWT_SECRET / AIRCLASS_CLUSTER_SECRET accepted (bytes).
MIN_SECRET_BYTES = 32
#: Node roles in a cluster (--role).
ROLES = ("standalone", "main", "sub")


class ConfigError(Exception):
    """The configuration cannot start a node."""


def parse_port_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        low, high = int(lo), int(hi or lo)
    except ValueError as exc:
        raise ConfigError(f"bad port range {text!r}: expected LO-HI") from exc
    if not (1 <= low <= high <= 65535):
        raise ConfigError(f"bad port range {text!r}")
    return low, high


@dataclass(frozen=True)
class Option:
    """How one Config field is set from outside the program."""

    #: The environment variable, AIRCLASS_*.
    env: str
    #: One line for `--help` and README's table (without the default and the variable).
    help: str
    #: The command-line flag; None: from the environment only (secrets).
    flag: str | None = None
    #: Text (a flag's value, the variable's value, a list item) -> the field's value.
    parse: Callable[[str], Any] = str
    #: A list: the flag is repeatable, the variable comma-separated.
    many: bool = False
    #: A flag without a value; the variable is on when 1, true, yes or on.
    switch: bool = False
    metavar: str | None = None
    #: The default as help and docs show it, when not the value itself.
    shown: str | None = None
    #: The section of `airclass serve --help` (None: the first).
    group: str | None = None
    choices: tuple[str, ...] | None = None


def option(default: Any = None, *, factory: Callable[[], Any] | None = None, **how: Any) -> Any:
    """A Config field that is an option: `default` (or `factory()`) and `Option(**how)`."""
    meta = {"option": Option(**how)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


RECORDING = "recording"
AI = "AI analysis"
FALLBACK = "TURN and HLS fallback"


@dataclass(frozen=True)
class Config:
    # Fields in the order `airclass serve --help` and README list them.
    host: str = option(
        "",
        flag="--host",
        env="AIRCLASS_HOST",
        metavar="ADDR",
        shown="0.0.0.0; 127.0.0.1 under --dev",
        help="address to bind HTTP and RTMP",
    )
    #: Proxies (IPs/CIDRs) whose X-Forwarded-For is believed for the client address.
    trusted_proxies: list[str] = option(
        factory=list,
        flag="--trusted-proxy",
        env="AIRCLASS_TRUSTED_PROXY",
        many=True,
        metavar="IP/CIDR",
        help="reverse proxy whose X-Forwarded-For gives the client address (rate limits, "
        "password attempts); from anyone else the header is ignored",
    )
    #: /api/token and /api/sessions/join requests per second per client address (burst
    #: ten times that); 0 = unlimited.
    ip_rate_limit: float = option(
        5.0,
        flag="--ip-rate-limit",
        env="AIRCLASS_IP_RATE_LIMIT",
        parse=float,
        metavar="R",
        help="/api/token and /api/sessions/join refused requests (4xx) R/s per client "
        "address (burst 10 R), and all of them 10 R/s (burst 100 R: a school behind one "
        "address); 429 with Retry-After; 0 = no limit",
    )
    http_port: int = option(
        8000,
        flag="--http-port",
        env="AIRCLASS_HTTP_PORT",
        parse=int,
        metavar="PORT",
        help="HTTP port (pages, API, WHEP)",
    )
    rtmp_port: int = option(
        1935,
        flag="--rtmp-port",
        env="AIRCLASS_RTMP_PORT",
        parse=int,
        metavar="PORT",
        help="RTMP ingest port; with TLS, 0 turns plain RTMP off",
    )
    #: TLS (tls.py): PEM certificate chain and key; with them HTTPS/WSS on http_port
    #: and RTMPS on rtmps_port (the plain RTMP port stays unless rtmp_port is 0).
    tls_cert: str = option(
        "",
        flag="--tls-cert",
        env="AIRCLASS_TLS_CERT",
        metavar="PEM",
        help="certificate chain: HTTPS and WSS on --http-port, RTMPS on --rtmps-port, HSTS; "
        "reloaded on SIGHUP",
    )
    tls_key: str = option(
        "",
        flag="--tls-key",
        env="AIRCLASS_TLS_KEY",
        metavar="PEM",
        help="private key of --tls-cert",
    )
    #: With TLS: a plain-HTTP listener on this port that redirects to HTTPS (0: none).
    http_redirect_port: int = option(
        0,
        flag="--http-redirect-port",
        env="AIRCLASS_HTTP_REDIRECT_PORT",
        parse=int,
        metavar="PORT",
        shown="off",
        help="with --tls-cert: plain HTTP on this port redirects to HTTPS, e.g. 80",
    )
    rtmps_port: int = option(
        1936,
        flag="--rtmps-port",
        env="AIRCLASS_RTMPS_PORT",
        parse=int,
        metavar="PORT",
        help="RTMPS ingest port, with --tls-cert",
    )
    #: Only these host addresses are gathered and advertised as ICE candidates.
    ice_hosts: list[str] = option(
        factory=list,
        flag="--ice-host",
        env="AIRCLASS_ICE_HOST",
        many=True,
        metavar="ADDR",
        shown="all interfaces",
        help="only host address gathered and advertised as ICE candidate (behind NAT or "
        "Docker, tests on 127.0.0.1)",
    )
    #: Addresses clients reach this node at through a 1:1 NAT / port mapping (same ports).
    ice_public_ips: list[str] = option(
        factory=list,
        flag="--ice-public-ip",
        env="AIRCLASS_ICE_PUBLIC_IP",
        many=True,
        metavar="ADDR",
        help="address clients reach this node at through a 1:1 NAT (a cloud VM's public "
        "IP) or a Docker port mapping, same UDP ports: added to the ICE candidates",
    )
    #: Media UDP ports stay in this inclusive range.
    udp_ports: tuple[int, int] | None = option(
        None,
        flag="--udp-ports",
        env="AIRCLASS_UDP_PORTS",
        parse=parse_port_range,
        metavar="LO-HI",
        shown="any",
        help="keep WebRTC media UDP ports in this range (one port per viewer, at least "
        "one per worker)",
    )
    #: STUN/TURN URLs handed to clients (Link rel="ice-server") and used by the server.
    ice_servers: list[str] = option(
        factory=list,
        flag="--ice-server",
        env="AIRCLASS_ICE_SERVERS",
        many=True,
        metavar="URL",
        help="STUN/TURN server for clients (Link header) and the server, e.g. stun:host:3478",
    )
    dev: bool = option(
        False,
        flag="--dev",
        env="AIRCLASS_DEV",
        switch=True,
        help="development mode, INSECURE, says so in the log: dev JWT secret, teacher tokens "
        "without credentials, every stream public, /metrics open, binds 127.0.0.1 unless "
        "--host",
    )
    demo: bool = option(
        False,
        flag="--demo",
        env="AIRCLASS_DEMO",
        switch=True,
        help="publish a test pattern with a tone and a clock on stream 'demo'",
    )
    role: str = option(
        "standalone",
        flag="--role",
        env="AIRCLASS_ROLE",
        choices=ROLES,
        help="node role in a cluster",
    )
    main_url: str = option(
        "",
        flag="--main-url",
        env="AIRCLASS_MAIN_URL",
        metavar="URL",
        help="main node URL, for a sub node",
    )
    public_url: str = option(
        "",
        flag="--public-url",
        env="AIRCLASS_PUBLIC_URL",
        metavar="URL",
        help="URL clients use to reach this node",
    )
    redis_url: str = option(
        "",
        flag="--redis-url",
        env="AIRCLASS_REDIS_URL",
        metavar="URL",
        help="Redis for the node registry and shared events; in-process when unset; "
        "redis+sentinel://[:PW@]HOST:PORT,HOST:PORT/MASTER for Redis watched by Sentinels",
    )
    #: Viewers this node serves at most; 0: VIEWERS_PER_CORE x workers (see resolved).
    capacity: int = option(
        0,
        flag="--capacity",
        env="AIRCLASS_CAPACITY",
        parse=int,
        metavar="N",
        shown=f"{VIEWERS_PER_CORE} x workers",
        help="viewers this node serves at most (503 beyond)",
    )
    #: Media worker processes (1: viewers are served in the node process itself).
    workers: int = option(
        factory=lambda: os.cpu_count() or 1,
        flag="--workers",
        env="AIRCLASS_WORKERS",
        parse=int,
        metavar="N",
        shown="the CPU count",
        help="media worker processes serving WebRTC viewers; 1 serves them in the node process",
    )
    #: Concurrent viewer sessions one user / one client address may have (0: no limit).
    #: Per address, None: all seats but a twentieth (a school behind one NAT may fill
    #: the node, never quite all of it; see resolved).
    max_viewers_per_user: int = option(
        5,
        flag="--max-viewers-per-user",
        env="AIRCLASS_MAX_VIEWERS_PER_USER",
        parse=int,
        metavar="N",
        help="concurrent viewer sessions per user, 0 = no limit; more get 429",
    )
    max_viewers_per_ip: int | None = option(
        None,
        flag="--max-viewers-per-ip",
        env="AIRCLASS_MAX_VIEWERS_PER_IP",
        parse=int,
        metavar="N",
        shown="capacity - capacity/20",
        help="concurrent viewer sessions per client address, 0 = no limit; more get 429",
    )
    #: Viewer offers of one address not connected yet (ICE + DTLS); more wait, then 429.
    #: None: max(20, capacity / 5) (see resolved), so offers that never connect hold
    #: few seats (each for CONNECT_TIMEOUT at most).
    max_pending_per_ip: int | None = option(
        None,
        flag="--max-pending-per-ip",
        env="AIRCLASS_MAX_PENDING_PER_IP",
        parse=int,
        metavar="N",
        shown="max(20, capacity/5)",
        help="viewer offers (WHEP) per client address not connected yet (ICE + DTLS); more "
        "wait in order up to 30 s, then 429; 0 = no limit",
    )
    #: RTMP connections at once, in total and from one client address.
    rtmp_max_connections: int = option(
        200,
        flag="--rtmp-max-connections",
        env="AIRCLASS_RTMP_MAX_CONNECTIONS",
        parse=int,
        metavar="N",
        help="RTMP connections at once",
    )
    rtmp_max_per_ip: int = option(
        10,
        flag="--rtmp-max-per-ip",
        env="AIRCLASS_RTMP_MAX_PER_IP",
        parse=int,
        metavar="N",
        help="RTMP connections at once from one address",
    )
    log_level: str = option(
        "INFO",
        flag="--log-level",
        env="AIRCLASS_LOG_LEVEL",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING",
    )
    data_dir: Path = option(
        Path("data"),
        flag="--data-dir",
        env="AIRCLASS_DATA_DIR",
        parse=Path,
        metavar="DIR",
        help="recordings, SQLite store, screenshots",
    )
    mongo_url: str = option(
        "",
        flag="--mongo-url",
        env="AIRCLASS_MONGO_URL",
        metavar="URL",
        help="MongoDB URL; SQLite in --data-dir when unset",
    )
    #: Recording (recorder/): auto-recorded streams ("*" = all), segment length,
    #: screenshot interval (0 = none), retention in days (0 = keep), free disk below which
    #: recording refuses/stops, seconds a stream may stay offline before its recording ends.
    auto_record: list[str] = option(
        factory=list,
        flag="--auto-record",
        env="AIRCLASS_AUTO_RECORD",
        many=True,
        metavar="STREAM",
        group=RECORDING,
        help="record this stream whenever it goes live ('*' for every stream)",
    )
    record_segment_seconds: float = option(
        60.0,
        flag="--record-segment-seconds",
        env="AIRCLASS_RECORD_SEGMENT_SECONDS",
        parse=float,
        metavar="S",
        group=RECORDING,
        help="length of recording segments",
    )
    screenshot_interval: float = option(
        10.0,
        flag="--screenshot-interval",
        env="AIRCLASS_SCREENSHOT_INTERVAL",
        parse=float,
        metavar="S",
        group=RECORDING,
        help="seconds between recording screenshots, 0 for none",
    )
    retention_days: float = option(
        7.0,
        flag="--retention-days",
        env="AIRCLASS_RETENTION_DAYS",
        parse=float,
        metavar="DAYS",
        group=RECORDING,
        help="delete recordings older than this, 0 keeps them",
    )
    min_free_disk_mb: int = option(
        1024,
        flag="--min-free-disk-mb",
        env="AIRCLASS_MIN_FREE_DISK_MB",
        parse=int,
        metavar="MB",
        group=RECORDING,
        help="refuse to start, and stop, recordings below this free disk",
    )
    record_offline_grace: float = option(
        120.0,
        flag="--record-offline-grace",
        env="AIRCLASS_RECORD_OFFLINE_GRACE",
        parse=float,
        metavar="S",
        group=RECORDING,
        help="seconds a recorded stream may stay offline (publisher reconnecting) before "
        "its recording ends",
    )
    #: AI analysis: Gemini REST base URL (tests point it at a local server), provider
    #: calls per teacher per minute, base URLs provider calls may use (empty: the
    #: providers' public HTTPS URLs; see ai/egress.py).
    gemini_base_url: str = option(
        "https://generativelanguage.googleapis.com",
        flag="--gemini-base-url",
        env="AIRCLASS_GEMINI_BASE_URL",
        metavar="URL",
        group=AI,
        help="Gemini REST API base URL",
    )
    ai_calls_per_minute: float = option(
        10.0,
        flag="--ai-calls-per-minute",
        env="AIRCLASS_AI_CALLS_PER_MINUTE",
        parse=float,
        metavar="N",
        group=AI,
        help="provider calls per teacher per minute (burst: half of it, at least 5); more "
        "fall back to the local analysers",
    )
    ai_allowed_base_urls: list[str] = option(
        factory=list,
        flag="--ai-allowed-base-url",
        env="AIRCLASS_AI_ALLOWED_BASE_URL",
        many=True,
        metavar="URL",
        shown="https://api.openai.com",
        group=AI,
        help="base URL a teacher's OpenAI-compatible provider may use; a URL whose host is "
        "an IP address may be private (a local Ollama), host names must resolve to public "
        "addresses",
    )
    #: TURN URLs (turn:/turns:) handed to viewers with short-lived credentials made from
    #: turn_secret (AIRCLASS_TURN_SECRET = coturn's static-auth-secret), valid turn_ttl s.
    turn_urls: list[str] = option(
        factory=list,
        flag="--turn-url",
        env="AIRCLASS_TURN_URLS",
        many=True,
        metavar="URL",
        group=FALLBACK,
        help="TURN server handed to viewers with short-lived credentials (needs "
        "AIRCLASS_TURN_SECRET = coturn's static-auth-secret), e.g. "
        "turn:host:3478?transport=tcp",
    )
    turn_ttl: int = option(
        4 * 3600,
        flag="--turn-ttl",
        env="AIRCLASS_TURN_TTL",
        parse=int,
        metavar="S",
        group=FALLBACK,
        help="seconds TURN credentials stay valid",
    )
    #: HLS fallback: target duration of a Low-Latency HLS part (seconds).
    hls_part_seconds: float = option(
        0.5,
        flag="--hls-part-seconds",
        env="AIRCLASS_HLS_PART_SECONDS",
        parse=float,
        metavar="S",
        group=FALLBACK,
        help="Low-Latency HLS part duration",
    )
    #: Rendition ladder (airclass_media.ladder): "540p:1200,360p:500" (kbit/s) or "none".
    ladder: str = option(
        "540p:1200,360p:500",
        flag="--ladder",
        env="AIRCLASS_LADDER",
        metavar="RUNGS",
        group=FALLBACK,
        help="renditions (HEIGHTp:kbit/s) encoded once per stream, below the source's "
        "height, while watched; none: no lower rungs (a B-frame source still gets its "
        "B-frame-free copy)",
    )
    # Secrets: from the environment only.
    jwt_secret: str = option("", env="AIRCLASS_JWT_SECRET", help="required unless --dev, 32+ bytes")
    cluster_secret: str = option("", env="AIRCLASS_CLUSTER_SECRET", help="main/sub, 32+ bytes")
    #: Fernet key(s) for data at rest (AI keys), comma-separated; the first encrypts.
    data_keys: str = option("", env="AIRCLASS_DATA_KEY", help="Fernet keys for AI keys at rest")
    #: Bearer token /metrics requires; without one, /metrics is open only under --dev.
    metrics_token: str = option("", env="AIRCLASS_METRICS_TOKEN", help="Bearer token for /metrics")
    teacher_password: str = option(
        "",
        env="AIRCLASS_TEACHER_PASSWORD",
        help="bootstrap only, until the first teacher account exists",
    )
    turn_secret: str = option("", env="AIRCLASS_TURN_SECRET", help="coturn's static-auth-secret")
    # Not options.
    token_ttl: int = 6 * 3600
    #: Largest request body accepted (bytes); larger gets 413.
    max_body: int = 256 * 1024
    #: A random id for this node.
    node_id: str = field(default_factory=lambda: "node-" + secrets.token_hex(4))

    def validate(self) -> None:
        """Raise ConfigError when this config cannot start a node; change nothing."""
        if not self.jwt_secret and not self.dev:
            raise ConfigError(
                "AIRCLASS_JWT_SECRET is not set. Set it (a long random string) "
                "or run with --dev for development."
            )
        for name, value in (
            ("AIRCLASS_JWT_SECRET", self.jwt_secret),
            ("AIRCLASS_CLUSTER_SECRET", self.cluster_secret),
        ):
            if value and len(value.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"{name} is {len(value.encode())} bytes; it must be at least "
                    f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
                )
        if self.role not in ROLES:
            raise ConfigError(f"unknown role {self.role!r}")
        if self.role == "sub" and not self.main_url:
            raise ConfigError("a sub node needs --main-url")
        if self.role in ("main", "sub") and not self.cluster_secret and not self.dev:
            raise ConfigError("a cluster node needs AIRCLASS_CLUSTER_SECRET")
        if self.record_segment_seconds < 1:
            raise ConfigError("--record-segment-seconds must be at least 1")
        if self.screenshot_interval < 0 or self.retention_days < 0 or self.min_free_disk_mb < 0:
            raise ConfigError("recording intervals, retention and disk threshold must be >= 0")
        if self.udp_ports and self.udp_ports[0] > self.udp_ports[1]:
            raise ConfigError("--udp-ports LO-HI needs LO <= HI")
        if self.turn_urls and not self.turn_secret:
            raise ConfigError("--turn-url needs AIRCLASS_TURN_SECRET (coturn's static-auth-secret)")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")) or any(c in url for c in ' <>"'):
                raise ConfigError(f"--turn-url {url!r}: expected turn:HOST:PORT?transport=udp")
        if self.turn_ttl < 60:
            raise ConfigError("--turn-ttl must be at least 60 seconds")
        if not 0.2 <= self.hls_part_seconds <= 2.0:
            raise ConfigError("--hls-part-seconds must be between 0.2 and 2")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_cert and self.demo and not self.rtmp_port:
            raise ConfigError("--demo publishes to the plain RTMP port: not --rtmp-port 0")
        if self.udp_ports and self.udp_ports[1] - self.udp_ports[0] + 1 < self.workers:
            raise ConfigError("--udp-ports needs at least one port per worker")
        caps = (self.max_viewers_per_user, self.max_viewers_per_ip, self.max_pending_per_ip)
        if self.capacity < 0 or any((cap or 0) < 0 for cap in caps):
            raise ConfigError("--capacity and the per-user / per-IP caps must be >= 0")

    def resolved(self) -> Config:
        """This config, checked (`validate`), with the values left to the node filled in:
        the bind address, the --dev secrets, the capacity and the per-address caps.

        Changes nothing; resolving a resolved config gives it back unchanged."""
        self.validate()
        jwt_secret = self.jwt_secret or DEV_JWT_SECRET  # validate: empty only under --dev
        cluster_secret = self.cluster_secret
        if self.role in ("main", "sub") and not cluster_secret:
            cluster_secret = jwt_secret  # under --dev only (validate)
        capacity = self.capacity or VIEWERS_PER_CORE * self.workers
        per_ip, pending = self.max_viewers_per_ip, self.max_pending_per_ip
        return replace(
            self,
            host=self.host or ("127.0.0.1" if self.dev else "0.0.0.0"),
            jwt_secret=jwt_secret,
            cluster_secret=cluster_secret,
            capacity=capacity,
            max_viewers_per_ip=capacity - capacity // 20 if per_ip is None else per_ip,
            max_pending_per_ip=max(20, capacity // 5) if pending is None else pending,
        )

    @property
    def advertised_host(self) -> str:
        """Host name clients should use for this node when no public URL is set."""
        if self.ice_hosts:
            return self.ice_hosts[0]
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def tls(self) -> bool:
        """HTTPS, WSS and RTMPS are served by the node itself."""
        return bool(self.tls_cert)

    @property
    def plain_rtmp(self) -> bool:
        """The plain RTMP listener runs (under TLS, --rtmp-port 0 turns it off)."""
        return not self.tls or bool(self.rtmp_port)

    @property
    def http_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return self.public_url.rstrip("/") or f"{scheme}://{self.advertised_host}:{self.http_port}"

    @property
    def rtmp_url(self) -> str:
        return self.rtmp_base(self.advertised_host)

    def rtmp_base(self, host: str) -> str:
        """Publishing URL up to the app (rtmps:// when TLS is on)."""
        if self.tls:
            return f"rtmps://{host}:{self.rtmps_port}/live"
        return f"rtmp://{host}:{self.rtmp_port}/live"


#: Config's options by field name, in declaration order.
OPTIONS: dict[str, Option] = {
    f.name: f.metadata["option"] for f in fields(Config) if "option" in f.metadata
}
_FIELDS = {f.name: f for f in fields(Config)}


def default_of(name: str) -> Any:
    """The default value of Config field `name`."""
    f = _FIELDS[name]
    return f.default_factory() if f.default is MISSING else f.default


def read_option(name: str, given: Any, environ: Mapping[str, str]) -> Any:
    """Option `name`'s value: `given` on the command line (None: not given), else its
    environment variable's (unset or empty: not given), else its default."""
    opt = OPTIONS[name]
    if given is None:
        raw = environ.get(opt.env, "")
        if not raw.strip():
            return default_of(name)
        source = opt.env
        if opt.switch:
            return raw.strip().lower() in ("1", "true", "yes", "on")
        texts = [item.strip() for item in raw.split(",")] if opt.many else raw
    else:
        source = opt.flag
        if opt.switch:
            return bool(given)
        texts = given
    try:
        if opt.many:
            return [opt.parse(text) for text in texts if text]
        return opt.parse(texts)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def read_options(given: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """`read_option` for each option named in `given` (field name -> command-line value)."""
    return {name: read_option(name, value, environ) for name, value in given.items()}


def _shown_default(name: str) -> str:
    opt = OPTIONS[name]
    if opt.shown is not None:
        return opt.shown
    value = default_of(name)
    if value is False:
        return "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value in (None, "", []) else str(value)


def option_help(name: str) -> str:
    """An option's line in `airclass serve --help`: help, variable, default."""
    opt = OPTIONS[name]
    env = opt.env + ("=1" if opt.switch else "")
    if opt.many:
        env += ", comma-separated"
    shown = _shown_default(name)
    if shown and not opt.switch:
        env += f", default: {shown}"
    return f"{opt.help}{'; repeatable' if opt.many else ''} [{env}]"


def options_markdown() -> str:
    """README's table of the `airclass serve` options (`airclass serve --options-markdown`)."""
    rows = ["| Option | Env | Default | Meaning |", "| --- | --- | --- | --- |"]
    for name, opt in OPTIONS.items():
        if opt.flag is None:
            continue
        flag = f"`{opt.flag}{' ' + opt.metavar if opt.metavar else ''}`"
        env = f"`{opt.env}{'=1' if opt.switch else ''}`"
        if opt.many:
            flag, env = flag + " (repeatable)", env + " (comma list)"
        meaning = opt.help if opt.choices is None else f"{', '.join(opt.choices)}: {opt.help}"
        cells = (flag, env, _shown_default(name), meaning)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def secrets_help() -> str:
    """The environment-only options (secrets), one phrase each."""
    return ", ".join(f"{opt.env} ({opt.help})" for opt in OPTIONS.values() if opt.flag is None)
