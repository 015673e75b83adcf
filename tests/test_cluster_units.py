"""Fast in-process tests of the cluster's parts: framing, signing, assignment, relay logic."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from airclass_media.hub import StreamHub
from airclass_media.packets import MediaPacket, StreamInfo
from airclass_web.cluster.assign import Assigner, NoCapacity
from airclass_web.cluster.registry import InProcessRegistry, NodeRecord, RedisRegistry
from airclass_web.cluster.signing import SignatureError, Signer
from relay import framing
from relay.client import RelayClient
from relay.manager import RelayManager
from relay.server import RelaySender

from .support import async_wait_for


def sub(port: int, capacity: int = 150, load: int = 0, viewers=()) -> NodeRecord:
    return NodeRecord(
        f"node-{port}", "sub", f"http://10.0.0.1:{port}", capacity, load, viewers=list(viewers)
    )


# -- framing ---------------------------------------------------------------------------
def test_packet_and_info_frames_round_trip():
    packet = MediaPacket("video", b"\x00\x00\x00\x01\x65abc", 1_000_033, 1_000_000, True)
    frame = framing.decode(framing.encode_packet(packet, cached=True))
    assert isinstance(frame, framing.PacketFrame) and frame.cached
    got = frame.packet
    assert (got.kind, got.data, got.pts, got.dts, got.keyframe) == (
        "video", packet.data, 1_000_033, 1_000_000, True
    )  # fmt: skip
    assert abs(frame.sent_at - time.time()) < 1
    info = StreamInfo(640, 360, "high", b"\x67sps", b"\x68pps", b"\x12\x10", 44100, 2)
    decoded = framing.decode(framing.encode_info(True, "rtmp-1", info))
    assert isinstance(decoded, framing.InfoFrame)
    assert decoded.live and decoded.publisher == "rtmp-1" and decoded.info == info
    for bad in (b"", framing.encode_packet(packet)[:-1], b"\x09" + bytes(30)):
        with pytest.raises(framing.FramingError):
            framing.decode(bad)


# -- signing ---------------------------------------------------------------------------
def test_signed_requests_refuse_forgery_staleness_and_replay():
    main, node = Signer("s3cret"), Signer("s3cret", "node-a")
    headers = node.request_headers("GET", "/cluster/relay/x")
    assert main.verify_request("GET", "/cluster/relay/x", headers) == "node-a"
    with pytest.raises(SignatureError, match="replayed"):
        main.verify_request("GET", "/cluster/relay/x", headers)
    fresh = node.request_headers("GET", "/cluster/relay/x")
    with pytest.raises(SignatureError, match="bad signature"):
        main.verify_request("GET", "/cluster/relay/y", fresh)  # another path
    stale = {**fresh, "X-Airclass-Time": str(time.time() - 120)}
    with pytest.raises(SignatureError, match="off"):
        main.verify_request("GET", "/cluster/relay/x", stale)
    with pytest.raises(SignatureError, match="unsigned"):
        main.verify_request("GET", "/cluster/relay/x", {})
    sealed = main.seal({"a": 1})
    assert main.unseal(sealed) == {"a": 1}
    with pytest.raises(SignatureError):
        Signer("other").unseal(sealed)
    with pytest.raises(SignatureError):
        main.unseal(sealed.replace('\\"a\\":1', '\\"a\\":2'))


def test_registry_refuses_bad_and_replayed_records(caplog):
    signer = Signer("s3cret")
    registry = RedisRegistry("redis://unused", signer)
    good = sub(1)
    key = "airclass:node:" + good.node_id
    assert registry._check(key, signer.seal(good.as_dict()).encode()) == good
    assert registry._check(key, Signer("x").seal(good.as_dict()).encode()) is None
    assert registry._check("airclass:node:other", signer.seal(good.as_dict()).encode()) is None
    old = sub(1)
    old.heartbeat_at -= 60
    assert registry._check(key, signer.seal(old.as_dict()).encode()) is None
    assert "refused node entry" in caplog.text


async def test_in_process_registry_expires_silent_nodes():
    registry = InProcessRegistry(ttl=6)
    await registry.publish(sub(1))
    silent = sub(2)
    silent.heartbeat_at -= 7
    await registry.publish(silent)
    assert [n.node_id for n in await registry.nodes()] == ["node-1"]


# -- assignment ------------------------------------------------------------------------
@pytest.mark.parametrize("ports", [(8101, 8102), (40001, 51234), (9000, 9001)])
def test_students_spread_evenly_and_stick(ports):
    assigner = Assigner()
    nodes = [sub(p, capacity=1000) for p in ports]
    placed = {f"s{i}": assigner.choose(f"s{i}", nodes).url for i in range(300)}
    counts = Counter(placed.values())
    assert all(135 <= c <= 165 for c in counts.values()), counts
    # Same student, same sub; also once the sub reports the students as its viewers.
    later = Assigner()
    for node in nodes:
        node.viewers = [u for u, url in placed.items() if url == node.url]
        node.load = len(node.viewers)
    assert all(later.choose(u, nodes).url == url for u, url in placed.items())


def test_full_subs_are_skipped_then_no_capacity():
    assigner = Assigner()
    full, free = sub(1, capacity=2, load=2), sub(2, capacity=3)
    assert {assigner.choose(f"u{i}", [full, free]).url for i in range(3)} == {free.url}
    # Tokens alone fill nothing: `free` is full once its heartbeat reports the three
    # viewer sessions (their WHEP POSTs).
    assert assigner.choose("u4", [full, free]).url == free.url
    free.viewers, free.load = ["u0", "u1", "u2"], 3
    with pytest.raises(NoCapacity) as err:
        assigner.choose("u4", [full, free])
    assert err.value.full
    with pytest.raises(NoCapacity) as err:
        assigner.choose("u5", [NodeRecord("m", "main", "http://m", 150)])
    assert not err.value.full


def test_a_dead_sub_moves_only_its_students():
    nodes = [sub(p, capacity=1000) for p in (1, 2, 3)]
    before = {f"s{i}": Assigner().choose(f"s{i}", nodes).url for i in range(200)}
    after = {u: Assigner().choose(u, nodes[1:]).url for u in before}
    moved = {u for u in before if before[u] != after[u]}
    assert moved == {u for u, url in before.items() if url == nodes[0].url}


# -- relay logic (no network) -------------------------------------------------------------
def _publish_gop(stream, start_us: int, frames: int = 10) -> None:
    for i in range(frames):
        t = start_us + i * 40_000
        stream.publish(MediaPacket("video", b"v%d" % i, t, t, i == 0))
        stream.publish(MediaPacket("audio", b"a%d" % i, t, t, True))


async def test_relay_hands_over_the_gop_and_the_sub_timeline_continues():
    main_hub, sub_hub = StreamHub(), StreamHub()
    source = main_hub.stream("class")
    source.attach_publisher("rtmp-1")
    source.info.sps, source.info.width = b"\x67sps", 640
    _publish_gop(source, 5_000_000)

    mirror = sub_hub.stream("class")
    client = RelayClient(mirror, "http://unused", lambda m, p: {}, http=None)
    viewer = mirror.subscribe(["video", "audio"], with_gop=False)

    async def send(frame: bytes) -> None:
        client._on_frame(framing.decode(frame))

    sender = RelaySender(source, send)
    task = asyncio.ensure_future(sender.run())
    await async_wait_for(lambda: len(viewer), 2, "the relayed keyframe")
    assert mirror.live and mirror.info.width == 640
    first = await viewer.get()
    assert first.kind == "video" and first.keyframe  # starts on the cached keyframe
    _publish_gop(source, 5_400_000, frames=3)
    await async_wait_for(lambda: sender.packets_sent == 10 + 6, 2, "GOP + live packets sent")
    seen = [first]
    while (p := viewer.get_nowait()) is not None:
        seen.append(p)
    sender.close()
    await task
    client._detach()
    assert not mirror.live
    # The handed-over GOP is squeezed 1 ms apart just before the first live packet.
    video = [p.dts for p in seen if p.kind == "video"]
    assert len(video) == 13 and video == sorted(video)
    assert [b - a for a, b in zip(video, video[1:10], strict=False)] == [1000] * 9
    assert [b - a for a, b in zip(video[10:], video[11:], strict=False)] == [40_000] * 2

    # A new relay connection (or a new publisher): the sub timeline keeps going forward.
    last_dts = max(p.dts for p in seen)
    sender = RelaySender(source, send)
    task = asyncio.ensure_future(sender.run())
    _publish_gop(source, 5_520_000, frames=2)
    await async_wait_for(lambda: len(viewer), 2, "packets of the new relay")
    later = viewer.get_nowait()
    assert later is not None and later.dts > last_dts
    sender.close()
    await task


async def test_idle_relay_is_dropped_and_the_stream_forgotten():
    hub = StreamHub()
    manager = RelayManager(hub, "http://127.0.0.1:9", lambda m, p: {}, linger=0.1)
    await manager.start()
    try:
        stream = await manager.resolve("class")  # main unreachable: the relay retries
        assert stream is not None and hub.get("class") is stream
        viewer = stream.subscribe(["video"])
        await asyncio.sleep(1.5)  # nothing must happen: the idle check runs every second
        assert "class" in manager.relays  # a viewer: kept
        viewer.close()
        await async_wait_for(lambda: "class" not in manager.relays, 5, "the idle relay dropped")
        assert hub.get("class") is None
    finally:
        await manager.stop()
