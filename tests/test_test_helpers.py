"""The test helpers themselves: waiting on a condition fails at once on a failed
assertion and keeps retrying on transient errors such as a refused connection."""

from __future__ import annotations

import socket
import time

import pytest

from .support import TEST_HOST, async_wait_for, free_port, wait_for


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
