"""What a teacher's encoder needs to go live, and QR codes that carry it.

OBS asks for a Server and a Stream key; phone RTMP apps take one URL, and Larix
Broadcaster configures itself from a `larix://set/v1` link scanned as a QR code. The
stream key part is ``NAME.sk_...``: the stream name, then the teacher's lasting key
(classroom/stream_keys.py), a form every RTMP app can send.
"""

from __future__ import annotations

import io
from urllib.parse import quote

import segno

#: Join codes as sessions make them (8 letters and digits, no 0/1/O/I).
JOIN_CODE_CHARS = frozenset("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")


def publish_details(rtmp_base: str, stream: str, key: str | None) -> dict:
    """Server, stream key, the full RTMP URL and the Larix link (key None: not shown)."""
    if key is None:
        return {"server": rtmp_base, "stream_key": None, "rtmp_url": None, "larix_url": None}
    stream_key = f"{stream}.{key}"
    rtmp_url = f"{rtmp_base}/{stream_key}"
    larix = (
        "larix://set/v1?conn[][url]="
        + quote(rtmp_url, safe="")
        + "&conn[][name]="
        + quote(f"AIRClass {stream}", safe="")
        + "&conn[][overwrite]=on"
    )
    return {"server": rtmp_base, "stream_key": stream_key, "rtmp_url": rtmp_url, "larix_url": larix}


def valid_join_code(code: str) -> bool:
    return 4 <= len(code) <= 16 and set(code) <= JOIN_CODE_CHARS


def qr_svg(text: str) -> bytes:
    """A QR code of the text as SVG (black on white, a quiet zone of 4 modules)."""
    out = io.BytesIO()
    segno.make(text, error="m", micro=False).save(out, kind="svg", scale=8, border=4)
    return out.getvalue()
