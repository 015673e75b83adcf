"""Property-based fuzzing (hypothesis) of everything that parses hostile input.

Unit level: the AMF0 decoder, the relay framing decoder, and the RTMP chunk reader (a real
in-process RtmpServer with real PublishSessions on a real StreamHub, fed over a socket).
Real node: mutated WHEP SDP offers, mutated classroom WebSocket JSON and Range headers
(only 4xx, an error message or a closed socket; the node keeps serving, and its log shows
no traceback: the harness checks).

Profiles: "ci" (default: ~100 examples, no deadline) and "long" (scripts/fuzz.sh).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airclass_media.hub import StreamHub
from airclass_media.ingest import PublishSession
from airclass_media.packets import MediaPacket
from airclass_media.rtmp import amf0
from airclass_media.rtmp.server import PublishRejected, RtmpServer
from relay import framing

from .classroom_support import WS, Api, add_teacher
from .support import TEST_HOST, NodeProcess, http_json

settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("AIRCLASS_FUZZ_PROFILE", "ci"))
NODE_TESTS = settings(
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

# -- values -------------------------------------------------------------------------------
amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, byte) edits: 0 replace, 1 insert, 2 delete, 3 truncate."""
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        pos %= len(buf)
        if kind == 0:
            buf[pos] = value
        elif kind == 1:
            buf.insert(pos, value)
        elif kind == 2:
            del buf[pos]
        else:
            del buf[pos:]
    return bytes(buf)


edit_lists = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6
)


# -- AMF0 -----------------------------------------------------------------------------------
@given(st.binary(max_size=2000))
def test_amf0_decoder_takes_any_bytes(data):
    try:
        amf0.decode_all(data)
    except amf0.AMFError:
        pass


@given(st.lists(amf_values, min_size=1, max_size=5), edit_lists)
def test_amf0_round_trip_and_mutations(values, edits):
    encoded = amf0.encode(*values)
    assert amf0.decode_all(encoded) == [_amf_normal(v) for v in values]
    try:
        amf0.decode_all(mutate(encoded, edits))
    except amf0.AMFError:
        pass


@given(st.integers(1, 3000), st.sampled_from([b"\x03\x00\x01k", b"\x0a\x00\x00\x00\x01"]))
def test_amf0_nesting_is_bounded(depth, level):
    try:
        amf0.decode_all(level * depth)
    except amf0.AMFError:
        pass


def _amf_normal(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_amf_normal(v) for v in value]
    return {k: _amf_normal(v) for k, v in value.items()}


# -- relay framing ---------------------------------------------------------------------------
@given(st.binary(max_size=200))
def test_relay_decoder_takes_any_bytes(data):
    try:
        framing.decode(data)
    except framing.FramingError:
        pass


@given(
    st.sampled_from(["video", "audio", "aac"]),
    st.binary(max_size=300),
    st.integers(-(1 << 62), 1 << 62),
    st.booleans(),
    edit_lists,
)
def test_relay_frames_round_trip_and_mutations(kind, payload, pts, key, edits):
    packet = MediaPacket(kind, payload, pts, pts, key, 0.0)
    frame = framing.encode_packet(packet)
    decoded = framing.decode(frame)
    assert decoded.packet.data == payload and decoded.packet.pts == pts
    try:
        framing.decode(mutate(frame, edits))
    except framing.FramingError:
        pass
    header = bytearray(frame[: framing.HEADER_SIZE])
    header[0] = framing.FRAME_INFO
    body = mutate(b'{"live": true, "publisher": "x", "info": {}}', edits)
    header[-4:] = struct.pack(">I", len(body))
    try:
        framing.decode(bytes(header) + body)
    except framing.FramingError:
        pass


# -- RTMP chunk reader -----------------------------------------------------------------------
def _chunked(csid: int, fmt: int, type_id: int, payload: bytes, size: int, ts: int) -> bytes:
    if fmt == 0:
        header = ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([type_id])
        header += struct.pack("<I", 1)
    elif fmt == 1:
        header = ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big") + bytes([type_id])
    elif fmt == 2:
        header = ts.to_bytes(3, "big")
    else:
        header = b""
    basic = bytes([(fmt << 6) | csid]) if csid < 64 else bytes([fmt << 6, csid - 64])
    out = [basic + header, payload[:size]]
    for pos in range(size, len(payload), size):
        out += [bytes([0xC0 | (csid if csid < 64 else 0)]), payload[pos : pos + size]]
    return b"".join(out)


GOOD_START = b"".join(
    _chunked(3, 0, 20, amf0.encode(*values), 128, 0)
    for values in (
        ("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"}),
        ("createStream", 2.0, None),
        ("publish", 3.0, None, "fuzz?token=ok", "live"),
    )
)
rtmp_messages = st.tuples(
    st.sampled_from([2, 3, 4, 5, 6, 7, 8, 63, 64, 300]),
    st.sampled_from([0, 0, 0, 1, 2, 3]),
    st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 15, 17, 18, 20, 99]),
    st.one_of(
        st.binary(max_size=600),
        st.lists(amf_values, max_size=4).map(lambda v: amf0.encode(*v)),
        st.binary(max_size=40).map(lambda b: b"\x17\x00\x00\x00\x00\x01" + b),
        st.binary(max_size=40).map(lambda b: b"\xaf\x00" + b),
    ),
    st.sampled_from([128, 60, 4096]),
    st.integers(0, 0xFFFFFF),
)


@given(
    st.booleans(),
    st.lists(rtmp_messages, max_size=8),
    st.binary(max_size=64),
    edit_lists,
)
def test_rtmp_chunk_reader_takes_any_stream(good_start, messages, tail, edits):
    """Whatever follows the handshake, the connection ends or goes on without an
    exception escaping the session, and the stream is released."""
    body = GOOD_START if good_start else b""
    body += b"".join(_chunked(*m) for m in messages) + tail
    asyncio.run(_rtmp_session(mutate(body, edits) if edits and not good_start else body))


async def _rtmp_session(body: bytes) -> None:
    hub = StreamHub()
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(str(ctx.get("exception", ctx))))
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR or record.exc_info:
                records.append(record)

    handler = Collect()
    logging.getLogger().addHandler(handler)
    sessions: list[PublishSession] = []

    async def authorize(request) -> PublishSession:
        name = request.stream_key.split("?")[0]
        if not name or len(name) > 64:
            raise PublishRejected("NetStream.Publish.BadName", "bad name")
        session = PublishSession(hub.stream(name), "fuzz")
        sessions.append(session)
        return session

    server = RtmpServer(TEST_HOST, 0, authorize)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection(TEST_HOST, server.port)
        writer.write(b"\x03" + bytes(1536))
        await reader.readexactly(1 + 2 * 1536)
        writer.write(bytes(1536) + body)
        writer.write_eof()
        try:
            while await asyncio.wait_for(reader.read(65536), 10):
                pass
        except ConnectionError:
            pass
        writer.close()
    finally:
        await server.stop()
        logging.getLogger().removeHandler(handler)
    assert not errors, errors
    assert not records, [r.getMessage() for r in records]
    assert not server.connections and not server.per_ip
    assert all(s.closed for s in sessions)
    assert all(not s.live for s in hub.streams())


# -- a real node ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory):
    """A production-mode node with a teacher account, a class session and a stream."""
    tmp = tmp_path_factory.mktemp("fuzz")
    node = NodeProcess(tmp, dev=False, name="fuzz")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def class_session(fuzz_node):
    async def make() -> dict:
        async with aiohttp.ClientSession() as http:
            api = Api(http, fuzz_node.url)
            token = await api.login("kim")
            data = await api.ok(
                "POST", "/api/sessions", {"title": "Fuzz", "stream": "fuzzed"}, token=token
            )
            student = await api.join(data["join_code"], "Fuzzy")
            return {"teacher": token, "sid": data["session_id"], "student": student}

    return asyncio.run(make())


@pytest.fixture(scope="module")
def offer() -> str:
    """A real browser-like offer (aiortc, video + audio recvonly)."""
    from aiortc import RTCPeerConnection

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


sdp_line_edits = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 1000), st.text(max_size=40), st.integers(0, 255)),
    max_size=5,
)


def mutate_sdp(sdp: str, edits) -> bytes:
    lines = sdp.split("\r\n")
    for kind, pos, text, byte in edits:
        if not lines:
            break
        i = pos % len(lines)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[i])
        elif kind == 2:
            lines[i] = lines[i][: len(lines[i]) // 2] + text
        elif kind == 3:
            lines.insert(i, text)
        else:
            raw = bytearray(lines[i].encode())
            if raw:
                raw[pos % len(raw)] = byte
            lines[i] = raw.decode(errors="replace")
    return "\r\n".join(lines).encode()


@NODE_TESTS
@given(edits=sdp_line_edits)
def test_whep_takes_mutated_offers(fuzz_node, class_session, offer, edits):
    node = fuzz_node
    token = class_session["student"]["token"]
    url = class_session["student"].get("whep_url") or f"{node.url}/live/fuzzed/whep"
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    status, body, hdrs = http_json("POST", url, mutate_sdp(offer, edits), headers, timeout=30)
    assert status == 201 or 400 <= status < 500, (status, body)
    if status == 201:  # still a valid offer: end that session
        location = hdrs["Location"]
        target = location if location.startswith("http") else node.url + location
        assert http_json("DELETE", target, headers=headers)[0] in (200, 204)
    assert http_json("GET", f"{node.url}/api/health")[0] == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
ws_types = st.sampled_from(
    ["ping", "chat", "presence", "quiz_answer", "mute", "delete_chat", "hand", "x", ""]
)
ws_messages = st.one_of(
    st.builds(
        lambda t, extra: {**extra, "type": t},
        st.one_of(ws_types, json_values),
        st.dictionaries(
            st.sampled_from(
                [
                    "text",
                    "quiz_id",
                    "answer",
                    "student_id",
                    "muted",
                    "visible",
                    "playing",
                    "message_id",
                    "ref",
                    "t",
                ]
            ),
            json_values,
            max_size=4,
        ),
    ),  # fmt: skip
    json_values,
)


@NODE_TESTS
@given(messages=st.lists(st.one_of(ws_messages.map(json.dumps), st.text(max_size=50)), max_size=3))
def test_classroom_websocket_takes_mutated_json(fuzz_node, class_session, messages):
    asyncio.run(_ws_round(fuzz_node, class_session, messages))


async def _ws_round(node: NodeProcess, session: dict, messages: list[str]) -> None:
    student = session["student"]
    async with aiohttp.ClientSession() as http:
        ws = await _connect(http, node, session["sid"], student["token"])
        try:
            for text in messages:
                await ws.ws.send_str(text)
            # Then a ping: answered (every fuzzed message got its error or was taken), or
            # the node closed this socket (rate limit, or a message it would not take).
            try:
                reply = await ws.request(type="ping", t=1)
                assert reply["type"] in ("pong", "error"), reply
            except ConnectionError:
                pass
            except (TimeoutError, ConnectionResetError, aiohttp.ClientError):
                assert ws.closed, "no answer and not closed"
            for m in ws.messages:
                assert m.get("status", 400) < 500, m
        finally:
            await ws.close()
        status, _ = await Api(http, node.url).call("GET", "/api/health")
        assert status == 200


async def _connect(http, node: NodeProcess, sid: str, token: str) -> WS:
    """A WebSocket for this student (retried while the node still counts the previous one)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            return await WS.connect(http, node.url, sid, token, label="fuzz")
        except (aiohttp.WSServerHandshakeError, ConnectionError, TimeoutError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
ranges = st.one_of(
    st.builds(
        lambda a, b: f"bytes={a}-{b}",
        st.one_of(st.integers(-5, 1 << 40), st.just("")),
        st.one_of(st.integers(-5, 1 << 40), st.just("")),
    ),
    st.builds(lambda parts: "bytes=" + ",".join(parts), st.lists(header_text, max_size=4)),
    header_text,
)


@NODE_TESTS
@given(value=ranges)
def test_range_headers(fuzz_node, value):
    """Range on a static file (served like the signed VOD files: aiohttp FileResponse)."""
    url = f"{fuzz_node.url}/static/vod.js"
    status, _, _ = http_json("GET", url, headers={"Range": value.strip()})
    assert status in (200, 206, 416) or 400 <= status < 500, status
