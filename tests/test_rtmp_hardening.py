"""Hostile RTMP clients against a real node (raw asyncio sockets), while a real ffmpeg
publisher on another stream keeps playing.

Before a successful publish a connection may send messages of at most 64 KiB on at most 8
chunk streams and must publish within 10 s; connections are capped per client address and
in total. Each offence closes that connection only, with a log line and no traceback
(the harness fails a test whose node logged one).
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from airclass_media.rtmp import amf0

from .support import (
    TEST_HOST,
    NodeProcess,
    async_http_json,
    async_wait_for,
    ffmpeg_publish,
    stop_process,
    wait_for,
)

STEADY = "steady"
PER_IP = 4  # the module node's --rtmp-max-per-ip
SET_CHUNK_SIZE, ABORT, USER_CONTROL, WINDOW_ACK, VIDEO, COMMAND = 1, 2, 4, 5, 9, 20


class RawRtmp:
    """A hand-made RTMP client: exactly the bytes a test wants, nothing else."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.in_chunk_size = 128
        self.out_chunk_size = 128
        self._partial: dict[int, list] = {}

    @classmethod
    async def open(cls, node: NodeProcess, handshake: bool = True) -> RawRtmp:
        reader, writer = await asyncio.open_connection(TEST_HOST, node.rtmp_port)
        client = cls(reader, writer)
        if handshake:
            await client.handshake()
        return client

    async def handshake(self) -> None:
        self.writer.write(b"\x03" + bytes(1536))
        s0s1s2 = await asyncio.wait_for(self.reader.readexactly(1 + 2 * 1536), 10)
        assert s0s1s2[0] == 3
        self.writer.write(s0s1s2[1:1537])  # C2 echoes S1
        await self.writer.drain()

    def message(self, csid: int, type_id: int, payload: bytes, stream_id: int = 0) -> bytes:
        """One message as chunks: a type 0 header, then type 3 continuations."""
        header = bytes([csid]) + bytes(3) + len(payload).to_bytes(3, "big") + bytes([type_id])
        parts = [header + struct.pack("<I", stream_id), payload[: self.out_chunk_size]]
        for pos in range(self.out_chunk_size, len(payload), self.out_chunk_size):
            parts += [bytes([0xC0 | csid]), payload[pos : pos + self.out_chunk_size]]
        return b"".join(parts)

    async def send(self, csid: int, type_id: int, payload: bytes, stream_id: int = 0) -> None:
        self.writer.write(self.message(csid, type_id, payload, stream_id))
        await self.writer.drain()

    async def command(self, *values, stream_id: int = 0) -> None:
        await self.send(3, COMMAND, amf0.encode(*values), stream_id)

    async def read_message(self, timeout: float = 10) -> tuple[int, bytes]:
        """(type, payload) of the server's next message (it sends type 0 and 3 chunks)."""

        async def read() -> tuple[int, bytes]:
            while True:
                first = (await self.reader.readexactly(1))[0]
                fmt, csid = first >> 6, first & 0x3F
                if fmt == 0:
                    header = await self.reader.readexactly(11)
                    length, type_id = int.from_bytes(header[3:6], "big"), header[6]
                    self._partial[csid] = [type_id, length, b""]
                assert fmt in (0, 3), fmt
                entry = self._partial[csid]
                want = min(self.in_chunk_size, entry[1] - len(entry[2]))
                entry[2] += await self.reader.readexactly(want)
                if len(entry[2]) == entry[1]:
                    del self._partial[csid]
                    if entry[0] == SET_CHUNK_SIZE:
                        self.in_chunk_size = struct.unpack(">I", entry[2][:4])[0]
                    return entry[0], entry[2]

        return await asyncio.wait_for(read(), timeout)

    async def command_reply(self, name: str, timeout: float = 10) -> list:
        """The values of the next AMF0 command called `name` (other messages skipped)."""
        while True:
            type_id, payload = await self.read_message(timeout)
            if type_id == COMMAND:
                values = amf0.decode_all(payload)
                if values and values[0] == name:
                    return values

    async def ping(self, timeout: float = 10) -> None:
        """User control ping request -> the node answers with a ping response: still open."""
        await self.send(2, USER_CONTROL, struct.pack(">HI", 6, 1234))
        while True:
            type_id, payload = await self.read_message(timeout)
            if type_id == USER_CONTROL and payload[:2] == b"\x00\x07":
                assert payload[2:6] == struct.pack(">I", 1234)
                return

    async def closed_by_node(self, timeout: float = 10) -> bool:
        """True once the node closed the connection (whatever it sent before)."""

        async def drain() -> None:
            while await self.reader.read(65536):
                pass

        try:
            await asyncio.wait_for(drain(), timeout)
        except ConnectionError:
            pass
        return True

    def close(self) -> None:
        self.writer.close()


async def refused_at_once(node: NodeProcess) -> bool:
    """A new connection that is closed before the handshake is answered."""
    client = await RawRtmp.open(node, handshake=False)
    try:
        client.writer.write(b"\x03" + bytes(1536))
        try:
            data = await asyncio.wait_for(client.reader.read(1), 10)
        except ConnectionError:
            data = b""
        return data == b""
    finally:
        client.close()


async def steady_packets(node: NodeProcess) -> int:
    status, body, _ = await async_http_json("GET", f"{node.url}/api/streams/{STEADY}")
    assert status == 200 and body["live"], body
    return body["packets_in"]


async def assert_still_playing(node: NodeProcess) -> None:
    """The other stream's publisher is still live and its packets keep coming in."""
    before = await steady_packets(node)
    await async_wait_for(
        lambda: _more(node, before + 30), 15, "the steady publisher's packets to keep coming"
    )


async def _more(node: NodeProcess, want: int) -> bool:
    return await steady_packets(node) >= want


def start_publisher(node: NodeProcess, processes: list) -> None:
    token = node.token(STEADY, user_type="teacher", action="publish")["token"]
    processes.append(
        ffmpeg_publish(node.rtmp_url(STEADY, token), seconds=600, size="320x240", rate=25)
    )
    wait_for(lambda: node_status(node).get("width"), 20, "the steady stream live")


def node_status(node: NodeProcess) -> dict:
    from .support import http_json

    status, body, _ = http_json("GET", f"{node.url}/api/streams/{STEADY}")
    return body if status == 200 else {}


@pytest.fixture(scope="module")
def rtmp_node(tmp_path_factory):
    """One node for the module (per-IP cap 4) with a publisher on STEADY."""
    tmp = tmp_path_factory.mktemp("rtmp")
    node = NodeProcess(tmp, "--rtmp-max-per-ip", str(PER_IP), name="rtmp").start()
    procs: list = []
    try:
        start_publisher(node, procs)
        yield node
    finally:
        for proc in procs:
            stop_process(proc)
        node.stop()


async def test_not_rtmp_and_oversized_messages_are_dropped(rtmp_node):
    node = rtmp_node
    # Not RTMP at all.
    client = await RawRtmp.open(node, handshake=False)
    client.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\xff" * 4000)
    assert await client.closed_by_node()
    client.close()
    # A command message of just under 64 KiB is read (the connection answers a ping) ...
    client = await RawRtmp.open(node)
    await client.command("nothingKnown", 0.0, None, "x" * (64 * 1024 - 40))
    await client.ping()
    # ... a message announcing more than 64 KiB before any publish closes it.
    await client.send(4, COMMAND, amf0.encode("big", 0.0, None, "y" * (64 * 1024)))
    assert await client.closed_by_node()
    client.close()
    # A header announcing a 16 MB message: the same, before any byte of it arrives.
    client = await RawRtmp.open(node)
    client.writer.write(b"\x03" + b"\x00\x00\x00" + b"\xff\xff\xff\x14" + bytes(4))
    assert await client.closed_by_node()
    client.close()
    await async_wait_for(lambda: "too large" in node.log(), 5, "the drop logged")
    assert "not RTMP" in node.log()
    await assert_still_playing(node)


async def test_more_than_eight_chunk_streams_before_publish(rtmp_node):
    node = rtmp_node
    client = await RawRtmp.open(node)
    for csid in range(2, 10):  # 8 chunk streams: allowed
        await client.send(csid, COMMAND, amf0.encode("nothingKnown", 0.0, None))
    await client.ping()  # on chunk stream 2, already open
    await client.send(10, COMMAND, amf0.encode("nothingKnown", 0.0, None))  # the 9th
    assert await client.closed_by_node()
    client.close()
    await async_wait_for(lambda: "too many chunk streams" in node.log(), 5, "the drop logged")
    await assert_still_playing(node)


async def test_deeply_nested_amf0_objects_close_the_connection(rtmp_node):
    node = rtmp_node
    for nested in (
        b"\x03" + b"\x00\x01k\x03" * 12000,  # objects in objects
        b"\x08\x00\x00\x00\x01" + b"\x00\x01k\x08\x00\x00\x00\x01" * 6000,  # ECMA arrays
        b"\x0a\x00\x00\x00\x01" * 12000,  # strict arrays
    ):
        client = await RawRtmp.open(node)
        await client.send(3, COMMAND, amf0.encode("connect", 1.0) + nested)
        assert await client.closed_by_node()
        client.close()
    await async_wait_for(
        lambda: node.log().count("AMF0 nesting too deep") >= 3, 5, "three drops logged"
    )
    await assert_still_playing(node)


@pytest.mark.parametrize(
    "type_id,payload",
    [(SET_CHUNK_SIZE, b"\x00\x01"), (ABORT, b""), (WINDOW_ACK, b"\x00\x00\x10")],
    ids=["set-chunk-size", "abort", "window-ack"],
)
async def test_short_control_messages_close_cleanly(rtmp_node, type_id, payload):
    node = rtmp_node
    client = await RawRtmp.open(node)
    await client.ping()
    await client.send(2, type_id, payload)
    assert await client.closed_by_node()
    client.close()
    await async_wait_for(lambda: "is too short" in node.log(), 5, "the drop logged")
    await assert_still_playing(node)


async def test_no_publish_within_ten_seconds_closes(rtmp_node):
    """A client that connects and keeps chatting (pings) but never publishes is dropped
    by the publish deadline, long before the 30 s idle timeout."""
    node = rtmp_node
    client = await RawRtmp.open(node)
    await client.command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://x/live"})
    assert (await client.command_reply("_result"))[3]["code"] == "NetConnection.Connect.Success"

    async def keep_pinging() -> None:
        while True:
            await client.ping()
            await asyncio.sleep(0.5)  # pacing of the hostile client, not synchronisation

    pinger = asyncio.ensure_future(keep_pinging())
    try:
        done, _ = await asyncio.wait([pinger], timeout=25)
        assert pinger in done, "still open after 25 s"
        assert isinstance(pinger.exception(), (asyncio.IncompleteReadError, ConnectionError))
    finally:
        pinger.cancel()
        client.close()
    await async_wait_for(lambda: "no publish within 10 s" in node.log(), 5, "the drop logged")
    await assert_still_playing(node)


async def test_after_publish_large_messages_are_accepted(rtmp_node):
    """The 64 KiB bound is for strangers: a publisher with a valid token may send more."""
    node = rtmp_node
    token = (await node.atoken("rawpub", user_type="teacher", action="publish"))["token"]
    client = await RawRtmp.open(node)
    await client.command("connect", 1.0, {"app": "live", "tcUrl": "rtmp://x/live"})
    await client.command_reply("_result")
    await client.command("createStream", 2.0, None)
    await client.command_reply("_result")
    await client.command("publish", 3.0, None, f"rawpub?token={token}", "live", stream_id=1)
    status = await client.command_reply("onStatus")
    assert status[3]["code"] == "NetStream.Publish.Start", status
    # A 200 KB video message (not H.264 that decodes: the ingest counts it as bad).
    await client.send(6, VIDEO, b"\x17\x01\x00\x00\x00" + bytes(200_000), stream_id=1)
    for csid in range(7, 20):  # and more chunk streams than before the publish
        await client.send(csid, VIDEO, b"\x27\x01\x00\x00\x00" + bytes(100), stream_id=1)
    await client.ping()
    client.close()
    await assert_still_playing(node)


async def test_connections_per_address_are_capped(rtmp_node):
    node = rtmp_node
    # Only the ffmpeg publisher's connection (from this address too) is left open.
    await async_wait_for(lambda: _rtmp_connections(node, 1), 10, "earlier tests' connections gone")
    clients = [await RawRtmp.open(node) for _ in range(PER_IP - 1)]
    try:
        assert await refused_at_once(node)
        await async_wait_for(lambda: "too many connections" in node.log(), 5, "refusal logged")
        clients.pop().close()
        # The closed connection's slot comes back (the per-address table is kept exact).
        opened = await async_wait_for(_try_open(node), 10, "a slot freed")
        clients.append(opened)
        await opened.ping()
    finally:
        for client in clients:
            client.close()
    await assert_still_playing(node)


def _try_open(node: NodeProcess):
    async def attempt() -> RawRtmp | None:
        client = await RawRtmp.open(node, handshake=False)
        try:
            await client.handshake()
            return client
        except (asyncio.IncompleteReadError, ConnectionError):
            client.close()
            return None

    return attempt


async def test_total_connections_are_capped(node_factory, processes):
    node = await asyncio.to_thread(
        node_factory, "--rtmp-max-connections", "3", "--rtmp-max-per-ip", "100"
    )
    await asyncio.to_thread(start_publisher, node, processes)
    clients = [await RawRtmp.open(node) for _ in range(2)]  # + the publisher: 3
    try:
        assert await refused_at_once(node)
        clients.pop().close()
        clients.append(await async_wait_for(_try_open(node), 10, "a slot freed"))
    finally:
        for client in clients:
            client.close()
    await assert_still_playing(node)
    await async_wait_for(
        lambda: _rtmp_connections(node, 1), 10, "closed connections to leave the table"
    )


async def _rtmp_connections(node: NodeProcess, want: int) -> bool:
    _, text, _ = await async_http_json("GET", f"{node.url}/metrics")
    line = next(x for x in text.splitlines() if x.startswith("airclass_rtmp_connections "))
    return float(line.split()[-1]) == want
