"""Chromium as an outside viewer: a plain RTCPeerConnection WHEP client (the standards
client, no page code of ours) and its `inbound-rtp` getStats, turned into figures.

`open_viewer` negotiates on an already open page (any page of the node: same origin) and
keeps the connection as `window.viewers[i]`; `read_stats` returns one sample of every
viewer's video and audio counters; `window_figures` turns two samples into what a student
sees over that window (fps, freezes, audio concealed, smoothness, retransmissions).
Shared by tests/test_adaptive.py and scripts/bench_adaptive.py.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

WHEP_VIEWER = """async ({whep, token}) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const viewer = {pc, started: performance.now(), firstFrameMs: null, video: null,
                  audio: null, audioTrack: null};
  window.viewers = window.viewers || [];
  const index = window.viewers.push(viewer) - 1;
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  const audio = document.createElement("audio");
  audio.autoplay = true;
  document.body.append(video, audio);
  viewer.video = video;
  viewer.audio = audio;
  pc.ontrack = (e) => {
    const el = e.track.kind === "video" ? video : audio;
    if (e.track.kind === "audio") viewer.audioTrack = e.track;
    el.srcObject = new MediaStream([e.track]);
    el.play().catch(() => {});
    if (e.track.kind === "video" && video.requestVideoFrameCallback)
      video.requestVideoFrameCallback(() => {
        viewer.firstFrameMs = performance.now() - viewer.started;
      });
  };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
    setTimeout(resolve, 2000);
  });
  const res = await fetch(whep, {method: "POST", body: pc.localDescription.sdp,
    headers: {"Content-Type": "application/sdp", "Authorization": "Bearer " + token}});
  if (res.status !== 201) throw new Error("WHEP " + res.status + " " + await res.text());
  await pc.setRemoteDescription({type: "answer", sdp: await res.text()});
  return index;
}"""

VIDEO_FIELDS = (
    "framesDecoded", "framesDropped", "freezeCount", "totalFreezesDuration",
    "totalInterFrameDelay", "totalSquaredInterFrameDelay", "frameHeight", "nackCount",
    "pliCount", "bytesReceived", "retransmittedBytesReceived", "packetsLost",
    "packetsReceived", "jitterBufferDelay", "jitterBufferEmittedCount",
)  # fmt: skip
AUDIO_FIELDS = (
    "concealedSamples", "totalSamplesReceived", "bytesReceived", "packetsLost",
    "packetsReceived", "concealmentEvents", "jitterBufferDelay", "jitterBufferEmittedCount",
)  # fmt: skip

READ_STATS = """async ({video, audio}) => {
  const out = [];
  for (const viewer of window.viewers || []) {
    const row = {video: {}, audio: {}, firstFrameMs: viewer.firstFrameMs,
                 state: viewer.pc.connectionState};
    for (const s of (await viewer.pc.getStats()).values()) {
      if (s.type !== "inbound-rtp" || !(s.kind in row)) continue;
      for (const key of (s.kind === "video" ? video : audio)) row[s.kind][key] = s[key] || 0;
    }
    out.push(row);
  }
  return out;
}"""


#: Lip sync: each white flash's display time (requestVideoFrameCallback's
#: expectedDisplayTime) and each beep's onset (an AnalyserNode polled every 5 ms, the
#: onset located inside its buffer), both on the page's performance.now() clock.
LIPSYNC = """(index) => {
  const v = window.viewers[index];
  v.flashes = []; v.beeps = [];
  const canvas = new OffscreenCanvas(16, 9);
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  let bright = false;
  const onFrame = (now, meta) => {
    ctx.drawImage(v.video, 0, 0, 16, 9);
    const d = ctx.getImageData(0, 0, 16, 9).data;
    let sum = 0;
    for (let i = 0; i < d.length; i += 4) sum += d[i] + d[i + 1] + d[i + 2];
    const isBright = sum / (16 * 9 * 3) > 200;
    if (isBright && !bright) v.flashes.push(meta.expectedDisplayTime);
    bright = isBright;
    v.video.requestVideoFrameCallback(onFrame);
  };
  v.video.requestVideoFrameCallback(onFrame);
  const ac = new AudioContext();
  const analyser = ac.createAnalyser();
  analyser.fftSize = 2048;
  ac.createMediaStreamSource(new MediaStream([v.audioTrack])).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let loudUntil = 0;
  setInterval(() => {
    const now = performance.now();
    analyser.getFloatTimeDomainData(buf);
    const first = buf.findIndex((x) => Math.abs(x) > 0.3);
    if (first < 0) return;
    const onset = now - (buf.length - first) / ac.sampleRate * 1000;
    if (onset > loudUntil) v.beeps.push(onset);
    loudUntil = now + 500;  // one beep lasts 100 ms: anything within 0.5 s is the same one
  }, 5);
  // The same onset where the track hands audio to its sinks (no WebAudio in between):
  // the time a chunk is read, less what follows the onset in it.
  v.trackBeeps = [];
  if (window.MediaStreamTrackProcessor) {
    const processor = new MediaStreamTrackProcessor({track: v.audioTrack.clone()});
    const reader = processor.readable.getReader();
    let trackLoudUntil = 0;
    (async () => {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) return;
        const now = performance.now();
        const samples = new Float32Array(value.numberOfFrames);
        value.copyTo(samples, {planeIndex: 0, format: "f32-planar"});
        const rate = value.sampleRate;
        value.close();
        const first = samples.findIndex((x) => Math.abs(x) > 0.3);
        if (first < 0) continue;
        const onset = now - (samples.length - first) / rate * 1000;
        if (onset > trackLoudUntil) v.trackBeeps.push(onset);
        trackLoudUntil = now + 500;
      }
    })();
  }
  // Chromium's own view: estimatedPlayoutTimestamp (the sender's clock, from its sender
  // reports) of the audio and of the video playing now, read together.
  v.playoutGaps = [];
  setInterval(async () => {
    const at = {};
    for (const s of (await v.pc.getStats()).values())
      if (s.type === "inbound-rtp" && s.estimatedPlayoutTimestamp)
        at[s.kind] = s.estimatedPlayoutTimestamp;
    if (at.audio && at.video) v.playoutGaps.push(at.video - at.audio);
  }, 100);
  return ac.state;
}"""
LIPSYNC_READ = """(index) => {
  const v = window.viewers[index];
  return {flashes: v.flashes, beeps: v.beeps, trackBeeps: v.trackBeeps, gaps: v.playoutGaps};
}"""


async def start_lipsync(page, index: int = 0) -> str:
    """Start recording flash and beep times of viewer `index`; the AudioContext's state."""
    return await page.evaluate(LIPSYNC, index)


def _pair(flashes: list[float], beeps: list[float]) -> list[float]:
    """Audio minus video (ms) for each flash with a beep within 1 s."""
    offsets = []
    for flash in flashes:
        near = [b - flash for b in beeps if abs(b - flash) < 1000]
        if near:
            offsets.append(min(near, key=abs))
    return sorted(offsets)


async def lipsync_offsets(page, index: int = 0) -> dict[str, list[float]]:
    """Audio minus video (ms, sorted; positive: audio late), three ways: `webaudio` (the
    beep's onset in an AnalyserNode), `track` (its onset where the track hands audio to
    its sinks) against each flash's display time, and `chromium` (Chromium's
    estimatedPlayoutTimestamp of the video minus the audio's, sampled every 100 ms)."""
    times = await page.evaluate(LIPSYNC_READ, index)
    return {
        "webaudio": _pair(times["flashes"], times["beeps"]),
        "track": _pair(times["flashes"], times["trackBeeps"]),
        "chromium": sorted(times["gaps"]),
    }


@dataclass(slots=True)
class Sample:
    """One reading of one viewer's counters (Chromium's own)."""

    at: float  # time.monotonic()
    video: dict[str, float] = field(default_factory=dict)
    audio: dict[str, float] = field(default_factory=dict)
    first_frame_ms: float | None = None
    state: str = ""


async def open_viewer(page, whep_url: str, token: str) -> int:
    """A WHEP viewer on `page` (already on one of the node's pages); its index."""
    return await page.evaluate(WHEP_VIEWER, {"whep": whep_url, "token": token})


async def read_stats(page) -> list[Sample]:
    """Every viewer's counters on `page`, now."""
    rows = await page.evaluate(READ_STATS, {"video": VIDEO_FIELDS, "audio": AUDIO_FIELDS})
    now = time.monotonic()
    return [
        Sample(now, r["video"], r["audio"], r.get("firstFrameMs"), r.get("state", "")) for r in rows
    ]


def window_figures(a: Sample, b: Sample) -> dict[str, float]:
    """What a student saw between two samples of one viewer."""
    seconds = max(b.at - a.at, 1e-6)

    def dv(key: str) -> float:
        return b.video.get(key, 0) - a.video.get(key, 0)

    def da(key: str) -> float:
        return b.audio.get(key, 0) - a.audio.get(key, 0)

    frames = dv("framesDecoded")
    samples = da("totalSamplesReceived")
    # Inter-frame delay standard deviation (ms): Chromium's smoothness measure.
    n, total, squared = frames, dv("totalInterFrameDelay"), dv("totalSquaredInterFrameDelay")
    jitter = math.sqrt(max(squared / n - (total / n) ** 2, 0)) * 1000 if n > 1 else 0.0
    media = dv("bytesReceived")

    def held_ms(delta) -> float:
        """Mean time (ms) what came out of the jitter buffer in the window waited there."""
        emitted = delta("jitterBufferEmittedCount")
        return 1000 * delta("jitterBufferDelay") / emitted if emitted else 0.0

    return {
        "seconds": seconds,
        "fps": frames / seconds,
        "dropped": dv("framesDropped"),
        "freezes": dv("freezeCount"),
        "frozen_s": dv("totalFreezesDuration"),
        "ifd_sd_ms": jitter,
        "height": b.video.get("frameHeight", 0),
        "video_kbps": 8 * media / seconds / 1000,
        "rtx_pct": 100 * dv("retransmittedBytesReceived") / media if media else 0.0,
        "nacks": dv("nackCount"),
        "plis": dv("pliCount"),
        "video_loss_pct": 100
        * dv("packetsLost")
        / max(dv("packetsLost") + dv("packetsReceived"), 1),
        "audio_samples": samples,
        "concealed_pct": 100 * da("concealedSamples") / samples if samples else 100.0,
        "video_buffer_ms": held_ms(dv),
        "audio_buffer_ms": held_ms(da),
    }
