"""Recording (issue 5) on real nodes with real ffmpeg publishers and ffprobe.

- 720p: record 10 s; the MP4 holds the publisher's H.264 byte for byte (no re-encode),
  AAC audio, ~10 s, faststart; screenshots are 720p JPEGs; Range requests; auth.
- kill -9 mid-recording: every segment on disk plays; a restarted node recovers the MP4.
- publisher reconnect: one recording continues across it.
- retention deletes an aged recording; the disk guard refuses to start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import av
import pytest

from airclass_media.h264 import parse_avc_config, split_avcc

from .support import async_wait_for, ffmpeg_publish, http_json, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None,
    reason="ffmpeg/ffprobe not installed (scripts/install-system.sh)",
)

PARAMETER_NALS = (7, 8, 9)  # SPS, PPS, AUD: repeated/dropped by design, not content


def teacher_token(node, stream: str) -> str:
    return node.token(stream, user_type="teacher", action="publish")["token"]


def api(node, method: str, path: str, token: str | None = None, body: dict | None = None):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    return http_json(method, node.url + path, data, headers)


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
        + ["-count_packets", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def streams_of(probe: dict, kind: str) -> list[dict]:
    return [s for s in probe["streams"] if s["codec_type"] == kind]


def make_source(path: Path, seconds: int, size: str) -> Path:
    """The same testsrc2 + tone H.264/AAC as support.ffmpeg_publish, encoded once to a file
    so the test can compare the recording with the exact bitstream that was published."""
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
        + ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=30:duration={seconds}"]
        + ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
        + ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60"]
        + ["-pix_fmt", "yuv420p", "-b:v", "1500k", "-c:a", "aac", "-b:a", "96k"]
        + ["-f", "flv", str(path)],
        check=True,
        timeout=120,
    )
    return path


def publish_file(path: Path, url: str) -> subprocess.Popen:
    """Publish a file in real time without re-encoding (ffmpeg -re -c copy)."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(path)]
        + ["-c", "copy", "-f", "flv", url],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def video_nals(path: Path) -> tuple[bytes, list[bytes]]:
    """(SPS from the avcC record, content NAL units of every video packet) of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        config = parse_avc_config(bytes(stream.codec_context.extradata))
        nals = []
        for packet in container.demux(stream):
            if packet.size:
                nals += [
                    n
                    for n in split_avcc(bytes(packet), config.length_size)
                    if n[0] & 0x1F not in PARAMETER_NALS
                ]
    return config.sps[0], nals


def top_level_boxes(path: Path) -> list[str]:
    boxes = []
    with open(path, "rb") as f:
        while header := f.read(8):
            size = int.from_bytes(header[:4], "big")
            boxes.append(header[4:8].decode(errors="replace"))
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            if size < 8:
                break
            f.seek(size - 8, 1)
    return boxes


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def recording_dir(node, recording_id: str) -> Path:
    return node.data_dir / "recordings" / recording_id


def read_meta(directory: Path) -> dict:
    return json.loads((directory / "recording.json").read_text())


def wait_live(node, stream: str, width: int) -> None:
    def live():
        status, body, _ = http_json("GET", f"{node.url}/api/streams/{stream}", timeout=2)
        return status == 200 and body["live"] and body["width"] == width

    wait_for(live, 20, f"stream {stream} live at width {width}")


def test_record_720p_passthrough(node_factory, processes, tmp_path):
    node = node_factory()
    source = make_source(tmp_path / "source.flv", 14, "1280x720")
    token = teacher_token(node, "rec720")
    processes.append(publish_file(source, node.rtmp_url("rec720", token)))
    wait_live(node, "rec720", 1280)

    # The class on this stream: its title names the recording (VOD list and page).
    status, session, _ = api(
        node, "POST", "/api/sessions", token, {"title": "이차방정식 1교시", "stream": "rec720"}
    )
    assert status in (200, 201), session
    cpu_before = cpu_seconds(node.proc.pid)
    status, doc, _ = api(node, "POST", "/api/recording/start", token, {"stream": "rec720"})
    assert status == 201, doc
    rid = doc["id"]
    status, again, _ = api(node, "POST", "/api/recording/start", token, {"stream": "rec720"})
    assert status == 409 and again["code"] == "conflict"

    def recorded(seconds: float = 10.0):
        status, body, _ = api(node, "GET", "/api/recording/status", token)
        assert status == 200, body
        running = [r for r in body["recordings"] if r["id"] == rid]
        return running and running[0]["duration"] >= seconds

    wait_for(recorded, 20, "10 s recorded", interval=0.1)
    status, doc, _ = api(node, "POST", "/api/recording/stop", token, {"stream": "rec720"})
    assert status == 200, doc
    cpu_used = cpu_seconds(node.proc.pid) - cpu_before
    if doc["status"] != "complete":
        wait_for(
            lambda: api(node, "GET", f"/api/recording/{rid}", token)[1]["status"] == "complete",
            15,
            "final MP4",
        )
        doc = api(node, "GET", f"/api/recording/{rid}", token)[1]
    assert doc["status"] == "complete", doc
    directory = recording_dir(node, rid)
    mp4 = directory / "recording.mp4"

    # The MP4: H.264 1280x720 + AAC, ~10 s, index in front.
    probe = ffprobe(mp4)
    (video,) = streams_of(probe, "video")
    (audio,) = streams_of(probe, "audio")
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1280, 720)
    assert audio["codec_name"] == "aac" and int(audio["nb_read_packets"]) > 300
    assert abs(float(probe["format"]["duration"]) - 10.0) <= 1.0, probe["format"]
    boxes = top_level_boxes(mp4)
    assert boxes.index("moov") < boxes.index("mdat"), boxes  # faststart

    # Not re-encoded: same SPS, and every video NAL unit is one the publisher sent.
    source_sps, source_nals = video_nals(source)
    recorded_sps, recorded_nals = video_nals(mp4)
    assert recorded_sps == source_sps
    published = set(source_nals)
    assert len(recorded_nals) >= 280
    assert all(n in published for n in recorded_nals), "video was re-encoded"
    source_probe = streams_of(ffprobe(source), "video")[0]
    assert (video["profile"], video["level"]) == (source_probe["profile"], source_probe["level"])

    # One copy on disk: the segments the MP4 was made of are gone once it exists (their
    # entries stay in the JSON), so the recording takes about the MP4's size, not twice.
    meta = read_meta(directory)
    assert meta["status"] == "complete" and meta["segments"]
    for seg in meta["segments"]:
        assert seg["removed"] and not (directory / seg["file"]).exists()
    assert all("url" not in seg for seg in doc["segments"])
    on_disk = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
    assert on_disk < 1.25 * mp4.stat().st_size + sum(s["size"] for s in doc["screenshots"])
    assert doc["size"] <= on_disk

    # Screenshots: ~1 per 10 s, real 720p JPEGs.
    shots = doc["screenshots"]
    assert 1 <= len(shots) <= 2, shots
    for shot in shots:
        data = (directory / "shots" / shot["file"]).read_bytes()
        assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
        (jpeg,) = ffprobe(directory / "shots" / shot["file"])["streams"]
        assert (jpeg["codec_name"], jpeg["width"], jpeg["height"]) == ("mjpeg", 1280, 720)

    # Range request on the signed MP4 URL: exactly those bytes.
    request = urllib.request.Request(
        node.url + doc["mp4_url"], headers={"Range": "bytes=1000-1999"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes 1000-1999/{mp4.stat().st_size}"
        assert resp.read() == mp4.read_bytes()[1000:2000]
    bad = doc["mp4_url"].replace("sig=", "sig=0")
    assert http_json("GET", node.url + bad)[0] == 401

    # A signed student link opens the metadata; the student token cannot use the API.
    status, link, _ = api(node, "GET", f"/api/recording/{rid}/share?hours=1", token)
    assert status == 200 and link["url"].startswith(f"/vod/{rid}?")
    query = link["url"].split("?", 1)[1]
    status, info, _ = http_json("GET", f"{node.url}/vod/{rid}/info?{query}")
    assert status == 200 and info["mp4_url"]
    assert info["title"] == "이차방정식 1교시"
    assert http_json("GET", f"{node.url}/vod/{rid}?{query}")[0] == 200
    # The player page itself refuses a missing, forged or expired signature.
    assert http_json("GET", f"{node.url}/vod/{rid}")[0] == 401
    assert http_json("GET", f"{node.url}/vod/{rid}?{query.replace('sig=', 'sig=0')}")[0] == 401
    expired = f"exp=1&sig={query.split('sig=')[1]}"
    assert http_json("GET", f"{node.url}/vod/{rid}?{expired}")[0] == 401
    student = node.token("rec720")["token"]
    for method, path, body in (
        ("GET", "/api/recording/list", None),
        ("GET", f"/api/recording/{rid}", None),
        ("POST", "/api/recording/stop", {"stream": "rec720"}),
        ("DELETE", f"/api/recording/{rid}", None),
    ):
        assert api(node, method, path, student, body)[0] == 403, path
        assert api(node, method, path, None, body)[0] == 401, path

    status, listing, _ = api(node, "GET", "/api/recording/list", token)
    assert [r["id"] for r in listing["recordings"]] == [rid]
    seconds_video = float(probe["format"]["duration"])
    print(
        f"\nrecording 720p: node CPU {cpu_used:.2f} s over {seconds_video:.1f} s "
        f"(ingest + Opus + recording), mp4 {mp4.stat().st_size} B, shots {len(shots)}"
    )


def test_kill9_leaves_playable_segments_and_recovers(node_factory, processes, tmp_path):
    node = node_factory(
        "--auto-record", "crash", "--record-segment-seconds", "4", "--screenshot-interval", "4"
    )
    token = teacher_token(node, "crash")
    processes.append(ffmpeg_publish(node.rtmp_url("crash", token), seconds=40, size="640x360"))
    root = node.data_dir / "recordings"

    def two_segments_and_a_fragment():
        (directory,) = [d for d in root.iterdir() if d.is_dir()]
        meta = read_meta(directory)
        segs = meta["segments"]
        if len(segs) < 3 or not segs[-2]["complete"]:
            return None
        # The in-progress segment holds at least one fragment beyond its header.
        size = (directory / segs[-1]["file"]).stat().st_size
        return (directory, meta) if size > 40_000 else None

    directory, meta = wait_for(two_segments_and_a_fragment, 30, "2 segments + 1 fragment")
    node.kill()  # SIGKILL: no trailer, no final MP4
    meta = read_meta(directory)
    assert meta["status"] == "recording"
    assert not (directory / "recording.mp4").exists()
    segs = meta["segments"]
    assert not segs[-1]["complete"]
    for seg in segs:
        probe = ffprobe(directory / seg["file"])
        (video,) = streams_of(probe, "video")
        assert video["codec_name"] == "h264" and int(video["nb_read_packets"]) >= 30, seg
        decode = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(directory / seg["file"]), "-f", "null", "-"],
            capture_output=True,
            timeout=30,
        )
        assert decode.returncode == 0, decode.stderr

    # A node restarted on the same data directory finishes the recording.
    restarted = node_factory("--data-dir", str(node.data_dir), "--screenshot-interval", "4")
    rid = meta["id"]
    token = teacher_token(restarted, "crash")

    def recovered():
        status, doc, _ = api(restarted, "GET", f"/api/recording/{rid}", token)
        return doc if status == 200 and doc["status"] == "complete" else None

    doc = wait_for(recovered, 30, "recovered recording")
    assert doc["recovered"] and doc["stop_reason"] == "interrupted"
    probe = ffprobe(directory / "recording.mp4")
    assert float(probe["format"]["duration"]) >= sum(s["duration"] for s in segs[:-1])
    assert streams_of(probe, "audio")
    assert not any((directory / seg["file"]).exists() for seg in segs)  # one copy kept


def test_publisher_reconnect_continues_recording(node_factory, processes):
    node = node_factory("--auto-record", "re", "--screenshot-interval", "0")
    token = teacher_token(node, "re")
    url = node.rtmp_url("re", token)
    first = ffmpeg_publish(url, seconds=4, size="640x360")
    processes.append(first)
    wait_live(node, "re", 640)
    first.wait(20)

    def offline():
        return not http_json("GET", f"{node.url}/api/streams/re")[1]["live"]

    wait_for(offline, 10, "first publisher gone")
    processes.append(ffmpeg_publish(url, seconds=4, size="640x360"))

    def reconnected():
        body = api(node, "GET", "/api/recording/status", token)[1]
        return [r for r in body["recordings"] if r["reconnects"] >= 1 and r["duration"] >= 6]

    (running,) = wait_for(reconnected, 20, "recording across the reconnect")
    status, doc, _ = api(
        node, "POST", "/api/recording/stop", token, {"recording_id": running["id"]}
    )
    assert status == 200 and doc["status"] == "complete", doc
    status, listing, _ = api(node, "GET", "/api/recording/list", token)
    assert len(listing["recordings"]) == 1
    probe = ffprobe(recording_dir(node, doc["id"]) / "recording.mp4")
    assert float(probe["format"]["duration"]) >= 6
    assert streams_of(probe, "audio")


def fake_recording(root: Path, rid: str, started_at: float) -> Path:
    directory = root / rid
    (directory / "shots").mkdir(parents=True)
    (directory / "seg-00000.mp4").write_bytes(b"\0" * 1000)
    doc = {
        "id": rid,
        "stream": "old",
        "session_id": "",
        "status": "complete",
        "started_at": started_at,
        "ended_at": started_at + 60,
        "duration": 60.0,
        "size": 1000,
        "segments": [{"file": "seg-00000.mp4", "start_us": 0, "start": 0, "duration": 60}],
        "screenshots": [],
        "mp4": None,
    }
    (directory / "recording.json").write_text(json.dumps(doc))
    return directory


def test_retention_disk_guard_and_auth(node_factory, tmp_path):
    data = tmp_path / "retention-data"
    root = data / "recordings"
    aged = fake_recording(root, "old-20200101-000000-aaaaaa", time.time() - 30 * 86400)
    fresh = fake_recording(root, "old-20990101-000000-bbbbbb", time.time() - 3600)
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    node = node_factory(
        "--data-dir",
        str(data),
        "--retention-days",
        "7",
        "--min-free-disk-mb",
        str(free_mb * 2),
    )
    wait_for(lambda: not aged.exists(), 10, "aged recording deleted")
    assert fresh.exists()
    token = teacher_token(node, "old")
    status, listing, _ = api(node, "GET", "/api/recording/list", token)
    assert status == 200 and [r["id"] for r in listing["recordings"]] == [fresh.name]

    status, body, _ = api(node, "POST", "/api/recording/start", token, {"stream": "old"})
    assert status == 507 and body["code"] == "disk_low", body
    wait_for(lambda: "ALERT recorder: refusing to record old" in node.log(), 5, "logged alert")

    status, storage, _ = api(node, "GET", "/api/recording/storage", token)
    assert status == 200 and storage["low_disk"] and storage["recordings"] == 1
    assert storage["disk_free_bytes"] > 0 and storage["recordings_bytes"] >= 1000

    student = node.token("old")["token"]
    reader = node.token("old", user_type="teacher")["token"]  # read-only teacher token
    for bad in (student, reader):
        assert api(node, "GET", "/api/recording/storage", bad)[0] == 403
        assert api(node, "POST", "/api/recording/start", bad, {"stream": "old"})[0] == 403
    assert api(node, "GET", "/api/recording/status", "not-a-token")[0] == 401
    assert api(node, "GET", "/api/recording/status")[0] == 401
    other = teacher_token(node, "other")  # teacher of another stream
    assert api(node, "GET", f"/api/recording/{fresh.name}", other)[0] == 403

    status, _, _ = api(node, "DELETE", f"/api/recording/{fresh.name}", token)
    assert status == 200 and not fresh.exists()
    assert api(node, "GET", f"/api/recording/{fresh.name}", token)[0] == 404


def flv_packets(path: Path):
    """(MediaPackets as the RTMP ingest makes them, AudioSpecificConfig) of an FLV file."""
    from airclass_media.h264 import AnnexBWriter
    from airclass_media.packets import MediaPacket

    packets = []
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        writer = AnnexBWriter(parse_avc_config(bytes(video.codec_context.extradata)))
        config = bytes(audio.codec_context.extradata)
        for p in container.demux():
            if not p.size:
                continue
            pts, dts = int(p.pts * p.time_base * 1e6), int(p.dts * p.time_base * 1e6)
            if p.stream is video:
                data, idr = writer.convert(bytes(p))
                packets.append(MediaPacket("video", data, pts, dts, idr))
            else:
                packets.append(MediaPacket("aac", bytes(p), pts, pts, True))
    return packets, config


async def test_disk_guard_stops_a_running_recording(tmp_path, caplog):
    """In-process (real hub, real recorder): free disk falling under the threshold stops
    the recording cleanly, with an alert, and the files stay playable."""
    import asyncio
    import dataclasses

    from airclass_media.hub import StreamHub
    from recorder.manager import RecordingManager
    from recorder.settings import RecorderSettings

    packets, config = flv_packets(make_source(tmp_path / "s.flv", 4, "640x360"))
    hub = StreamHub()
    manager = RecordingManager(hub, RecorderSettings(root=tmp_path / "rec", disk_check_seconds=0.1))
    hub.add_listener(manager.on_stream_event)
    await manager.start()
    try:
        stream = hub.stream("guard")
        stream.attach_publisher("test")
        stream.info.aac_config, stream.info.audio_sample_rate = config, 44100
        stream.info.audio_channels = 1
        doc = await manager.start_recording("guard")
        for packet in packets:
            stream.publish(packet)
            await asyncio.sleep(0)
        manager.settings = dataclasses.replace(manager.settings, min_free_disk_mb=10**9)

        async def stopped():
            got = await manager.get(doc["id"])
            return got if got and got["status"] == "complete" else None

        final = await async_wait_for(stopped, 10, "recording stopped by the disk guard")
        assert final["stop_reason"] == "disk_low", final
        assert "ALERT recorder: free disk" in caplog.text
        probe = ffprobe(tmp_path / "rec" / doc["id"] / "recording.mp4")
        assert float(probe["format"]["duration"]) >= 3
    finally:
        await manager.stop()


def test_recording_status_moves_only_along_its_transitions():
    from recorder import metadata
    from recorder.metadata import Status

    doc = {"id": "r", "status": Status.RECORDING.value}
    for step in (Status.STOPPING, Status.FINALIZING, Status.COMPLETE):
        metadata.set_status(doc, step)
        assert doc["status"] == step.value
    with pytest.raises(ValueError):
        metadata.set_status(doc, Status.RECORDING)  # a finished recording stays finished
    with pytest.raises(ValueError):
        metadata.set_status({"id": "f", "status": "failed"}, Status.COMPLETE)
