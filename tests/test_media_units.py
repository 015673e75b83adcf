"""Stream hub fan-out rules, and the byte-level parsers of the media path."""

from __future__ import annotations

import asyncio

import pytest

from airclass_media.h264 import AnnexBWriter, parse_avc_config, parse_sps, split_annexb
from airclass_media.hub import StreamBusy, StreamHub, SubscriptionClosed
from airclass_media.packets import MediaPacket
from airclass_media.rtmp import amf0
from airclass_web.auth import split_stream_key

# SPS/PPS of a 1280x720 High profile stream (x264).
SPS = bytes.fromhex("6764001facd9405005bb011000000300100000030300f183119600")
PPS = bytes.fromhex("68ebecb22c")


def video(i: int, keyframe: bool) -> MediaPacket:
    return MediaPacket("video", b"frame%d" % i, i * 33_000, i * 33_000, keyframe)


def test_slow_subscriber_resyncs_on_keyframe_without_hurting_others():
    stream = StreamHub().stream("s")
    stream.attach_publisher("p")
    fast = stream.subscribe(["video"], max_packets=10)
    slow = stream.subscribe(["video"], max_packets=10)
    got = []
    for i in range(95):
        stream.publish(video(i, keyframe=i % 30 == 0))
        packet = fast.get_nowait()  # the fast one keeps up
        got.append(packet.data)
    assert got == [b"frame%d" % i for i in range(95)]
    # The slow one never held more than its bound, dropped what it could not take, and
    # what it holds now starts on a keyframe.
    assert len(slow) <= 10 and slow.dropped > 0 and slow.resyncs > 0
    first = slow.get_nowait()
    assert first.keyframe and first.data == b"frame90"


def test_new_subscriber_gets_cached_gop_then_live():
    stream = StreamHub().stream("s")
    stream.attach_publisher("p")
    for i in range(40):
        stream.publish(video(i, keyframe=i % 30 == 0))
    sub = stream.subscribe(["video"])
    assert [p.data for p in sub.backlog] == [b"frame%d" % i for i in range(30, 40)]
    stream.publish(video(40, keyframe=False))
    assert sub.get_nowait().data == b"frame40"
    # Without a cached GOP a subscriber waits for the next keyframe.
    audio_only = stream.subscribe(["audio"])
    assert audio_only.backlog == []


async def test_get_waits_and_close_wakes():
    stream = StreamHub().stream("s")
    sub = stream.subscribe(["video"], with_gop=False)
    waiter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    stream.publish(video(0, keyframe=True))
    assert (await asyncio.wait_for(waiter, 1)).data == b"frame0"
    waiter = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(waiter, 1)
    assert stream.subscriber_count == 0


def test_one_publisher_per_stream_and_continuous_timeline():
    hub = StreamHub()
    events = []
    hub.add_listener(lambda event, s: events.append(event))
    stream = hub.stream("s")
    stream.attach_publisher("a")
    with pytest.raises(StreamBusy):
        stream.attach_publisher("b")
    first = stream.timeline(5_000_000)
    assert first == 0
    stream.publish(MediaPacket("video", b"x", 2_000_000, 2_000_000, True))
    stream.detach_publisher("a")
    stream.attach_publisher("b")
    resumed = stream.timeline(0)  # the new encoder restarts its clock at 0
    assert resumed > 2_000_000  # ... but the stream timeline goes on
    assert events == ["live", "offline", "live"]


def test_sps_and_annexb_conversion():
    info = parse_sps(SPS)
    assert (info.width, info.height, info.profile) == (1280, 720, "high")
    record = (
        bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1])
        + len(SPS).to_bytes(2, "big")
        + SPS
        + bytes([1])
        + len(PPS).to_bytes(2, "big")
        + PPS
    )
    config = parse_avc_config(record)
    assert config.length_size == 4 and config.sps == [SPS] and config.pps == [PPS]
    idr = b"\x65\x88\x84\x00"
    data, has_idr = AnnexBWriter(config).convert(len(idr).to_bytes(4, "big") + idr)
    assert has_idr
    assert split_annexb(data) == [SPS, PPS, idr]  # parameter sets in front of the IDR


def test_amf0_round_trip_and_garbage():
    values = ["connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live", "n": None}, True]
    assert amf0.decode_all(amf0.encode(*values)) == values
    with pytest.raises(amf0.AMFError):
        amf0.decode_all(b"\x02\x00\x10abc")  # string longer than the data
    with pytest.raises(amf0.AMFError):
        amf0.decode_all(b"\x11")  # unsupported marker


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("math1?token=abc.def.ghi", ("math1", "abc.def.ghi")),
        ("math1?jwt=abc.def.ghi&x=1", ("math1", "abc.def.ghi")),
        ("math1.abc.def.ghi", ("math1", "abc.def.ghi")),
        ("math1", ("math1", "")),
    ],
)
def test_stream_key_forms(key, expected):
    assert split_stream_key(key) == expected


def test_squeezed_replay_is_monotonic_after_what_was_sent():
    from airclass_media.fanout import CATCH_UP_STEP_US, squeeze

    gop = [video(i, keyframe=i == 0) for i in range(30)]
    fresh = [pts for _, pts in squeeze(gop, None)]
    assert fresh[-1] == gop[-1].pts  # ends on the newest frame: live latency
    assert all(b - a == CATCH_UP_STEP_US for a, b in zip(fresh, fresh[1:], strict=False))
    # A viewer that was already sent the second newest frame: strictly after it.
    after = gop[-2].pts
    replay = [pts for _, pts in squeeze(gop, after)]
    ticks = [pts * 90_000 // 1_000_000 for pts in replay]
    assert replay[0] > after and ticks == sorted(set(ticks))  # distinct RTP timestamps
    assert replay[-1] < gop[-1].pts  # all before the next live frame
