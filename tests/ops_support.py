"""Real monitoring parts for the ops tests: Debian's Prometheus (and promtool), a cluster of
a main and a sub on redis-server, a local webhook receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import aiohttp
from aiohttp import web

from .support import ROOT, TEST_HOST, NodeProcess, free_port, http_json, wait_for

DEPLOY = ROOT / "deploy"
METRICS_TOKEN = "metrics-token-for-ops-tests-0123456789"
CLUSTER_SECRET = "ops-cluster-secret-0123456789abcdef0123"
CLUSTER_ENV = {"AIRCLASS_CLUSTER_SECRET": CLUSTER_SECRET, "AIRCLASS_METRICS_TOKEN": METRICS_TOKEN}


def tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise RuntimeError(f"{name} not installed: run scripts/install-system.sh (prometheus)")
    return exe


class Prometheus:
    """A real Prometheus scraping the main (static) and the subs (HTTP service discovery
    from the main's registry), with the project's alert rules loaded."""

    def __init__(self, tmp: Path, main: NodeProcess, interval: str = "1s") -> None:
        self.dir = tmp / "prometheus"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        token_file = self.dir / "metrics_token"
        token_file.write_text(METRICS_TOKEN)
        auth = {"credentials_file": str(token_file)}
        target = f"{TEST_HOST}:{main.http_port}"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "airclass-main",
                    "authorization": auth,
                    "static_configs": [{"targets": [target], "labels": {"role": "main"}}],
                },
                {
                    "job_name": "airclass-subs",
                    "authorization": auth,
                    "http_sd_configs": [
                        {
                            "url": f"{main.url}/metrics/targets",
                            "refresh_interval": interval,
                            "authorization": auth,
                        }
                    ],
                    "relabel_configs": [
                        {"source_labels": ["role"], "regex": "sub", "action": "keep"}
                    ],
                },
            ],
        }
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://{TEST_HOST}:{self.port}"

    def check_config(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tool("promtool"), "check", "config", str(self.config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def start(self) -> Prometheus:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address={TEST_HOST}:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            return http_json("GET", self.url + "/-/ready", timeout=1)[0] == 200

        try:
            wait_for(ready, 30, "prometheus ready")
        except BaseException:
            self.stop()
            raise
        return self

    async def query(self, expr: str) -> list:
        """The result vector of an instant query (HTTP API)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(self.url + "/api/v1/query", params={"query": expr}) as resp,
        ):
            body = await resp.json()
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    async def targets(self) -> list[dict]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(self.url + "/api/v1/targets") as resp,
        ):
            return (await resp.json())["data"]["activeTargets"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()


class WebhookReceiver:
    """A local Slack/Discord-style incoming webhook: keeps every JSON body posted."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{TEST_HOST}:{self.port}/hooks/alerts"

    async def _hook(self, request: web.Request) -> web.Response:
        self.posts.append(await request.json())
        return web.Response(text="ok")

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hooks/alerts", self._hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, TEST_HOST, self.port).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
