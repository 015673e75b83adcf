"""The test machinery itself: waiting on a condition fails at once on a failed
assertion and keeps retrying on transient errors such as a refused connection; under
CI=true a missing private network namespace fails the run instead of skipping tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from .support import ROOT, TEST_HOST, async_wait_for, free_port, wait_for


def refused() -> bool:
    """Connect to a port nothing listens on (ConnectionRefusedError)."""
    with socket.create_connection((TEST_HOST, free_port()), timeout=1):
        return True


def test_wait_for_surfaces_an_assertion_at_once_and_retries_refused_connections():
    calls = []

    def wrong():
        calls.append(1)
        assert len(calls) > 100, "the answer is wrong"

    start = time.monotonic()
    with pytest.raises(AssertionError, match="the answer is wrong"):
        wait_for(wrong, 30, "a wrong answer")
    assert time.monotonic() - start < 5 and len(calls) == 1

    start = time.monotonic()
    with pytest.raises(TimeoutError, match="ConnectionRefusedError") as info:
        wait_for(refused, 0.5, "a closed port", interval=0.05)
    assert 0.5 <= time.monotonic() - start < 5
    assert isinstance(info.value.__cause__, ConnectionRefusedError)

    tries = []

    def third_time_lucky():
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionRefusedError("not yet")
        return "ok"

    assert wait_for(third_time_lucky, 10, "a node that starts", interval=0.01) == "ok"


async def test_async_wait_for_surfaces_an_assertion_at_once_and_retries_refused():
    calls = []

    async def wrong():
        calls.append(1)
        assert len(calls) > 100, "the answer is wrong"

    start = time.monotonic()
    with pytest.raises(AssertionError, match="the answer is wrong"):
        await async_wait_for(wrong, 30, "a wrong answer")
    assert time.monotonic() - start < 5 and len(calls) == 1

    tries = []

    async def third_time_lucky():
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionRefusedError("not yet")
        return "ok"

    assert await async_wait_for(third_time_lucky, 10, "a node that starts", 0.01) == "ok"
    with pytest.raises(TimeoutError, match="ConnectionRefusedError"):
        await async_wait_for(refused, 0.5, "a closed port")


def _env(tmp_path, ci: bool) -> dict:
    """The environment with an `unshare` that cannot make namespaces (as in a container
    without privileges) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "unshare"
    fake.write_text("#!/bin/sh\necho 'unshare: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "AIRCLASS_IN_NETNS")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    if ci:
        env["CI"] = "true"
    return env


def test_ci_fails_without_a_network_namespace_instead_of_skipping(tmp_path):
    args = ["bash", "scripts/run-tests.sh", "--collect-only", "-q", "tests/test_test_helpers.py"]
    ci = subprocess.run(
        args, env=_env(tmp_path, True), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert ci.returncode == 3, (ci.stdout, ci.stderr)
    assert "CI=true but no private network namespace" in ci.stderr
    assert "collected" not in ci.stdout  # pytest did not run
    local = subprocess.run(
        args, env=_env(tmp_path, False), cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert local.returncode == 0, (local.stdout, local.stderr)
    assert "using 127.0.0.1" in local.stdout and "test_ci_fails_without" in local.stdout
    # .ci/run says so before installing anything.
    run = subprocess.run(
        ["bash", ".ci/run"],
        env=_env(tmp_path, True),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 3 and "no private network namespace" in run.stderr, run


def test_ci_turns_a_skip_for_want_of_the_namespace_into_a_failure(tmp_path):
    (tmp_path / "test_needs_netns.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.skipif(True, reason=\"needs scripts/run-tests.sh's private network "
        'namespace")\n'
        "def test_webrtc():\n    pass\n\n"
        "def test_other():\n    pytest.skip('zbar-tools not installed')\n"
    )
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "tests.conftest",
        "-p",
        "no:cacheprovider",
        "-q",
        "--rootdir",
        str(tmp_path),
        str(tmp_path / "test_needs_netns.py"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    ci = subprocess.run(
        args, env={**env, "CI": "true"}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert ci.returncode == 1 and "1 skipped, 1 error" in ci.stdout, ci.stdout
    assert "CI=true and this test would skip" in ci.stdout
    local = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout
