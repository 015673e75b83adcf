"""Shared fixtures: real node processes, redis-server, ffmpeg publishers."""

from __future__ import annotations

import pytest

from .support import NodeProcess, RedisServer, stop_process


@pytest.fixture
def node_factory(tmp_path):
    """Start real `airclass serve` processes; all are stopped after the test."""
    nodes: list[NodeProcess] = []

    def start(*extra: str, **kwargs) -> NodeProcess:
        node = NodeProcess(tmp_path, *extra, **kwargs).start()
        nodes.append(node)
        return node

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
