"""Binary framing of the relay: one frame per WebSocket message (or length-delimited).

Header (big-endian, 31 bytes), then `length` bytes of payload:

    type:u8  kind:u8  flags:u8  pts:i64  dts:i64  sent_at:f64  length:u32

- type PACKET: a MediaPacket; kind 1 video (H.264 Annex-B), 2 audio (Opus), 3 aac;
  flags bit 0 keyframe, bit 1 replayed from the GOP cache; pts/dts in microseconds on
  the main's stream timeline; sent_at is the main's wall-clock time (time.time()) when
  the main received the packet, so the sub can measure the relay hop.
- type INFO: JSON {"live": bool, "publisher": str, "info": {...}} with the stream's codec
  parameters (bytes fields base64); kind/flags/pts/dts are 0, sent_at the send time.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from dataclasses import dataclass, fields

from airclass_media.packets import MediaPacket, StreamInfo

HEADER = struct.Struct(">BBBqqdI")
HEADER_SIZE = HEADER.size

FRAME_PACKET = 1
FRAME_INFO = 2

KIND_CODES = {"video": 1, "audio": 2, "aac": 3}
CODE_KINDS = {code: kind for kind, code in KIND_CODES.items()}

FLAG_KEYFRAME = 0x01
FLAG_CACHED = 0x02

_BYTES_FIELDS = ("sps", "pps", "aac_config")


class FramingError(ValueError):
    """A frame that cannot be decoded."""


@dataclass(slots=True, frozen=True)
class PacketFrame:
    packet: MediaPacket
    cached: bool
    #: Wall-clock time the main received the packet.
    sent_at: float


@dataclass(slots=True, frozen=True)
class InfoFrame:
    live: bool
    publisher: str
    info: StreamInfo
    sent_at: float
    #: The publisher makes keyframes when asked (WHIP): send KEYFRAME_REQUEST upstream.
    keyframes_on_demand: bool = False


#: Text message a sub (or media worker) sends upstream when one of its viewers lost the
#: picture and the stream's publisher makes keyframes on demand.
KEYFRAME_REQUEST = "keyframe"


def monotonic_to_wall(t: float) -> float:
    """A time.monotonic() value as wall-clock time (read per call: NTP may step the clock)."""
    return t + (time.time() - time.monotonic())


def encode_packet(packet: MediaPacket, cached: bool = False) -> bytes:
    flags = (FLAG_KEYFRAME if packet.keyframe else 0) | (FLAG_CACHED if cached else 0)
    header = HEADER.pack(
        FRAME_PACKET,
        KIND_CODES[packet.kind],
        flags,
        packet.pts,
        packet.dts,
        monotonic_to_wall(packet.received_at),
        len(packet.data),
    )
    return header + packet.data


def info_to_dict(info: StreamInfo) -> dict:
    out = {}
    for f in fields(StreamInfo):
        value = getattr(info, f.name)
        out[f.name] = base64.b64encode(value).decode() if f.name in _BYTES_FIELDS else value
    return out


def info_from_dict(data: dict) -> StreamInfo:
    info = StreamInfo()
    for f in fields(StreamInfo):
        if f.name not in data:
            continue
        value = data[f.name]
        if f.name in _BYTES_FIELDS:
            value = base64.b64decode(value)
        elif not isinstance(value, type(getattr(info, f.name))):
            raise FramingError(f"bad info field {f.name}")
        elif f.name == "renditions" and not all(
            isinstance(r, dict) and isinstance(r.get("name"), str) for r in value
        ):
            raise FramingError("bad info field renditions")
        setattr(info, f.name, value)
    return info


def encode_info(
    live: bool, publisher: str, info: StreamInfo, keyframes_on_demand: bool = False
) -> bytes:
    body = {"live": live, "publisher": publisher, "info": info_to_dict(info)}
    if keyframes_on_demand:
        body["keyframes_on_demand"] = True
    body = json.dumps(body).encode()
    return HEADER.pack(FRAME_INFO, 0, 0, 0, 0, time.time(), len(body)) + body


def decode(frame: bytes, received_at: float | None = None) -> PacketFrame | InfoFrame:
    """One frame; `received_at` (monotonic) becomes the packet's local received time."""
    if len(frame) < HEADER_SIZE:
        raise FramingError(f"frame of {len(frame)} bytes is shorter than its header")
    ftype, kind, flags, pts, dts, sent_at, length = HEADER.unpack_from(frame)
    if len(frame) != HEADER_SIZE + length:
        raise FramingError(f"frame length {len(frame)} != header {HEADER_SIZE} + {length}")
    payload = frame[HEADER_SIZE:]
    if ftype == FRAME_PACKET:
        kind_name = CODE_KINDS.get(kind)
        if kind_name is None:
            raise FramingError(f"unknown packet kind {kind}")
        packet = MediaPacket(
            kind_name,
            payload,
            pts,
            dts,
            bool(flags & FLAG_KEYFRAME),
            time.monotonic() if received_at is None else received_at,
        )
        return PacketFrame(packet, bool(flags & FLAG_CACHED), sent_at)
    if ftype == FRAME_INFO:
        try:
            body = json.loads(payload)
            return InfoFrame(
                bool(body["live"]),
                str(body["publisher"]),
                info_from_dict(body["info"]),
                sent_at,
                bool(body.get("keyframes_on_demand", False)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FramingError(f"bad info frame: {exc}") from exc
    raise FramingError(f"unknown frame type {ftype}")
