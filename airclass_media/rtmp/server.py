"""RTMP server session layer in asyncio: handshake, chunk stream, AMF0 commands.

Publish-only: clients connect, createStream and publish; media messages are handed to a
`PublishHandler` made by the server's `authorize` callback. Everything a client sends is
bounded (message size, chunk streams, time to handshake, idle time); a misbehaving
connection is dropped on its own without touching any other. Until a publish succeeds the
bounds are tight (64 KiB messages, 8 chunk streams, 10 s to publish), and connections are
capped per client address and in total.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from . import amf0

log = logging.getLogger(__name__)

HANDSHAKE_SIZE = 1536
MAX_MESSAGE_SIZE = 8 * 1024 * 1024
MAX_CHUNK_STREAMS = 64
#: Before a successful publish: commands only, so small messages and few chunk streams.
PREPUBLISH_MAX_MESSAGE = 64 * 1024
PREPUBLISH_MAX_CHUNK_STREAMS = 8
#: Seconds from accept (or from the end of a publish) to a successful publish.
PUBLISH_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
#: Default connection caps (RtmpServer options).
MAX_CONNECTIONS = 200
MAX_CONNECTIONS_PER_IP = 10
IDLE_TIMEOUT = 30.0
OUT_CHUNK_SIZE = 4096
WINDOW_ACK_SIZE = 2_500_000

# Message types
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK, PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0 = 15, 17, 18, 20


class RtmpError(Exception):
    """Protocol violation: the connection is dropped."""


class PublishTimeout(RtmpError):
    """No successful publish in time."""


class PublishRejected(Exception):
    """The publish request is refused; `code` is the RTMP status code sent back."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


class PublishHandler(Protocol):
    def on_video(self, timestamp_ms: int, payload: bytes) -> None: ...
    def on_audio(self, timestamp_ms: int, payload: bytes) -> None: ...
    def on_metadata(self, metadata: dict) -> None: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class PublishRequest:
    app: str
    tc_url: str
    stream_key: str  # as sent, query included
    peer: str
    connect_params: dict = field(default_factory=dict)


Authorize = Callable[[PublishRequest], Awaitable[PublishHandler]]


@dataclass(slots=True)
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    buffer: bytearray = field(default_factory=bytearray)


class RtmpConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authorize: Authorize,
        server: RtmpServer,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.authorize = authorize
        self.server = server
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"
        self.in_chunk_size = 128
        self.chunk_streams: dict[int, _ChunkStream] = {}
        self.bytes_in = 0
        self.ack_window = 0
        self.last_ack = 0
        self.app = ""
        self.tc_url = ""
        self.connect_params: dict = {}
        self.handler: PublishHandler | None = None
        self.publish_timeout = server.publish_timeout
        #: Monotonic time by which a publish must succeed (while there is no handler).
        self.publish_deadline = time.monotonic() + self.publish_timeout

    # -- reading --------------------------------------------------------------------
    async def _read_exactly(self, n: int, idle: float) -> bytes:
        """n bytes within the idle time and, until a publish succeeds, the publish deadline."""
        timeout, by_deadline = idle, False
        if self.handler is None:
            left = max(0.0, self.publish_deadline - time.monotonic())
            timeout, by_deadline = min(idle, left), left < idle
        try:
            return await asyncio.wait_for(self.reader.readexactly(n), timeout)
        except TimeoutError:
            if by_deadline:
                raise PublishTimeout(f"no publish within {self.publish_timeout:g} s") from None
            raise

    async def _read(self, n: int) -> bytes:
        data = await self._read_exactly(n, IDLE_TIMEOUT)
        self.bytes_in += n
        return data

    @property
    def max_message_size(self) -> int:
        return MAX_MESSAGE_SIZE if self.handler is not None else PREPUBLISH_MAX_MESSAGE

    @property
    def max_chunk_streams(self) -> int:
        return MAX_CHUNK_STREAMS if self.handler is not None else PREPUBLISH_MAX_CHUNK_STREAMS

    async def handshake(self) -> None:
        c0c1 = await self._read_exactly(1 + HANDSHAKE_SIZE, HANDSHAKE_TIMEOUT)
        if c0c1[0] != 3:
            raise RtmpError(f"not RTMP (version byte 0x{c0c1[0]:02x})")
        # Simple handshake: a zero version field tells clients not to expect digests.
        s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0)
        s1 += os.urandom(HANDSHAKE_SIZE - 8)
        self.writer.write(b"\x03" + s1 + c0c1[1:])
        await self.writer.drain()
        await self._read_exactly(HANDSHAKE_SIZE, HANDSHAKE_TIMEOUT)
        self.bytes_in = 1 + 2 * HANDSHAKE_SIZE

    async def read_message(self) -> tuple[int, int, int, bytes]:
        """(type, message stream id, timestamp ms, payload) of the next whole message."""
        while True:
            first = (await self._read(1))[0]
            fmt, csid = first >> 6, first & 0x3F
            if csid == 0:
                csid = 64 + (await self._read(1))[0]
            elif csid == 1:
                b = await self._read(2)
                csid = 64 + b[0] + b[1] * 256
            cs = self.chunk_streams.get(csid)
            if cs is None:
                if len(self.chunk_streams) >= self.max_chunk_streams:
                    raise RtmpError(f"too many chunk streams (over {self.max_chunk_streams})")
                if fmt != 0:
                    raise RtmpError(f"chunk stream {csid} starts without a full header")
                cs = self.chunk_streams[csid] = _ChunkStream()
            new_message = not cs.buffer
            if fmt <= 2:
                header = await self._read(11 if fmt == 0 else 7 if fmt == 1 else 3)
                ts = int.from_bytes(header[0:3], "big")
                if fmt <= 1:
                    cs.length = int.from_bytes(header[3:6], "big")
                    cs.type_id = header[6]
                    if cs.length > self.max_message_size:
                        raise RtmpError(
                            f"message of {cs.length} bytes is too large "
                            f"(limit {self.max_message_size})"
                        )
                if fmt == 0:
                    cs.stream_id = struct.unpack_from("<I", header, 7)[0]
                cs.extended = ts == 0xFFFFFF
                if cs.extended:
                    ts = struct.unpack(">I", await self._read(4))[0]
                if fmt == 0:
                    cs.timestamp, cs.delta = ts, 0
                else:
                    cs.delta = ts
                    cs.timestamp = (cs.timestamp + ts) & 0xFFFFFFFF
            else:
                if cs.extended:
                    await self._read(4)  # repeated extended timestamp
                if new_message:
                    cs.timestamp = (cs.timestamp + cs.delta) & 0xFFFFFFFF
            if not new_message and fmt <= 1:
                raise RtmpError("new message header before the previous message ended")
            want = min(self.in_chunk_size, cs.length - len(cs.buffer))
            if want:
                cs.buffer += await self._read(want)
            self._maybe_ack()
            if len(cs.buffer) >= cs.length:
                payload = bytes(cs.buffer)
                cs.buffer.clear()
                return cs.type_id, cs.stream_id, cs.timestamp, payload

    def _maybe_ack(self) -> None:
        if self.ack_window and self.bytes_in - self.last_ack >= self.ack_window:
            self.last_ack = self.bytes_in
            self.send(2, ACK, 0, struct.pack(">I", self.bytes_in & 0xFFFFFFFF))

    # -- writing --------------------------------------------------------------------
    def send(self, csid: int, type_id: int, stream_id: int, payload: bytes, ts: int = 0) -> None:
        header = bytes([csid & 0x3F]) + ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big")
        header += bytes([type_id]) + struct.pack("<I", stream_id)
        parts = [header, payload[:OUT_CHUNK_SIZE]]
        for pos in range(OUT_CHUNK_SIZE, len(payload), OUT_CHUNK_SIZE):
            parts += [bytes([0xC0 | (csid & 0x3F)]), payload[pos : pos + OUT_CHUNK_SIZE]]
        self.writer.write(b"".join(parts))

    def send_command(self, stream_id: int, *values) -> None:
        self.send(3, COMMAND_AMF0, stream_id, amf0.encode(*values))

    def send_status(self, level: str, code: str, description: str) -> None:
        info = {"level": level, "code": code, "description": description}
        self.send_command(1, "onStatus", 0, None, info)

    # -- dispatch -------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await self.handshake()
            while True:
                type_id, stream_id, ts, payload = await self.read_message()
                await self.dispatch(type_id, stream_id, ts, payload)
                if self.writer.transport.get_write_buffer_size() > 1 << 20:
                    await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            log.info("rtmp %s: connection closed", self.peer)
        except TimeoutError:
            log.warning("rtmp %s: timed out", self.peer)
        except (RtmpError, amf0.AMFError) as exc:
            log.warning("rtmp %s: dropped: %s", self.peer, exc)
        except PublishRejected as exc:
            log.warning("rtmp %s: publish refused: %s", self.peer, exc.description)
        finally:
            self._end_publish()
            with contextlib.suppress(Exception):
                self.writer.close()

    def _end_publish(self) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            # Unpublished: the pre-publish limits and deadline apply again.
            self.publish_deadline = time.monotonic() + self.publish_timeout
            try:
                handler.close()
            except Exception:
                log.exception("rtmp %s: closing publish session failed", self.peer)

    async def dispatch(self, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        if type_id == VIDEO:
            if self.handler is not None:
                self.handler.on_video(ts, payload)
        elif type_id == AUDIO:
            if self.handler is not None:
                self.handler.on_audio(ts, payload)
        elif type_id in (COMMAND_AMF0, COMMAND_AMF3):
            data = payload[1:] if type_id == COMMAND_AMF3 else payload
            await self.on_command(stream_id, amf0.decode_all(data))
        elif type_id in (DATA_AMF0, DATA_AMF3):
            data = payload[1:] if type_id == DATA_AMF3 else payload
            values = amf0.decode_all(data)
            if values and values[0] == "@setDataFrame":
                values = values[1:]
            if len(values) >= 2 and values[0] == "onMetaData" and self.handler is not None:
                meta = values[1] if isinstance(values[1], dict) else {}
                self.handler.on_metadata(meta)
        elif type_id == SET_CHUNK_SIZE:
            size = _u32(payload, "set chunk size") & 0x7FFFFFFF
            if not 1 <= size <= MAX_MESSAGE_SIZE:
                raise RtmpError(f"bad chunk size {size}")
            self.in_chunk_size = size
        elif type_id == ABORT:
            csid = _u32(payload, "abort")
            if csid in self.chunk_streams:
                self.chunk_streams[csid].buffer.clear()
        elif type_id == WINDOW_ACK:
            self.ack_window = _u32(payload, "window acknowledgement size")
        elif type_id == USER_CONTROL:
            event = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else -1
            if event == 6:  # ping request -> ping response
                self.send(2, USER_CONTROL, 0, struct.pack(">H", 7) + payload[2:6])
        # ACK, PEER_BANDWIDTH and unknown types need no answer.

    async def on_command(self, stream_id: int, values: list) -> None:
        if not values or not isinstance(values[0], str):
            raise RtmpError("command without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0
        args = values[3:] if len(values) > 3 else []
        if name == "connect":
            params = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.connect_params = params
            self.app = str(params.get("app", ""))
            self.tc_url = str(params.get("tcUrl", ""))
            self.send(2, WINDOW_ACK, 0, struct.pack(">I", WINDOW_ACK_SIZE))
            self.send(2, PEER_BANDWIDTH, 0, struct.pack(">IB", WINDOW_ACK_SIZE, 2))
            self.send(2, SET_CHUNK_SIZE, 0, struct.pack(">I", OUT_CHUNK_SIZE))
            self.send_command(
                0,
                "_result",
                txn,
                {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0.0,
                },
            )
        elif name == "createStream":
            self.send_command(0, "_result", txn, None, 1.0)
        elif name in ("releaseStream", "FCPublish"):
            self.send_command(0, "_result", txn, None, None)
            if name == "FCPublish" and args:
                self.send_command(
                    0,
                    "onFCPublish",
                    0,
                    None,
                    {"code": "NetStream.Publish.Start", "description": str(args[0])},
                )
        elif name == "publish":
            await self.on_publish(str(args[0]) if args else "")
        elif name == "play":
            self.send_status("error", "NetStream.Play.Failed", "this server only takes publishers")
            await self.writer.drain()
            raise RtmpError("play is not supported")
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            if self.handler is not None:
                log.info("rtmp %s: unpublish", self.peer)
            self._end_publish()
        elif txn:
            self.send_command(0, "_result", txn, None, None)

    async def on_publish(self, stream_key: str) -> None:
        if self.handler is not None:
            raise RtmpError("publish twice on one connection")
        request = PublishRequest(self.app, self.tc_url, stream_key, self.peer, self.connect_params)
        try:
            self.handler = await self.authorize(request)
        except PublishRejected as exc:
            self.send_status("error", exc.code, exc.description)
            await self.writer.drain()
            raise
        self.send_status("status", "NetStream.Publish.Start", f"{stream_key.split('?')[0]} is live")
        await self.writer.drain()


def _u32(payload: bytes, what: str) -> int:
    """The big-endian 32-bit field a control message starts with (RtmpError if short)."""
    if len(payload) < 4:
        raise RtmpError(f"{what} message of {len(payload)} bytes is too short")
    return struct.unpack_from(">I", payload)[0]


class RtmpServer:
    """Accepts RTMP publishers on one port; many streams at once.

    With `tls` (a server SSLContext) it also accepts RTMPS on `tls_port`: a second listener
    into the same connections, limits and streams. `port=None` leaves plain RTMP off.

    At most `max_connections` connections at once, `max_per_ip` from one client address;
    more are closed at once (before the RTMP handshake).
    """

    def __init__(
        self,
        host: str,
        port: int | None,
        authorize: Authorize,
        *,
        max_connections: int = MAX_CONNECTIONS,
        max_per_ip: int = MAX_CONNECTIONS_PER_IP,
        publish_timeout: float = PUBLISH_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        tls_port: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.tls_port = tls_port
        self.authorize = authorize
        self.max_connections = max_connections
        self.max_per_ip = max_per_ip
        self.publish_timeout = publish_timeout
        self.connections: set[RtmpConnection] = set()
        #: Open connections per client address (entries removed at zero).
        self.per_ip: dict[str, int] = {}
        self.refused = 0
        self._servers: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if self.port is not None:
            server = await asyncio.start_server(self._accept, self.host, self.port)
            self._servers.append(server)
            self.port = server.sockets[0].getsockname()[1]
            log.info("RTMP ingest on %s:%d", self.host, self.port)
        if self.tls is not None:
            server = await asyncio.start_server(
                self._accept,
                self.host,
                self.tls_port,
                ssl=self.tls,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
            self._servers.append(server)
            self.tls_port = server.sockets[0].getsockname()[1]
            log.info("RTMPS ingest on %s:%d", self.host, self.tls_port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        ip = str(peer[0])
        if len(self.connections) >= self.max_connections or self.per_ip.get(ip, 0) >= (
            self.max_per_ip
        ):
            self.refused += 1
            if self.refused in (1, 10) or self.refused % 100 == 0:
                log.warning(
                    "rtmp %s:%s: refused: too many connections (%d open, %d from this address;"
                    " %d refused so far)",
                    ip,
                    peer[1] if len(peer) > 1 else 0,
                    len(self.connections),
                    self.per_ip.get(ip, 0),
                    self.refused,
                )
            writer.transport.abort()
            return
        conn = RtmpConnection(reader, writer, self.authorize, self)
        self.connections.add(conn)
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            self._tasks.discard(task)
            left = self.per_ip.get(ip, 1) - 1
            if left > 0:
                self.per_ip[ip] = left
            else:
                self.per_ip.pop(ip, None)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        # Abort the sockets so every connection ends its own way (publisher detached).
        for conn in list(self.connections):
            conn.writer.transport.abort()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
