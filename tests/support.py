"""Real parts for tests: free ports, node processes, redis-server, ffmpeg publishers.

Nothing here mocks a component: every helper starts the real program and waits on a
condition (never a fixed sleep). Async tests use the async helpers (`async_http_json`,
`async_wait_for`, `NodeProcess.atoken`) so that they never block the event loop their
WebRTC viewers run on.

A node whose log shows a traceback or an unhandled task error fails the test that ran it:
`NodeProcess.stop`/`kill` collect such lines (see `LOG_PROBLEMS`) and conftest's report
hook turns them into a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Address every test server binds to and advertises. scripts/test.sh runs the suite in
#: a private network namespace and sets it to a dummy interface's address so that
#: Chromium (which gathers no loopback candidates) can do WebRTC too.
TEST_HOST = os.environ.get("AIRCLASS_TEST_HOST", "127.0.0.1")
TEST_SECRET = "test-secret-0123456789abcdef0123456789abcdef"
#: AIRCLASS_DATA_KEY of test nodes (a Fernet key: AI keys are encrypted at rest with it).
TEST_DATA_KEY = "dGVzdC1kYXRhLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE="
#: Lines in a node's log that fail the test: a crash somewhere, even if the node went on.
LOG_PROBLEM = re.compile(
    r"Traceback \(most recent call last\)|Task exception was never retrieved"
    r"|Exception in callback|Task was destroyed but it is pending"
)
#: Problems found in node logs since the last test report (drained by conftest).
LOG_PROBLEMS: list[str] = []


def take_log_problems() -> list[str]:
    """Problems found in node logs since the last call."""
    found = LOG_PROBLEMS[:]
    LOG_PROBLEMS.clear()
    return found


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((TEST_HOST, 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval=0.05):
    """Poll predicate until truthy; return its value or fail with `what`.

    A failed assertion in the predicate fails at once (it will not turn true by waiting);
    other errors (connection refused, a node still starting) are retried and the last one
    is reported on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - transient; reported on timeout
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})"
    ) from last_exc


async def async_wait_for(predicate, timeout: float, what: str, interval=0.05):
    """wait_for for async tests: predicate may be a coroutine function; assertion
    failures surface at once, other errors are retried and reported on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - transient; reported on timeout
            last_exc = exc
        await asyncio.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_exc!r})"
    ) from last_exc


async def async_http_json(
    method: str, url: str, body: bytes | None = None, headers=None, timeout: float = 10
):
    """http_json for async tests (aiohttp: the event loop keeps running)."""
    import json

    import aiohttp

    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with (
        aiohttp.ClientSession(timeout=client_timeout) as http,
        http.request(method, url, data=body, headers=headers or {}) as resp,
    ):
        raw = await resp.read()
        status, hdrs = resp.status, resp.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs


def http_json(method: str, url: str, body: bytes | None = None, headers=None, timeout=10):
    """(status, parsed JSON or text, headers) of one HTTP request, errors included."""
    import json

    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, hdrs = resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        status, raw, hdrs = err.code, err.read(), err.headers
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs


class NodeProcess:
    """A real `airclass serve` process on free ports of TEST_HOST."""

    def __init__(
        self,
        tmp_path: Path,
        *extra: str,
        env: dict | None = None,
        dev=True,
        name: str = "node",
        check_log: bool = True,
    ) -> None:
        self.http_port = free_port()
        self.rtmp_port = free_port()
        self.data_dir = tmp_path / f"data-{name}-{self.http_port}"
        self.log_path = tmp_path / f"{name}-{self.http_port}.log"
        self.args = [
            sys.executable,
            "-m",
            "airclass_web.cli",
            "serve",
            "--host",
            TEST_HOST,
            "--http-port",
            str(self.http_port),
            "--rtmp-port",
            str(self.rtmp_port),
            "--ice-host",
            TEST_HOST,
            "--data-dir",
            str(self.data_dir),
            *(["--dev"] if dev else []),
            *extra,
        ]
        self.env = {
            **os.environ,
            "AIRCLASS_JWT_SECRET": TEST_SECRET,
            "AIRCLASS_DATA_KEY": TEST_DATA_KEY,
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        #: Fail the test if the log shows a traceback (checked once, at stop or kill).
        self.check_log = check_log

    @property
    def url(self) -> str:
        return f"http://{TEST_HOST}:{self.http_port}"

    def log_problems(self) -> list[str]:
        """Lines of the log that show a traceback or an unhandled task error, with context."""
        lines = self.log().splitlines()
        found = []
        for i, line in enumerate(lines):
            if LOG_PROBLEM.search(line):
                found.append("\n".join(lines[max(0, i - 1) : i + 25]))
        return found

    def _check_log(self) -> None:
        if not self.check_log:
            return
        self.check_log = False  # once
        for problem in self.log_problems():
            LOG_PROBLEMS.append(f"{self.log_path.name}:\n{problem}")

    def rtmp_url(self, stream: str, token: str = "") -> str:
        query = f"?token={token}" if token else ""
        return f"rtmp://{TEST_HOST}:{self.rtmp_port}/live/{stream}{query}"

    def start(self, timeout: float = 20) -> NodeProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            return http_json("GET", self.url + "/api/health", timeout=1)[0] == 200

        wait_for(ready, timeout, f"node on {self.url}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _token_url(self, stream: str, user_type: str, action: str, user_id: str, extra) -> str:
        from urllib.parse import urlencode

        query = {"user_type": user_type, "action": action, "stream": stream, **extra}
        if user_id:
            query["user_id"] = user_id
        return f"{self.url}/api/token?{urlencode(query)}"

    def token(self, stream: str, user_type="student", action="read", user_id="", **extra):
        status, body, _ = http_json(
            "POST", self._token_url(stream, user_type, action, user_id, extra)
        )
        assert status == 200, body
        return body

    async def atoken(self, stream: str, user_type="student", action="read", user_id="", **extra):
        """token() for async tests."""
        url = self._token_url(stream, user_type, action, user_id, extra)
        status, body, _ = await async_http_json("POST", url)
        assert status == 200, body
        return body

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._log.close()
        self._check_log()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(Exception):
            self._log.close()
        self._check_log()


class RedisServer:
    """A real redis-server on a free port, no persistence."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{TEST_HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not installed: run scripts/install-system.sh")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                TEST_HOST,
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ping():
            with socket.create_connection((TEST_HOST, self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        try:
            wait_for(ping, 10, "redis-server")
        except TimeoutError:
            self.stop()  # never leave a server behind
            raise
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def ffmpeg_publish(
    url: str, seconds: float = 60, size="1280x720", rate=30, extra: list[str] | None = None
) -> subprocess.Popen:
    """Debian ffmpeg publishing testsrc2 + a tone as H.264/AAC over RTMP, in real time."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg not installed: run scripts/install-system.sh")
    args = [
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={rate}:duration={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        str(rate * 2),
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        "1500k",
        "-c:a",
        "aac",
        "-b:a",
        "96k",
        *(extra or []),
        "-f",
        "flv",
        url,
    ]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
