"""Join a recording's segments into one MP4 with its index in front (``+faststart``).

A remux: packets are copied from the segment files (read until their last complete
fragment, so a segment cut by a crash is used up to there) and shifted by the segment's
start on the recording timeline. The first segment may begin with a little video from
before the record button (the hub's cached GOP, so playback starts on a keyframe): those
packets get negative timestamps and the muxer writes an edit list, so players start at
the moment recording was requested.

`build_mp4_isolated` runs the remux in a child process (``python -m recorder.finalize``)
at low priority: an hour of video is ~250k packets of Python-level work that would
otherwise hold the GIL the node's live media needs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SegmentProbe:
    """What a segment file holds, read by demuxing it (tolerates a cut-off tail)."""

    duration_us: int
    video_packets: int
    audio_packets: int


def probe_segment(path: Path) -> SegmentProbe | None:
    """Duration and packet counts of a segment, None when it holds no video."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        log.warning("segment %s unreadable: %s", path, exc)
        return None
    end_us = 0
    counts = {"video": 0, "audio": 0}
    try:
        for packet in _packets(container, path):
            if packet.pts is None:
                continue
            tb = packet.time_base
            end = (packet.pts + (packet.duration or 0)) * tb
            end_us = max(end_us, int(end * 1_000_000))
            counts[packet.stream.type] = counts.get(packet.stream.type, 0) + 1
    finally:
        container.close()
    if not counts["video"]:
        return None
    return SegmentProbe(end_us, counts["video"], counts["audio"])


def _packets(container, path: Path):
    """Demux until the end or the first damaged fragment."""
    iterator = container.demux()
    while True:
        try:
            packet = next(iterator)
        except StopIteration:
            return
        except (av.FFmpegError, OSError, EOFError) as exc:
            log.info("segment %s: reading stopped at a damaged fragment: %s", path, exc)
            return
        if packet.size:
            yield packet


def build_mp4(directory: Path, segments: list[dict], out_name: str) -> dict:
    """Write ``directory/out_name`` from the segments; returns duration (s) and size.

    segments: the metadata entries (``file``, ``start_us`` relative to the recording
    start). Segments whose audio configuration differs from the first one with audio
    contribute their video only.
    """
    tmp = directory / (out_name + ".tmp")
    output = av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"})
    out_video = out_audio = None
    audio_config: bytes | None = None
    last_dts: dict[str, int] = {}
    end_us = 0
    start_us = 0
    packets = 0
    try:
        for entry in segments:
            path = directory / entry["file"]
            if not path.exists():
                continue
            try:
                container = av.open(str(path))
            except (av.FFmpegError, OSError) as exc:
                log.warning("skipping unreadable segment %s: %s", path, exc)
                continue
            try:
                vin = container.streams.video[0] if container.streams.video else None
                ain = container.streams.audio[0] if container.streams.audio else None
                if vin is None:
                    continue
                if out_video is None:
                    out_video = output.add_stream_from_template(vin)
                use_audio = False
                if ain is not None:
                    config = bytes(ain.codec_context.extradata or b"")
                    if out_audio is None:
                        out_audio = output.add_stream_from_template(ain)
                        audio_config = config
                    use_audio = config == audio_config
                offset_us = int(entry.get("start_us", 0))
                for packet in _packets(container, path):
                    if packet.stream is vin:
                        target, kind = out_video, "video"
                    elif packet.stream is ain and use_audio:
                        target, kind = out_audio, "audio"
                    else:
                        continue
                    if packet.dts is None or packet.pts is None:
                        continue
                    tb = packet.time_base
                    shift = round(offset_us / 1_000_000 / tb)
                    packet.pts += shift
                    packet.dts += shift
                    dts_us = int(packet.dts * tb * 1_000_000)
                    if kind in last_dts and dts_us <= last_dts[kind]:
                        continue  # overlapping or repeated: keep the timeline monotonic
                    last_dts[kind] = dts_us
                    start_us = min(start_us, int(packet.pts * tb * 1_000_000))
                    end = (packet.pts + (packet.duration or 0)) * tb
                    end_us = max(end_us, int(end * 1_000_000))
                    packet.stream = target
                    output.mux(packet)
                    packets += 1
            finally:
                container.close()
    finally:
        output.close()
    if not packets:
        tmp.unlink(missing_ok=True)
        raise ValueError("no playable segment")
    os.replace(tmp, directory / out_name)
    return {
        "duration": round(end_us / 1_000_000, 3),
        "size": (directory / out_name).stat().st_size,
        "packets": packets,
    }


def build_mp4_isolated(
    directory: Path, segments: list[dict], out_name: str, timeout: float = 3600
) -> dict:
    """build_mp4 in a low-priority child process; same result, or RuntimeError."""
    request = json.dumps({"directory": str(directory), "segments": segments, "out": out_name})
    proc = subprocess.run(
        [sys.executable, "-m", "recorder.finalize"],
        input=request,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError("remux failed: " + " | ".join(tail))
    return json.loads(proc.stdout)


def main() -> int:
    """Child process: read the request JSON on stdin, print the result JSON."""
    try:
        os.nice(10)
    except OSError:
        pass
    request = json.loads(sys.stdin.read())
    result = build_mp4(Path(request["directory"]), request["segments"], request["out"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
