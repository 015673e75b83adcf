"""A node whose start fails part-way (a busy port after its media workers spawned) stops
what had started: it exits 1 with a clear error, and leaves no worker process nor
listener behind."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from .support import ROOT, TEST_HOST, NodeProcess, wait_for

WORKER_MODULE = b"airclass_web.delivery.workers.worker"


def workers_of(node: NodeProcess) -> list[int]:
    """Pids of media-worker processes of this node (their socket is in its data dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if WORKER_MODULE in args and str(node.data_dir).encode() in args:
            found.append(int(proc.name))
    return found


def free_to_bind(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((TEST_HOST, port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("busy", ["http", "rtmp"])
def test_failed_start_unwinds(tmp_path, busy):
    node = NodeProcess(tmp_path, "--workers", "2", name=f"busy-{busy}")
    taken = node.http_port if busy == "http" else node.rtmp_port
    other = node.rtmp_port if busy == "http" else node.http_port
    with socket.socket() as squatter:
        squatter.bind((TEST_HOST, taken))
        squatter.listen()
        proc = subprocess.Popen(
            node.args,
            env=node.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            output, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = output.decode(errors="replace")
        assert proc.returncode == 1, text
        assert "airclass: could not start:" in text, text
        assert f"{taken}" in text and "address already in use" in text.lower(), text
        assert "Traceback" not in text and " ERROR " not in text, text
        assert "2 of 2 media workers ready" in text, text  # they had started
        wait_for(lambda: not workers_of(node), 10, "media workers gone")
        assert free_to_bind(other), f"port {other} still taken after the failed start"
