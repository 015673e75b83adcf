"""AMF0 encoding and decoding: the subset RTMP commands use."""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END = (
    0x00,
    0x01,
    0x02,
    0x03,
    0x05,
    0x06,
    0x08,
    0x09,
)
STRICT_ARRAY, DATE, LONG_STRING = 0x0A, 0x0B, 0x0C
#: Deepest nesting of objects and arrays accepted (RTMP commands use 2 or 3).
MAX_DEPTH = 32


class AMFError(ValueError):
    """Malformed AMF0 data."""


def encode(*values: Any) -> bytes:
    return b"".join(_encode_one(v) for v in values)


def _encode_string_body(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _encode_one(value: Any) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([BOOLEAN, 1 if value else 0])
    if isinstance(value, int | float):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + struct.pack(">I", len(raw)) + raw
        return bytes([STRING]) + _encode_string_body(value)
    if isinstance(value, dict):
        body = b"".join(_encode_string_body(str(k)) + _encode_one(v) for k, v in value.items())
        return bytes([OBJECT]) + body + b"\x00\x00" + bytes([OBJECT_END])
    if isinstance(value, list | tuple):
        return bytes([STRICT_ARRAY]) + struct.pack(">I", len(value)) + encode(*value)
    raise AMFError(f"cannot encode {type(value).__name__}")


def decode_all(data: bytes) -> list[Any]:
    """Every value in data, in order."""
    values: list[Any] = []
    pos = 0
    while pos < len(data):
        value, pos = _decode(data, pos)
        values.append(value)
    return values


def _need(data: bytes, pos: int, n: int) -> None:
    if pos + n > len(data):
        raise AMFError("truncated AMF0 data")


def _decode_string_body(data: bytes, pos: int) -> tuple[str, int]:
    _need(data, pos, 2)
    (n,) = struct.unpack_from(">H", data, pos)
    _need(data, pos + 2, n)
    return data[pos + 2 : pos + 2 + n].decode(errors="replace"), pos + 2 + n


def _decode_properties(data: bytes, pos: int, depth: int) -> tuple[dict, int]:
    obj: dict[str, Any] = {}
    while True:
        key, pos = _decode_string_body(data, pos)
        _need(data, pos, 1)
        if key == "" and data[pos] == OBJECT_END:
            return obj, pos + 1
        obj[key], pos = _decode(data, pos, depth + 1)


def _decode(data: bytes, pos: int, depth: int = 0) -> tuple[Any, int]:
    """One value at pos; objects and arrays nest at most MAX_DEPTH deep."""
    if depth > MAX_DEPTH:
        raise AMFError("AMF0 nesting too deep")
    _need(data, pos, 1)
    marker = data[pos]
    pos += 1
    if marker == NUMBER:
        _need(data, pos, 8)
        return struct.unpack_from(">d", data, pos)[0], pos + 8
    if marker == BOOLEAN:
        _need(data, pos, 1)
        return data[pos] != 0, pos + 1
    if marker == STRING:
        return _decode_string_body(data, pos)
    if marker == LONG_STRING:
        _need(data, pos, 4)
        (n,) = struct.unpack_from(">I", data, pos)
        _need(data, pos + 4, n)
        return data[pos + 4 : pos + 4 + n].decode(errors="replace"), pos + 4 + n
    if marker == OBJECT:
        return _decode_properties(data, pos, depth)
    if marker == ECMA_ARRAY:
        _need(data, pos, 4)
        return _decode_properties(data, pos + 4, depth)
    if marker == STRICT_ARRAY:
        _need(data, pos, 4)
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        items = []
        for _ in range(min(n, 65536)):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker in (NULL, UNDEFINED):
        return None, pos
    if marker == DATE:
        _need(data, pos, 10)
        return struct.unpack_from(">d", data, pos)[0], pos + 10
    raise AMFError(f"unsupported AMF0 marker 0x{marker:02x}")
