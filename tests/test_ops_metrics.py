"""Metrics with real parts: redis-server, a main and a sub node, ffmpeg publishing to the
main, an aiortc viewer on the sub, and Debian's Prometheus scraping both (the sub found
through the main's registry). Every query of the Grafana dashboard must return data
through Prometheus's HTTP API; promtool accepts the alert rules."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from .ops_support import CLUSTER_ENV, DEPLOY, METRICS_TOKEN, Prometheus, tool
from .support import async_http_json, async_wait_for, ffmpeg_publish, http_json, wait_for

STREAM = "opslecture"
#: Grafana's range variable, for queries sent to Prometheus directly (1 s scrapes).
RATE_INTERVAL = "15s"


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "airclass.json").read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL))
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]


def test_promtool_accepts_the_alert_rules():
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for name in (
        "NodeDown",
        "HighCpu",
        "HighMemory",
        "HighErrorRatio",
        "RecordingDiskLow",
        "SubOver",
    ):
        assert f"Airclass{name}" in alerts


def test_metrics_need_the_token(node_factory):
    node = node_factory("--workers", "1", env={"AIRCLASS_METRICS_TOKEN": METRICS_TOKEN})
    assert http_json("GET", node.url + "/metrics")[0] == 401
    assert http_json("GET", node.url + "/metrics/targets")[0] == 401
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    status, text, _ = http_json("GET", node.url + "/metrics", headers=auth)
    assert status == 200
    for name in (
        "airclass_http_requests_total",
        "airclass_http_request_duration_seconds_bucket",
        "airclass_active_streams",
        'airclass_active_connections{type="student"}',
        'airclass_tokens_issued_total{role="teacher"}',
        'airclass_cluster_nodes_total{status="ok"}',
        "airclass_cluster_load_percentage",
        "airclass_cluster_connections",
        'airclass_errors_total{type="http_5xx"}',
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert name in text, name
    status, targets, _ = http_json("GET", node.url + "/metrics/targets", headers=auth)
    assert status == 200 and targets[0]["labels"]["role"] == "standalone"


async def test_prometheus_answers_every_dashboard_query(
    tmp_path, node_factory, redis_server, processes, players
):
    common = ("--redis-url", redis_server.url, "--workers", "1")
    main = node_factory("--role", "main", *common, env=CLUSTER_ENV, name="main")
    sub = node_factory(
        "--role", "sub", "--main-url", main.url, *common, env=CLUSTER_ENV, name="sub"
    )  # fmt: skip
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    def sub_discovered() -> bool:
        status, targets, _ = http_json("GET", main.url + "/metrics/targets", headers=auth)
        return status == 200 and any(t["labels"]["role"] == "sub" for t in targets)

    wait_for(sub_discovered, 20, "the sub in the main's service discovery")
    publish = main.token(STREAM, user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(main.rtmp_url(STREAM, publish), seconds=600, size="320x240"))
    grant = await main.atoken(STREAM, user_id="ops-student")
    assert grant["whep_url"].startswith(sub.url + "/"), grant["whep_url"]
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=20, timeout=30)
    status, _, _ = await async_http_json("GET", main.url + "/no-such-page")
    assert status == 404  # one client error for the HTTP panels

    prometheus = Prometheus(tmp_path, main)
    checked = prometheus.check_config()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prometheus.start()
    try:

        async def both_up() -> bool:
            targets = await prometheus.targets()
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        await async_wait_for(both_up, 30, "main and sub scraped")

        missing: dict[str, str] = {}
        for title, expr in dashboard_queries():

            async def has_data(expr=expr) -> bool:
                result = await prometheus.query(expr)
                return any(not math.isnan(float(r["value"][1])) for r in result)

            try:
                await async_wait_for(has_data, 30, f"data for {title}", interval=0.5)
            except TimeoutError:
                missing[title] = expr
        assert not missing, f"dashboard queries without data: {missing}"

        # The queue-delay summary's sum is real: the sub's viewer got packets.
        total = await prometheus.query('sum(airclass_hub_queue_delay_seconds_sum{role="sub"})')
        assert float(total[0]["value"][1]) > 0
        viewers = await prometheus.query('sum(airclass_active_connections{type="student"})')
        assert float(viewers[0]["value"][1]) >= 1
        relay_hop = await prometheus.query('airclass_relay_hop_seconds{quantile="0.5"}')
        assert relay_hop and all(r["metric"]["role"] == "sub" for r in relay_hop)
        # Counters only go up.
        resets = await prometheus.query(
            "sum(resets(airclass_http_requests_total[1m]))"
            " + sum(resets(airclass_tokens_issued_total[1m]))"
            " + sum(resets(airclass_hub_queue_delay_seconds_sum[1m]))"
        )
        assert float(resets[0]["value"][1]) == 0
    finally:
        prometheus.stop()


@pytest.fixture(autouse=True)
def _needs_prometheus():
    tool("prometheus")
