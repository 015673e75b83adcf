"""Shared fixtures: real node processes, redis-server, ffmpeg publishers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .netshape import LinkNode, ShapedLink, unavailable
from .support import NodeProcess, RedisServer, stop_process, take_log_problems


@pytest.fixture
def node_factory(tmp_path):
    """Start real `airclass serve` processes; all are stopped after the test."""
    nodes: list[NodeProcess] = []

    def start(*extra: str, **kwargs) -> NodeProcess:
        node = NodeProcess(tmp_path, *extra, **kwargs)
        nodes.append(node)  # stopped even if it never became ready
        return node.start()

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def node(node_factory) -> NodeProcess:
    return node_factory()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def processes():
    """Collects subprocesses (ffmpeg publishers...) to stop after the test."""
    procs = []
    yield procs
    for proc in procs:
        stop_process(proc)


@pytest.fixture
async def players():
    """WHEP players (aiortc) limited to the test address; all closed after the test."""
    from airclass_media.ice import restrict_host_addresses

    from .support import TEST_HOST
    from .whep_client import WhepPlayer

    restrict_host_addresses([TEST_HOST])
    opened: list[WhepPlayer] = []

    async def play(whep_url: str, token: str, **kwargs) -> WhepPlayer:
        player = WhepPlayer(whep_url, token, **kwargs)
        opened.append(player)
        await player.start()
        return player

    yield play
    for player in opened:
        await player.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
async def browser():
    """Headless Debian Chromium driven by Playwright (its own browser download is not used)."""
    if not Path(CHROMIUM).exists():  # noqa: ASYNC240 - one stat at set-up
        pytest.skip("chromium not installed (scripts/install-system.sh installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


#: Skip reasons of tests that need scripts/run-tests.sh's private network namespace.
NETNS_SKIP = "network namespace"


def _no_netns_skip_in_ci(report) -> None:
    """Under CI=true a test that needs the private network namespace fails instead of
    skipping (a CI run without it would pass while testing less)."""
    if not report.skipped or os.environ.get("CI") != "true" or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    if NETNS_SKIP in reason:
        report.outcome = "failed"
        report.longrepr = f"CI=true and this test would skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Fail the test (or its set-up/tear-down) when a node it ran logged a traceback."""
    outcome = yield
    report = outcome.get_result()
    _no_netns_skip_in_ci(report)
    problems = take_log_problems()
    if not problems:
        return
    text = "\n\n".join(problems)
    if report.failed:
        report.sections.append(("node log problems", text))
    else:
        report.outcome = "failed"
        report.longrepr = f"node log shows a traceback or an unhandled task error:\n\n{text}"


# -- a tc-shaped link to a viewer namespace, a node on it, Chromium behind it -----------
@pytest.fixture
def link(request):
    """A veth link shaped by tc; parametrized indirectly with True, a link carried by
    tests/linkemu.py (loss, delay and jitter on kernels without sch_netem)."""
    reason = unavailable()
    if reason or not Path(CHROMIUM).exists():
        pytest.skip(reason or "chromium not installed (scripts/install-system.sh)")
    with ShapedLink(emulated=getattr(request, "param", False)) as shaped:
        yield shaped


@pytest.fixture
def link_node(link, tmp_path):
    node = LinkNode(link, tmp_path)
    try:
        yield node.start(timeout=60)  # a loaded 2-core machine starts slowly
    finally:
        node.stop()


@pytest.fixture
async def viewer_browser(link, tmp_path):
    """Chromium running in the link's viewer namespace."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        exe = link.chromium_executable(tmp_path)
        browser = await pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()
