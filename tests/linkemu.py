"""A link emulator in user space, for kernels without sch_netem (this machine's).

Joins two network namespaces with a TUN device in each (IP packets, no Ethernet) and
carries packets between them: what the node sends to the viewer goes through random
loss, a token-bucket rate with a bounded queue (as tbf) and a delay with jitter (as
netem's normal distribution, packets kept in order as a real link's queue keeps them);
what the viewer sends goes straight back. Standard library only; run by
`netshape.ShapedLink(emulated=True)`, which configures addresses and routes:

    python tests/linkemu.py NODE_DEV VIEWER_DEV /proc/PID/ns/net

It opens NODE_DEV in its own namespace, VIEWER_DEV in the given one, prints "ready", then
reads commands, one JSON object a line, on stdin: a shape (`netshape.Shape`'s fields) is
taken from now on and answered "ok"; "stats" is answered with a JSON line of bytes sent
and packets dropped since the last shape.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import fcntl
import json
import os
import random
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
MAX_PACKET = 65535


def open_tun(name: str) -> int:
    """A TUN device `name` in the calling thread's network namespace (non-blocking fd)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Downlink:
    """Node -> viewer: loss, then a token bucket, then delay and jitter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, out_fd: int) -> None:
        self.loop = loop
        self.out_fd = out_fd
        self.shape: dict = {}
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.tokens = 0.0
        self.tokens_at = 0.0
        self.last_departure = 0.0
        self.last_release = 0.0
        self.sent_bytes = 0
        self.dropped = 0

    def reshape(self, shape: dict) -> None:
        self.shape = shape
        self.tokens = float(shape.get("burst_bytes") or 32_000)
        self.tokens_at = self.loop.time()
        self.sent_bytes = self.dropped = 0

    def packet(self, data: bytes) -> None:
        shape, now = self.shape, self.loop.time()
        if shape.get("loss_pct") and random.random() * 100 < shape["loss_pct"]:
            self.dropped += 1
            return
        departure = now
        rate_kbit = shape.get("rate_kbit")
        if rate_kbit:
            rate = rate_kbit * 125.0  # bytes per second
            start = max(now, self.last_departure)
            tokens = min(
                shape.get("burst_bytes") or 32_000, self.tokens + (start - self.tokens_at) * rate
            )
            departure = start if tokens >= len(data) else start + (len(data) - tokens) / rate
            if departure - now > (shape.get("queue_ms") or 200) / 1000:
                self.dropped += 1  # tail drop: the queue holds queue_ms
                return
            self.tokens = max(0.0, tokens - len(data))
            self.tokens_at = self.last_departure = departure
        delay = (shape.get("delay_ms") or 0) / 1000
        jitter = (shape.get("jitter_ms") or 0) / 1000
        if jitter:
            delay = max(0.0, random.gauss(delay, jitter))
        release = max(departure + delay, self.last_release)
        self.last_release = release
        if release <= now and not self.queue:
            self._write(data)
            return
        self.queue.append((release, data))
        if self.timer is None:
            self.timer = self.loop.call_at(release, self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now + 0.0005:
            self._write(self.queue.popleft()[1])
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self._flush)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.out_fd, data)
            self.sent_bytes += len(data)
        except OSError:
            self.dropped += 1


def drain(fd: int, handle) -> None:
    while True:
        try:
            data = os.read(fd, MAX_PACKET)
        except BlockingIOError:
            return
        handle(data)


def forward(fd: int):
    def write(data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:
            pass

    return write


async def serve(node_fd: int, viewer_fd: int) -> None:
    loop = asyncio.get_running_loop()
    downlink = Downlink(loop, viewer_fd)
    loop.add_reader(node_fd, drain, node_fd, downlink.packet)
    loop.add_reader(viewer_fd, drain, viewer_fd, forward(node_fd))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := await reader.readline():
        command = json.loads(line)
        if command == "stats":
            answer = {"sent_bytes": downlink.sent_bytes, "dropped_packets": downlink.dropped}
            print(json.dumps(answer), flush=True)
        else:
            downlink.reshape(command)
            print("ok", flush=True)


def main() -> None:
    node_dev, viewer_dev, viewer_netns = sys.argv[1:4]
    node_fd = open_tun(node_dev)
    enter_netns(viewer_netns)
    viewer_fd = open_tun(viewer_dev)
    asyncio.run(serve(node_fd, viewer_fd))


if __name__ == "__main__":
    main()
