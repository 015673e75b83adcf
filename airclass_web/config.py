"""Node configuration: one dataclass, filled from CLI options and AIRCLASS_* variables."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

#: Secret used only under --dev when AIRCLASS_JWT_SECRET is not set.
DEV_JWT_SECRET = "airclass-dev-secret-do-not-use-in-production"

#: WebRTC viewers one media worker (one core) serves. scripts/bench_media.py measured
#: 0.0029-0.0031 core per 720p30 2 Mbps viewer (Opus included) at 100-300 viewers, i.e.
#: ~330 on a full core; this keeps a quarter of the core for bursts (keyframes, new
#: viewers catching up, RTCP). The default --capacity is this times the worker count.
VIEWERS_PER_CORE = 250
#: Shortest AIRCLASS_JWT_SECRET / AIRCLASS_CLUSTER_SECRET accepted (bytes).
MIN_SECRET_BYTES = 32


class ConfigError(Exception):
    """The configuration cannot start a node."""


@dataclass
class Config:
    host: str = "0.0.0.0"
    http_port: int = 8000
    rtmp_port: int = 1935
    #: TLS (tls.py): PEM certificate chain and key; with them HTTPS/WSS on http_port
    #: and RTMPS on rtmps_port (the plain RTMP port stays unless rtmp_port is 0).
    tls_cert: str = ""
    tls_key: str = ""
    rtmps_port: int = 1936
    #: With TLS: a plain-HTTP listener on this port that redirects to HTTPS (0: none).
    http_redirect_port: int = 0
    #: Only these host addresses are gathered and advertised as ICE candidates.
    ice_hosts: list[str] = field(default_factory=list)
    #: Addresses clients reach this node at through a 1:1 NAT / port mapping (same ports).
    ice_public_ips: list[str] = field(default_factory=list)
    #: Media UDP ports stay in this inclusive range.
    udp_ports: tuple[int, int] | None = None
    #: STUN/TURN URLs handed to clients (Link rel="ice-server") and used by the server.
    ice_servers: list[str] = field(default_factory=list)
    #: TURN URLs (turn:/turns:) handed to viewers with short-lived credentials made from
    #: turn_secret (AIRCLASS_TURN_SECRET = coturn's static-auth-secret), valid turn_ttl s.
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str = ""
    turn_ttl: int = 4 * 3600
    #: HLS fallback: target duration of a Low-Latency HLS part (seconds).
    hls_part_seconds: float = 0.5
    #: Rendition ladder (airclass_media.ladder): "540p:1200,360p:500" (kbit/s) or "none".
    ladder: str = "540p:1200,360p:500"
    data_dir: Path = Path("data")
    dev: bool = False
    demo: bool = False
    jwt_secret: str = ""
    token_ttl: int = 6 * 3600
    teacher_password: str = ""
    role: str = "standalone"
    main_url: str = ""
    public_url: str = ""
    cluster_secret: str = ""
    redis_url: str = ""
    mongo_url: str = ""
    #: Viewers this node serves at most; 0: VIEWERS_PER_CORE x workers (set by validate).
    capacity: int = 0
    #: Media worker processes (1: viewers are served in the node process itself).
    workers: int = 1
    #: Concurrent viewer sessions one user / one client address may have (0: no limit).
    #: Per address, None: all seats but a twentieth (a school behind one NAT may fill
    #: the node, never quite all of it; set by validate).
    max_viewers_per_user: int = 5
    max_viewers_per_ip: int | None = None
    #: Viewer offers of one address not connected yet (ICE + DTLS); more wait, then 429.
    #: None: max(20, capacity / 5) (set by validate), so offers that never connect hold
    #: few seats (each for CONNECT_TIMEOUT at most).
    max_pending_per_ip: int | None = None
    #: RTMP connections at once, in total and from one client address.
    rtmp_max_connections: int = 200
    rtmp_max_per_ip: int = 10
    #: Largest request body accepted (bytes); larger gets 413.
    max_body: int = 256 * 1024
    log_level: str = "INFO"
    #: Proxies (IPs/CIDRs) whose X-Forwarded-For is believed for the client address.
    trusted_proxies: list[str] = field(default_factory=list)
    #: /api/token and /api/sessions/join requests per second per client address (burst
    #: ten times that); 0 = unlimited.
    ip_rate_limit: float = 5.0
    #: Bearer token /metrics requires (AIRCLASS_METRICS_TOKEN); without one, /metrics is
    #: open only under --dev.
    metrics_token: str = ""
    #: Fernet key(s) for data at rest (AI keys), comma-separated; the first encrypts.
    data_keys: str = ""
    #: Recording (recorder/): segment length, screenshot interval (0 = none), retention
    #: in days (0 = keep), free disk below which recording refuses/stops, auto-recorded
    #: streams ("*" = all), seconds a stream may stay offline before its recording ends.
    record_segment_seconds: float = 60.0
    screenshot_interval: float = 10.0
    retention_days: float = 7.0
    min_free_disk_mb: int = 1024
    auto_record: list[str] = field(default_factory=list)
    record_offline_grace: float = 120.0
    #: AI analysis: Gemini REST base URL (tests point it at a local server), provider
    #: calls per teacher per minute, base URLs provider calls may use (empty: the
    #: providers' public HTTPS URLs; see ai/egress.py).
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    ai_calls_per_minute: float = 10.0
    ai_allowed_base_urls: list[str] = field(default_factory=list)
    #: Filled at start-up: a random id for this node.
    node_id: str = field(default_factory=lambda: "node-" + secrets.token_hex(4))

    def validate(self) -> None:
        if not self.jwt_secret:
            if not self.dev:
                raise ConfigError(
                    "AIRCLASS_JWT_SECRET is not set. Set it (a long random string) "
                    "or run with --dev for development."
                )
            self.jwt_secret = DEV_JWT_SECRET
        for name, value in (
            ("AIRCLASS_JWT_SECRET", self.jwt_secret),
            ("AIRCLASS_CLUSTER_SECRET", self.cluster_secret),
        ):
            if value and len(value.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(
                    f"{name} is {len(value.encode())} bytes; it must be at least "
                    f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
                )
        if self.data_keys:
            from .crypto import DataKeyError, data_cipher

            try:
                data_cipher(self.data_keys)
            except DataKeyError as exc:
                raise ConfigError(str(exc)) from exc
        try:
            from .limits import parse_networks

            parse_networks(self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"--trusted-proxy: {exc}") from exc
        if self.role not in ("standalone", "main", "sub"):
            raise ConfigError(f"unknown role {self.role!r}")
        if self.role == "sub" and not self.main_url:
            raise ConfigError("a sub node needs --main-url")
        if self.role in ("main", "sub") and not self.cluster_secret:
            if not self.dev:
                raise ConfigError("a cluster node needs AIRCLASS_CLUSTER_SECRET")
            self.cluster_secret = self.jwt_secret
        from .ai.egress import Allowlist

        try:
            Allowlist([*self.ai_allowed_base_urls, self.gemini_base_url])
        except ValueError as exc:
            raise ConfigError(f"--ai-allowed-base-url / --gemini-base-url: {exc}") from exc
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
        try:
            from airclass_media.ladder import parse_ladder

            parse_ladder(self.ladder)
        except ValueError as exc:
            raise ConfigError(f"--ladder: {exc}") from exc
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_cert:
            from .tls import TlsError, check_files

            try:
                check_files(self.tls_cert, self.tls_key)
            except TlsError as exc:
                raise ConfigError(str(exc)) from exc
            if self.demo and not self.rtmp_port:
                raise ConfigError("--demo publishes to the plain RTMP port: not --rtmp-port 0")
        if self.udp_ports and self.udp_ports[1] - self.udp_ports[0] + 1 < self.workers:
            raise ConfigError("--udp-ports needs at least one port per worker")
        if self.capacity < 0 or self.max_viewers_per_user < 0:
            raise ConfigError("--capacity and the per-user / per-IP caps must be >= 0")
        if (self.max_viewers_per_ip or 0) < 0 or (self.max_pending_per_ip or 0) < 0:
            raise ConfigError("--capacity and the per-user / per-IP caps must be >= 0")
        if not self.capacity:
            self.capacity = VIEWERS_PER_CORE * self.workers
        if self.max_viewers_per_ip is None:
            self.max_viewers_per_ip = self.capacity - self.capacity // 20
        if self.max_pending_per_ip is None:
            self.max_pending_per_ip = max(20, self.capacity // 5)

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


def parse_port_range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        low, high = int(lo), int(hi or lo)
    except ValueError as exc:
        raise ConfigError(f"bad port range {text!r}: expected LO-HI") from exc
    if not (1 <= low <= high <= 65535):
        raise ConfigError(f"bad port range {text!r}")
    return low, high
