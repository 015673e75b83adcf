"""H.264 bitstream handling: AVCC (FLV/MP4) -> Annex-B (RTP), SPS fields.

Written here rather than with PyAV's ``h264_mp4toannexb`` filter because that filter
needs a codec context carrying the AVCC extradata, while RTMP gives us the
AVCDecoderConfigurationRecord as a separate message that may change mid-stream
(publisher reconnects, resolution changes). The conversion is a byte rewrite.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

START_CODE = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS, NAL_AUD = 5, 7, 8, 9

PROFILES = {
    66: "baseline",
    77: "main",
    88: "extended",
    100: "high",
    110: "high10",
    122: "high422",
    244: "high444",
}


class H264Error(ValueError):
    """Malformed H.264 data."""


@dataclass(slots=True)
class AvcConfig:
    length_size: int
    sps: list[bytes]
    pps: list[bytes]


def parse_avc_config(record: bytes) -> AvcConfig:
    """Parse an AVCDecoderConfigurationRecord (ISO/IEC 14496-15)."""
    if len(record) < 7 or record[0] != 1:
        raise H264Error("bad AVCDecoderConfigurationRecord")
    length_size = (record[4] & 0x03) + 1
    pos = 5
    sps: list[bytes] = []
    pps: list[bytes] = []
    for target, count_mask in ((sps, 0x1F), (pps, 0xFF)):
        if pos >= len(record):
            raise H264Error("truncated AVCDecoderConfigurationRecord")
        count = record[pos] & count_mask
        pos += 1
        for _ in range(count):
            if pos + 2 > len(record):
                raise H264Error("truncated AVCDecoderConfigurationRecord")
            (n,) = struct.unpack_from(">H", record, pos)
            target.append(record[pos + 2 : pos + 2 + n])
            pos += 2 + n
    if not sps or not pps:
        raise H264Error("AVCDecoderConfigurationRecord without SPS/PPS")
    return AvcConfig(length_size, sps, pps)


def split_avcc(data: bytes, length_size: int) -> list[bytes]:
    """NAL units of a length-prefixed (AVCC) access unit."""
    nals = []
    pos = 0
    end = len(data)
    while pos + length_size <= end:
        n = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > end:
            raise H264Error("bad NAL unit length in AVCC data")
        nals.append(data[pos : pos + n])
        pos += n
    return nals


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B byte stream (start codes removed)."""
    nals = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = data.find(b"\x00\x00\x01", start)
        end = len(data) if j < 0 else (j - 1 if data[j - 1] == 0 else j)
        if end > start:
            nals.append(data[start:end])
        i = j
    return nals


class AnnexBWriter:
    """Turn AVCC access units into Annex-B ones, with SPS/PPS before every IDR."""

    def __init__(self, config: AvcConfig) -> None:
        self.config = config

    def convert(self, data: bytes) -> tuple[bytes, bool]:
        """(Annex-B access unit, contains an IDR)."""
        nals = split_avcc(data, self.config.length_size)
        has_idr = False
        has_params = False
        out = []
        for nal in nals:
            kind = nal[0] & 0x1F
            if kind == NAL_AUD:
                continue
            if kind == NAL_IDR:
                has_idr = True
            elif kind == NAL_SPS:
                has_params = True
                self.config.sps = [nal]
            elif kind == NAL_PPS:
                self.config.pps = [nal]
            out.append(nal)
        if has_idr and not has_params:
            out = self.config.sps + self.config.pps + out
        return b"".join(START_CODE + nal for nal in out), has_idr


# -- SPS -----------------------------------------------------------------------------
class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.pos >> 3
        if byte >= len(self.data):
            raise H264Error("truncated SPS")
        value = (self.data[byte] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise H264Error("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


@dataclass(slots=True)
class SpsInfo:
    width: int
    height: int
    profile: str
    profile_idc: int
    level_idc: int


def parse_sps(sps: bytes) -> SpsInfo:
    """Width, height, profile and level of a sequence parameter set NAL unit."""
    r = _Bits(_unescape(sps[1:]))
    profile_idc = r.bits(8)
    r.bits(8)  # constraint flags
    level_idc = r.bits(8)
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    if profile_idc in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            r.bit()
        r.ue()
        r.ue()
        r.bit()
        if r.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bit():
                    size = 16 if i < 6 else 64
                    last = nxt = 8
                    for _ in range(size):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.bit()
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.bit()
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bit()
    if not frame_mbs_only:
        r.bit()
    r.bit()  # direct_8x8_inference
    crop = (0, 0, 0, 0)
    if r.bit():
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    sub_w = 2 if chroma_format_idc in (1, 2) else 1
    sub_h = 2 if chroma_format_idc == 1 else 1
    height_factor = 2 - frame_mbs_only
    width = width_mbs * 16 - sub_w * (crop[0] + crop[1])
    height = height_map_units * 16 * height_factor - sub_h * height_factor * (crop[2] + crop[3])
    return SpsInfo(
        width, height, PROFILES.get(profile_idc, str(profile_idc)), profile_idc, level_idc
    )


#: RTP payload types of RFC 6184 used when packetizing.
STAP_A = 24
FU_A = 28


def rtp_payloads(access_unit: bytes, max_size: int) -> list[bytes]:
    """RTP payloads (RFC 6184, packetization-mode 1) of one Annex-B access unit.

    Small NAL units travel together in STAP-A packets; a NAL unit larger than `max_size`
    is cut into FU-A fragments that are ALL exactly `max_size` bytes but the last. Equal
    sizes let a frame go out in one UDP GSO call (equal-size segments); aiortc's own
    packetizer spreads the bytes evenly, so its fragments differ by one byte.
    """
    payloads: list[bytes] = []
    pending: list[bytes] = []  # small NAL units waiting to be aggregated
    pending_size = 1  # the STAP-A header byte

    def flush() -> None:
        nonlocal pending, pending_size
        if len(pending) == 1:
            payloads.append(pending[0])
        elif pending:
            nri = max(nal[0] & 0x60 for nal in pending)
            parts = [bytes([nri | STAP_A])]
            for nal in pending:
                parts.append(len(nal).to_bytes(2, "big"))
                parts.append(nal)
            payloads.append(b"".join(parts))
        pending = []
        pending_size = 1

    for nal in split_annexb(access_unit):
        if len(nal) > max_size:
            flush()
            indicator = (nal[0] & 0xE0) | FU_A
            nal_type = nal[0] & 0x1F
            chunk = max_size - 2
            body = memoryview(nal)[1:]
            last = len(body) - 1
            for pos in range(0, len(body), chunk):
                flags = (0x80 if pos == 0 else 0) | (0x40 if pos + chunk > last else 0)
                payloads.append(bytes((indicator, flags | nal_type)) + body[pos : pos + chunk])
            continue
        if pending_size + 2 + len(nal) > max_size:
            flush()
        pending.append(nal)
        pending_size += 2 + len(nal)
    flush()
    return payloads
