"""Each WebRTC viewer's rung: its video follows its bandwidth estimate (REMB and
receiver-report loss) over the source and the ladder's renditions, down to audio only.

Down at once on loss, up after a padding probe (or a probe of the rung itself) found the
link carries it; rung switches happen at keyframes (`fanout.Fanout.switch`). This module
decides; the fan-out sends. It knows nothing of HTTP or of how a viewer was negotiated.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .estimate import LOSS_PROBE_UP, BandwidthEstimate
from .fanout import Fanout, RtpTarget
from .hub import RENDITION_SEPARATOR, Stream

log = logging.getLogger(__name__)

#: Each viewer's rung is chosen this often (seconds).
ADAPT_INTERVAL_S = 0.5
#: A viewer gets audio only below this estimate (bit/s), or when even the lowest rung
#: is more than its link carries (below). Video is tried again (a probe of the lowest
#: rung) once the estimate carries that rung with UP_MARGIN, or AUDIO_ONLY_PROBE_S later;
#: after a failed try twice as late each time, up to AUDIO_ONLY_PROBE_MAX_S, or once the
#: estimate doubled from where that try started.
AUDIO_ONLY_BPS = 150_000
AUDIO_ONLY_PROBE_S = 10.0
AUDIO_ONLY_PROBE_MAX_S = 20.0
#: The lowest rung "does not fit" when its viewer kept losing it this long (seconds):
#: a REMB right after a drop undershoots, loss on the lowest rung does not lie.
AUDIO_ONLY_LOSSY_S = 2.0
LOSSY_NACK_SHARE = 0.05
#: A viewer losing more than this share of its video gets none while it waits for the
#: keyframe of the lower rung it goes to.
HOPELESS_LOSS = 0.3
#: A probe of video after a pause is judged from this long after its first keyframe; a
#: switch down to the lowest rung from DOWN_SETTLE_S after it (the link first drains
#: what the higher rung queued, and the next receiver report still counts its loss).
RESUME_SETTLE_S = 1.0
DOWN_SETTLE_S = 2.0
#: A lowest rung on trial that arrives whole stays, whatever the REMB, once the REMB
#: climbs this far above the lowest it sent during the trial (a browser recovering from
#: a drained queue, not a slow link).
TRIAL_REMB_CLIMB = 1.2
#: A higher rung is taken once the estimate stayed above UP_MARGIN x its bitrate for
#: UP_HOLD_S; a lower one at once when the estimate falls below DOWN_MARGIN x the
#: current rung's bitrate (a browser's REMB hovers around what it receives).
UP_MARGIN = 1.3
DOWN_MARGIN = 0.85
#: ... held for DOWN_HOLD_S (one REMB dip is not a congested link), or at once when the
#: viewer's loss says its link is full (`BandwidthEstimate.congested`).
DOWN_HOLD_S = 1.5
UP_HOLD_S = 4.0
#: A browser's REMB stays within ~1.5x what it receives, so a rung much higher than the
#: current one never "fits": when the estimate has held PROBE_AT x the current rung's
#: bitrate (no loss) for UP_HOLD_S the next rung up is tried, and for PROBE_GRACE_S
#: after that only loss (not the REMB still catching up) takes the viewer back down.
PROBE_AT = 1.3
PROBE_GRACE_S = 6.0
#: A probe up holds early, PROBE_MIN_S after the rung's keyframe, once the REMB grew
#: without loss (video back after audio only always runs PROBE_GRACE_S); right after a
#: probe up held, the next rung up is tried after only PROBE_CHAIN_HOLD_S (a link that
#: came back climbs the ladder in steps of seconds).
PROBE_MIN_S = 2.0
PROBE_CHAIN_HOLD_S = 1.0
#: A probe ends early when the viewer NACKs more than this share of the packets sent
#: since it started (RTX hides such loss from receiver reports) ...
PROBE_NACK_LIMIT = 0.03
#: ... and at its end it holds when the REMB grew by this factor meanwhile (a browser's
#: REMB climbs only while its link carries what it receives). From then on the viewer
#: goes down from that rung on loss or on its estimate falling below DOWN_MARGIN x the
#: estimate the probe ended with, not on the REMB still catching up with the rung.
PROBE_REMB_GROWTH = 1.1
#: A viewer stopped at its stream's keyframe waits at most this long (seconds) for the
#: rung's keyframe of the same pts; then it goes on with its own stream's next keyframe.
HOLD_MAX_S = 1.0
#: After a failed probe the same rung is probed again at the earliest this many seconds
#: later, doubling with each failure up to a minute.
PROBE_BACKOFF_S = 10.0
#: Before a viewer is moved up to a rung it has not proven, padding tests its link at
#: that rung's rate (its video plus padding-only RTX packets, see fanout.PADDING_RAMP_S)
#: for PADDING_PROBE_S. It stops at the first sign of a full link (a REMB drop: the
#: browser saw its queue grow; NACKs; loss) and passes when the REMB rose by
#: PADDING_REMB_GROWTH without any (on a link with room a browser's REMB grew 13-28 % in
#: a step, on a full one 4-6 %): a padding probe that fails costs a short queue, a rung
#: probe that fails a freeze, so a viewer on a weak link tries again every
#: PADDING_BACKOFF_S (plus its jitter), and one whose link came back finds out soon;
#: after a step that cost video packets (its REMB dropped too late) twice as late each
#: time, up to PADDING_BACKOFF_MAX_S.
PADDING_PROBE_S = 2.5
PADDING_REMB_GROWTH = 1.1
#: ... and is judged PADDING_SETTLE_S after the padding ended: a browser's REMB drop and
#: its NACKs come late when a shaper's token bucket hid the queue at first.
PADDING_SETTLE_S = 0.5
PADDING_BACKOFF_S = 4.0
PADDING_BACKOFF_MAX_S = 8.0
#: Bitrate assumed for a passthrough source nobody here has measured yet (bit/s).
SOURCE_BPS_UNKNOWN = 3_000_000
#: A class pressing play together: from the CROWD_JOINS-th viewer of a source to start
#: here within CROWD_WINDOW_S, a new viewer gets one cached keyframe (a picture at once:
#: the lowest rung's when it is sent here, else the source's) and then the lowest rung
#: live from its next keyframe (a rung started for it makes one at once). Thirty whole
#: GOP catch-ups of the source through one access point flood it for seconds, and the
#: handshakes of those still joining are lost in it. The class then climbs by padding
#: probes, each viewer at its own time (`ViewerRung.hold_jitter`).
CROWD_JOINS = 3
CROWD_WINDOW_S = 2.0
#: A crowd start whose rung brought no keyframe this long goes on with its own stream;
#: one from which nothing was heard of its rate (no REMB, no loss) for CROWD_SILENT_S
#: (plus its `hold_jitter`) too: a player that says nothing gets its stream as it would
#: have without a crowd, a class of them not all at the same keyframe.
CROWD_RUNG_WAIT_S = 3.0
CROWD_SILENT_S = 5.0
#: On a link that loses packets whatever is sent (background loss from PLAYOUT_LOSS_ON,
#: until it is under PLAYOUT_LOSS_OFF) the viewer's jitter buffer is asked, by the RTP
#: playout-delay extension, to hold video at least PLAYOUT_RTTS round trips (within
#: PLAYOUT_MIN_MS..PLAYOUT_MAX_MS), so a lost packet's retransmission, or the one after,
#: arrives before its frame is due: Chromium's own buffer does not wait for them (at 5 %
#: loss and 40 ms jitter it froze 3-8 s a minute at 720p; held 250 ms, 0.9 s). Changes
#: under PLAYOUT_STEP_MS are not sent, nor falls to more than PLAYOUT_FALL x the delay.
#: The round trip is smoothed (PLAYOUT_RTT_WEIGHT a tick, as TCP's): each receiver
#: report's reading followed on a jittery link sent 40 changes in 80 s.
PLAYOUT_LOSS_ON = 0.015
PLAYOUT_LOSS_OFF = 0.005
PLAYOUT_RTTS = 3.0
PLAYOUT_MIN_MS = 120
PLAYOUT_MAX_MS = 400
PLAYOUT_STEP_MS = 20
PLAYOUT_FALL = 0.75
PLAYOUT_RTT_WEIGHT = 0.125


def _best_under(rungs: list[tuple[str, int]], bps: float) -> str:
    """The highest rung (name, bit/s; highest first) at or under `bps`, else the lowest."""
    return next((name for name, bitrate in rungs if bitrate <= bps), rungs[-1][0])


@dataclass(slots=True)
class PaddingProbe:
    """A padding probe running for one viewer: the rungs it tests (name, bit/s; lowest
    first), the viewer's estimate at its start, REMB and REMBs counted when the current
    step started, the step, the highest rung that passed, when the padding ended, and
    whether a step was extended (a REMB growing, but less than PADDING_REMB_GROWTH)."""

    steps: list[tuple[str, int]]
    estimate: int
    remb: int
    rembs: int
    step: int = 0
    passed: str | None = None
    ended: float | None = None
    extended: bool = False

    @property
    def rung(self) -> str:
        """The rung the padding tests now."""
        return self.steps[self.step][0]


@dataclass(kw_only=True)
class ViewerRung:
    """A viewer as the adaptation sees it: its stream, RTP streams and bandwidth
    estimate, and the state of its rung choice (hysteresis, probes, audio only).
    `webrtc.ViewerSession` adds the peer connection."""

    id: str
    stream: Stream
    #: The viewer's RTP streams by kind, once DTLS is up and the fan-out feeds them.
    targets: dict[str, RtpTarget] = field(default_factory=dict)
    #: The viewer's bandwidth estimate (REMB + receiver-report loss).
    estimate: BandwidthEstimate = field(default_factory=BandwidthEstimate)
    #: Since when a higher rung would fit (hysteresis), and when video was held.
    up_since: float | None = None
    down_since: float | None = None
    paused_at: float = 0.0
    #: While audio only: how long after `paused_at` video is tried again; sooner when
    #: the estimate carries the lowest rung and is above `resume_above` (after a failed
    #: try: twice the estimate that try started from).
    resume_wait: float = AUDIO_ONLY_PROBE_S
    resume_above: int = 0
    probe_settle_until: float = 0.0
    #: NACKs and packets sent at the previous choice, and since when video is lost.
    counted: tuple[int, int] = (0, 0)
    lossy_since: float | None = None
    #: Video packets sent when the last receiver report was counted (see
    #: `webrtc.WebRtcEgress._video_report`).
    reported_packets: int = 0
    #: The running probe is a trial of the lowest rung (it goes audio only if that does
    #: not arrive): "resume" after audio only, "down" after a switch down to it.
    trial: str | None = None
    probe_until: float = 0.0
    #: The probe's starting point: estimate, NACKs and packets sent.
    probe_from: tuple[int, int, int] = (0, 0, 0)
    #: A padding probe running; the rung the last one found the link carries, the
    #: estimate it started from (the probe of that rung counts the REMB's growth from
    #: it) and when it ended.
    padding: PaddingProbe | None = None
    padded: tuple[str, int, float] | None = None
    #: A rung a probe found the link carries, and the estimate when it ended; the rung
    #: a probe up just took while the REMB grew (the next one is tried soon after).
    proven: tuple[str, int] | None = None
    climbed: str | None = None
    held_since: float | None = None
    #: Rung -> (earliest next probe, the wait that set it), after failed probes.
    probe_again_at: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Started with a crowd (`Adaptation.start`): when, and until when it may wait for
    #: the rung's keyframe.
    crowd_started_at: float = 0.0
    crowd_wait_until: float = 0.0
    #: Added to UP_HOLD_S and to probe back-offs (0..UP_HOLD_S s, one draw per viewer):
    #: a class that joined together does not probe its shared link all at once.
    hold_jitter: float = field(default_factory=lambda: random.uniform(0.0, UP_HOLD_S))
    #: The least playout delay the viewer's video is sent with (ms; 0: none asked).
    playout_delay_ms: int = 0
    #: The viewer's round trip, smoothed (ms; 0: none read yet).
    rtt_ms: float = 0.0
    #: The lowest REMB the viewer sent while its lowest rung is on trial (bit/s).
    trial_remb_low: int = 0
    #: The video's switch count (`RtpTarget.switches`) where the trial last looked: a
    #: rung's keyframe that came between two looks starts the settling all the same.
    trial_switches: int = 0

    def video_again_in(self) -> float | None:
        """While audio only: seconds until video is tried again at the latest."""
        if self.rung != "audio-only":
            return None
        return round(max(0.0, self.paused_at + self.resume_wait - time.monotonic()), 1)

    @property
    def rung(self) -> str | None:
        """The stream the viewer's video comes from ("audio-only" while held; the rung it
        switches to while paused for that rung's keyframe)."""
        video = self.targets.get("video")
        if video is None:
            return None
        if video.paused and video.joining is None:
            return "audio-only"
        fanout = video.joining or video.fanout  # paused for a rung's keyframe: that rung
        return fanout.stream.name if fanout is not None else None


class Adaptation:
    """Chooses every viewer's rung (one instance per WebRTC egress), every
    ADAPT_INTERVAL_S; `find(session, name)` finds a rung's hub stream."""

    def __init__(
        self, fanout: Fanout, find: Callable[[ViewerRung, str], Awaitable[Stream | None]]
    ) -> None:
        self.fanout = fanout
        self.find = find
        #: Video bitrate each stream watched here was measured sending (bit/s), for rungs.
        self.measured_bps: dict[str, float] = {}
        self.rung_switches = 0
        #: Padding probe steps by result ("passed", "failed").
        self.padding_probes: Counter[str] = Counter()
        #: Source -> when its latest viewers started here; viewers started with a crowd.
        self.joins: dict[str, deque[float]] = {}
        self.crowd_starts = 0

    async def start(self, session: ViewerRung, video: RtpTarget) -> None:
        """Start the viewer's video: the cached GOP of its stream, or when it joins with
        a crowd (see CROWD_JOINS) one keyframe and then the lowest rung live."""
        if not self._crowded(session.stream.name):
            self.fanout.add(session.stream, video)
            return
        lowest = (await self._rungs_of(session))[-1][0]
        if lowest == session.stream.name:  # no ladder
            self.fanout.add(session.stream, video)
            return
        here = self.fanout.streams.get(lowest)
        if here is not None and here.gop:  # sent here already: from its next keyframe
            self.fanout.add(here.stream, video, first_frame_only=True)
        else:  # the source's keyframe until the rung, started for it, brings its own
            self.fanout.add(session.stream, video, first_frame_only=True)
            try:
                stream = await self.find(session, lowest)
            except Exception:  # noqa: BLE001 - the viewer goes on with its own stream
                log.exception("viewer %s: the rung %s cannot be had", session.id, lowest)
                return
            if stream is None or video.fanout is None:
                return  # no rung (or the viewer left): its stream's next keyframe
            self.fanout.switch(video, stream)
        session.crowd_started_at = time.monotonic()
        session.crowd_wait_until = session.crowd_started_at + CROWD_RUNG_WAIT_S
        self.crowd_starts += 1
        log.info("viewer %s joins with a crowd: starts on %s", session.id, lowest)

    def _crowded(self, stream_name: str) -> bool:
        """Count a viewer starting on this stream's source: does it join with a crowd?"""
        source = stream_name.split(RENDITION_SEPARATOR, 1)[0]
        now = time.monotonic()
        joins = self.joins.setdefault(source, deque())
        while joins and now - joins[0] > CROWD_WINDOW_S:
            joins.popleft()
        joins.append(now)
        for name in [n for n, times in self.joins.items() if now - times[-1] > CROWD_WINDOW_S]:
            del self.joins[name]
        return len(joins) >= CROWD_JOINS

    def measure(self) -> None:
        """Note what each stream watched here sends (rungs are compared by it)."""
        for fanout in self.fanout.streams.values():
            if fanout.bitrate_bps:
                self.measured_bps[fanout.stream.name] = fanout.bitrate_bps

    def rungs(self, source: Stream) -> list[tuple[str, int]]:
        """(hub stream, bit/s) a WebRTC viewer of `source` may get, highest first: the
        source itself (unless it has B-frames) and the ladder's renditions."""
        info = source.info
        out = [] if info.webrtc_default else [(source.name, self._source_bitrate(source))]
        # A rung's encoder may send far less than its nominal bitrate (slides, a still
        # camera): a browser's REMB stays within ~1.5x what it receives, so rungs are
        # compared with what they were measured sending here, when they were.
        out += [
            (r["name"], int(self.measured_bps.get(r["name"]) or r["bitrate"]))
            for r in info.renditions
        ]
        return sorted(out, key=lambda rung: -rung[1])

    def _source_bitrate(self, source: Stream) -> int:
        measured = self.measured_bps.get(source.name)
        if measured:
            return int(measured)
        top = max((int(r["bitrate"]) for r in source.info.renditions), default=0)
        return max(SOURCE_BPS_UNKNOWN, int(top * 1.5))

    async def adapt(self, session: ViewerRung) -> None:
        """Move the viewer to the best rung its estimate carries: down at once, up only
        after the estimate held UP_MARGIN above the rung's bitrate for UP_HOLD_S (or by a
        probe); audio only below AUDIO_ONLY_BPS on the lowest rung (not proven by a probe),
        or when the lowest rung keeps losing."""
        video = session.targets.get("video")
        if video is None or video.fanout is None and not video.paused:
            return
        self._playout(session, video)
        if session.crowd_wait_until and self._crowd_rung_late(session, video):
            return
        if not session.estimate.known:
            # No REMB nor loss from this viewer yet: it keeps what it gets (after a crowd
            # start, its own stream once it stayed silent).
            silent = time.monotonic() - session.crowd_started_at
            if session.crowd_started_at and silent > CROWD_SILENT_S + session.hold_jitter:
                session.crowd_started_at = 0.0
                log.info("viewer %s: no REMB nor loss since its crowd start", session.id)
                self.fanout.switch(video, session.stream)
            return
        now, estimate = time.monotonic(), session.estimate.bps
        if self._held_too_long(session, video, now):
            return
        if session.padding is not None and self._padding(session, video, now):
            return
        if session.probe_until and self._probing(session, video, now, estimate):
            return
        if session.trial is not None:
            trial, session.trial = session.trial, None
            if session.proven is None:  # video did not fit: audio only (again)
                if trial == "resume":  # tried later each time; the estimate must double
                    wait, above = session.resume_wait * 2, 2 * session.probe_from[0]
                else:
                    wait, above = AUDIO_ONLY_PROBE_S, 0
                self._audio_only(session, video, now, "video did not fit", wait, resume_above=above)
                return
        rungs = await self._rungs_of(session)
        lowest_bps = rungs[-1][1]
        lossy_for = self._lossy_for(session, video, now)
        if video.paused:
            if video.joining is not None:
                return  # held for a rung's keyframe (HOPELESS_LOSS): video comes with it
            due = now - session.paused_at >= session.resume_wait
            fits_again = estimate >= max(lowest_bps * UP_MARGIN, session.resume_above)
            # Not padded first: Chromium sends no REMB while it gets audio and padding
            # only (tried: its REMB did not change for 30 s), so padding cannot tell.
            if due or fits_again:
                await self._resume_video(session, video, now, estimate, rungs[-1][0])
            return
        current = video.joining or video.fanout
        current_name = current.stream.name if current is not None else None
        if (
            estimate < AUDIO_ONLY_BPS
            and current_name == rungs[-1][0]
            and video.joining is None
            and (session.proven is None or estimate < session.proven[1] * DOWN_MARGIN)
        ):
            # Above the lowest rung the viewer goes down to it first (a trial): a REMB
            # that fell under the floor after a burst climbs back slowly (~8 %/s).
            self._audio_only(session, video, now, "estimate under the floor", AUDIO_ONLY_PROBE_S)
            return
        fits = [r for r in rungs if r[1] <= estimate] or [rungs[-1]]
        roomy = [r for r in rungs if r[1] * UP_MARGIN <= estimate] or [rungs[-1]]
        bitrates = dict(rungs)
        if current_name not in bitrates:
            want = fits[0][0]
        elif self._too_high(session, current_name, bitrates[current_name], estimate) and (
            # On the lowest rung only loss takes video down (to audio only): an estimate
            # under what proved it earlier must not keep the viewer from probing up.
            current_name != rungs[-1][0] or lossy_for > 0 or session.estimate.congested
        ):
            if session.down_since is None:
                session.down_since = now
            lossy = session.estimate.congested
            if not lossy and now - session.down_since < DOWN_HOLD_S:
                return
            want = fits[0][0]  # down, fast
            if lossy:  # the link carried about (1 - loss) of this rung: below that too
                carried = bitrates[current_name] * (1 - session.estimate.loss)
                want = min(want, _best_under(rungs, carried), key=bitrates.__getitem__)
            if want == current_name and current_name == rungs[-1][0]:
                if lossy_for >= AUDIO_ONLY_LOSSY_S:  # not even the lowest rung fits
                    self._audio_only(
                        session, video, now, "losing the lowest rung", AUDIO_ONLY_PROBE_S
                    )
                return
        elif bitrates[roomy[0][0]] > bitrates[current_name] or (
            self._may_probe_up(session, video, estimate, current_name, bitrates[current_name])
            and session.estimate.loss < session.estimate.tolerated(LOSS_PROBE_UP)
            and rungs[0][0] != current_name
        ):
            session.down_since = None
            if session.up_since is None:
                session.up_since = now
            climbing = session.climbed == current_name
            hold = PROBE_CHAIN_HOLD_S if climbing else UP_HOLD_S + session.hold_jitter
            if now - session.up_since < hold:
                return
            higher = [r for r in rungs if r[1] > bitrates[current_name]]
            want = roomy[0][0] if bitrates[roomy[0][0]] > bitrates[current_name] else None
            padded, session.padded = session.padded, None
            fresh = padded is not None and now - padded[2] <= 2 * ADAPT_INTERVAL_S
            if (
                fresh
                and padded[0] in bitrates
                and (want is None or bitrates[padded[0]] > bitrates[want])
            ):  # a padding probe found the link carries this rung: a probe of it
                want = padded[0]
                session.probe_until = now + PROBE_GRACE_S
                session.probe_from = (padded[1], video.nacks_live, video.packets)
            if want is None:
                want = higher[-1][0]  # probe the next rung up
                if now < session.probe_again_at.get(want, (0.0, 0.0))[0]:
                    return  # it failed lately: do not congest the link again so soon
                steps = list(
                    itertools.takewhile(
                        lambda r: now >= session.probe_again_at.get(r[0], (0.0, 0.0))[0],
                        reversed(higher),
                    )
                )
                if not self._remb_steady(session, video):
                    return  # padding now would be judged on the REMB's own moves
                if self._start_padding(session, video, steps):
                    return  # the link is tested with padding first
                session.probe_until = now + PROBE_GRACE_S
                session.probe_from = (estimate, video.nacks_live, video.packets)
        else:
            session.up_since = session.down_since = None
            return
        session.up_since = session.down_since = None
        if want == current_name:
            return
        session.proven = session.climbed = None
        stream = await self.find(session, want)
        if stream is None or "video" not in session.targets:
            return
        if want == rungs[-1][0]:  # down to the lowest: audio only if it does not arrive
            self._start_trial(session, video, now, estimate, "down")
        log.info(
            "viewer %s: estimate %d bit/s, loss %.1f %%, %s (%d bit/s) -> %s (%d bit/s)"
            " at its next keyframe",
            session.id,
            estimate,
            session.estimate.loss * 100,
            current_name,
            bitrates.get(current_name or "", 0),
            want,
            bitrates.get(want, 0),
        )
        self.rung_switches += 1
        up = current_name in bitrates and bitrates.get(want, 0) > bitrates[current_name]
        if session.estimate.loss > HOPELESS_LOSS and not up:
            # Most of each frame is lost: what is sent until the rung's keyframe only
            # fills the link that keyframe (and the audio) must cross. Nothing until then.
            self.fanout.pause(video)
        self.fanout.switch(video, stream)

    async def _rungs_of(self, session: ViewerRung) -> list[tuple[str, int]]:
        """The rungs of the source the viewer watches (see `rungs`), at least one."""
        name = session.stream.name.split(RENDITION_SEPARATOR, 1)[0]
        source = session.stream
        if name != source.name:  # served from a rung: the source's info lists the ladder
            source = source.hub.get(name) or await self.find(session, name)
        rungs = self.rungs(source) if source is not None else []
        return rungs or [(session.stream.name, SOURCE_BPS_UNKNOWN)]

    @staticmethod
    def _playout(session: ViewerRung, video: RtpTarget) -> None:
        """Ask for a playout delay on a link that loses packets anyway (see PLAYOUT_RTTS)."""
        background, now_ms = session.estimate.background_loss, session.playout_delay_ms
        rtt = video.binding.rtt()
        if rtt is not None:
            weight = PLAYOUT_RTT_WEIGHT if session.rtt_ms else 1.0
            session.rtt_ms += weight * (rtt * 1000 - session.rtt_ms)
        want = 0
        if background >= PLAYOUT_LOSS_ON or (now_ms and background >= PLAYOUT_LOSS_OFF):
            want = session.rtt_ms * PLAYOUT_RTTS
            want = int(min(max(want, PLAYOUT_MIN_MS), PLAYOUT_MAX_MS))
        if bool(want) == bool(now_ms) and (
            abs(want - now_ms) < PLAYOUT_STEP_MS or PLAYOUT_FALL * now_ms <= want < now_ms
        ):
            return  # up at once, down only by more than a quarter (round trips vary)
        if video.binding.set_playout_delay(want):
            log.info(
                "viewer %s: background loss %.1f %%, playout delay %d ms",
                session.id, background * 100, want,
            )  # fmt: skip
            session.playout_delay_ms = want

    @staticmethod
    def _lossy_for(session: ViewerRung, video: RtpTarget, now: float) -> float:
        """For how long (seconds) the viewer has lost video: a congested loss figure, or
        NACKs for more than LOSSY_NACK_SHARE (beyond chance) of what was sent since the
        previous choice."""
        nacks, packets = session.counted
        session.counted = (video.nacks_live, video.packets)
        estimate = session.estimate
        nacked = estimate.too_many(
            video.nacks_live - nacks, video.packets - packets, LOSSY_NACK_SHARE
        )
        if not estimate.congested and not nacked:
            session.lossy_since = None
            return 0.0
        if session.lossy_since is None:
            session.lossy_since = now
        return now - session.lossy_since

    def _audio_only(
        self,
        session: ViewerRung,
        video: RtpTarget,
        now: float,
        why: str,
        wait: float,
        *,
        resume_above: int = 0,
    ) -> None:
        """Hold the viewer's video (audio goes on); video is tried again `wait` s later,
        or as soon as the estimate carries the lowest rung and exceeds `resume_above`."""
        wait = min(wait, AUDIO_ONLY_PROBE_MAX_S)
        log.info(
            "viewer %s: estimate %d bit/s, loss %.1f %%, %s: audio only, video tried again"
            " in %.0f s",
            session.id,
            session.estimate.bps,
            session.estimate.loss * 100,
            why,
            wait,
        )
        self.fanout.pause(video)
        session.estimate.recount()  # what the video just stopped lost is no news
        session.paused_at = now
        session.resume_wait = wait
        session.resume_above = resume_above
        session.up_since = session.down_since = session.lossy_since = None
        session.proven = None

    async def _resume_video(
        self, session: ViewerRung, video: RtpTarget, now: float, estimate: int, lowest: str
    ) -> None:
        """Probe the lowest rung from audio only: it stays if the link carries it."""
        stream = await self.find(session, lowest)
        if stream is None or "video" not in session.targets:
            return
        log.info(
            "viewer %s: estimate %d bit/s after %.0f s of audio only: trying %s",
            session.id,
            estimate,
            now - session.paused_at,
            lowest,
        )
        session.proven = None
        self._start_trial(session, video, now, estimate, "resume")
        self.rung_switches += 1
        self.fanout.switch(video, stream)

    @staticmethod
    def _may_probe_up(
        session: ViewerRung, video: RtpTarget, estimate: int, current: str, current_bps: int
    ) -> bool:
        """May the viewer (losing nothing) try the next rung up? When its estimate
        exceeds PROBE_AT x the rung it has, or it has just climbed; and always when it
        can be padded (RTX and REMB): a loss-based estimate cut by a weak spell climbs
        back 8 % a report, a padding probe finds out at once whether the link is back."""
        return (
            estimate >= current_bps * PROBE_AT
            or session.climbed == current
            or session.estimate.remb is not None
            and video.binding.rtx_payload_type is not None
        )

    @staticmethod
    def _remb_steady(session: ViewerRung, video: RtpTarget) -> bool:
        """May a padding probe start: has the viewer's REMB kept within
        PADDING_REMB_GROWTH of itself lately (or is there no padding to judge by it)?
        One climbing back from a dip passes any step: a class's crowd on one 50 Mbit/s
        link climbed to 540p on REMBs growing from 343 to 708 kbit/s after a dip, 21 of
        60 viewers, and lost 7 % of everything (Chromium 20-23 fps, 3 s frozen)."""
        estimate = session.estimate
        if estimate.remb is None or video.binding.rtx_payload_type is None:
            return True
        return estimate.remb_steady(PADDING_REMB_GROWTH)

    @staticmethod
    def _start_padding(session: ViewerRung, video: RtpTarget, steps: list[tuple[str, int]]) -> bool:
        """Pad the viewer's video up to the first of `steps` (rungs, lowest first; see
        PADDING_PROBE_S); False when it cannot be (no RTX, no REMB to judge it by)."""
        estimate = session.estimate
        if estimate.remb is None or video.fanout is None:
            return False
        if not video.start_padding(steps[0][1] - video.video_bps, PADDING_PROBE_S):
            return False
        session.padding = PaddingProbe(steps, estimate.bps, estimate.remb, estimate.rembs)
        return True

    def _padding(self, session: ViewerRung, video: RtpTarget, now: float) -> bool:
        """True while the viewer's padding probe runs. When a step passes, the padding
        grows on to the next; at the end `padded` is the highest rung that passed, and
        the one that failed is not padded for again before PADDING_BACKOFF_S."""
        probe, estimate = session.padding, session.estimate
        congested = video.padding_congested() or estimate.congested
        if not congested:
            if video.padding_until:
                return True
            if probe.ended is None:
                probe.ended = now
            if now < probe.ended + PADDING_SETTLE_S:
                return True
        video.stop_padding()
        rung, bps = probe.steps[probe.step]
        grew = estimate.rembs > probe.rembs and estimate.remb >= probe.remb * PADDING_REMB_GROWTH
        passed = grew and not congested
        # Growing, slowly (did the link come back during this step?): once more.
        slowly = not (congested or grew or probe.extended) and estimate.remb > probe.remb
        padding = bps - video.video_bps
        if slowly and video.start_padding(padding, PADDING_PROBE_S, padding):
            probe.extended, probe.ended = True, None
            probe.remb, probe.rembs = estimate.remb, estimate.rembs
            return True
        log.info(
            "viewer %s: padding probe of %s %s (REMB %s -> %s bit/s, %d drops, loss %.1f %%,"
            " %d NACKs)",
            session.id,
            rung,
            "passed" if passed else "failed",
            probe.remb,
            estimate.remb,
            estimate.remb_drops - video.padding_from[0],
            estimate.loss * 100,
            video.nacks_live - video.padding_from[1],
        )
        self.padding_probes["passed" if passed else "failed"] += 1
        if passed:
            estimate.on_probe(bps)
            probe.passed = rung
            if probe.step + 1 < len(probe.steps):  # on to the next rung up
                floor = bps - video.video_bps
                next_bps = probe.steps[probe.step + 1][1]
                if video.start_padding(next_bps - bps + floor, PADDING_PROBE_S, floor):
                    probe.step += 1
                    probe.remb, probe.rembs, probe.ended = estimate.remb, estimate.rembs, None
                    return True
        else:
            if congested and probe.passed is not None:
                # The link filled up at this step: the step below passed near its edge
                # (on a 1 Mbit/s link 540p passed, then 720p filled it, and the viewer
                # climbed to 540p into 82 % loss). A probe of that step alone decides,
                # once the link has drained.
                log.info("viewer %s: not climbing to %s", session.id, probe.passed)
                again = now + PADDING_BACKOFF_S + session.hold_jitter
                if session.probe_again_at.get(probe.passed, (0.0, 0.0))[0] < again:
                    session.probe_again_at[probe.passed] = (again, PADDING_BACKOFF_S)
                probe.passed = None
            wait = PADDING_BACKOFF_S
            # It cost video (NACKs beyond what the link loses anyway): wait longer.
            _, nacks, packets = video.padding_from
            nacks, packets = video.nacks_live - nacks, video.packets - packets
            if estimate.too_many(nacks, packets, 0.0):
                last = session.probe_again_at.get(rung, (0.0, PADDING_BACKOFF_S / 2))[1]
                wait = min(2 * last, PADDING_BACKOFF_MAX_S)
            session.probe_again_at[rung] = (now + wait + session.hold_jitter, wait)
            session.climbed = None
            # What the padding made the link lose says nothing of the rung without it
            # (a loss figure covers 100 packets: 2 s of 360p, enough to go audio only).
            estimate.recount()
            session.lossy_since = None
        session.padding = None
        if probe.passed is not None:
            session.padded = (probe.passed, probe.estimate, now)
        return False

    @staticmethod
    def _start_trial(
        session: ViewerRung, video: RtpTarget, now: float, estimate: int, kind: str
    ) -> None:
        """The lowest rung on trial (see `_probing`): it stays if it arrives."""
        session.trial = kind
        session.probe_until = now + PROBE_GRACE_S
        session.probe_from = (estimate, video.nacks_live, video.packets)
        session.trial_remb_low = session.estimate.remb or 0
        session.trial_switches = video.switches

    def _stay(self, video: RtpTarget) -> None:
        """Call off the viewer's switch: it stays on its stream (from that stream's next
        keyframe when it already stopped where the rung's keyframe was due, or was held
        until the rung's keyframe: HOPELESS_LOSS)."""
        if (video.holding or video.paused) and video.fanout is not None:
            stream = video.fanout.stream
            self.fanout.pause(video)
            self.fanout.switch(video, stream)
        elif video.joining is not None:
            video.joining.cancel_join(video)

    def _crowd_rung_late(self, session: ViewerRung, video: RtpTarget) -> bool:
        """A crowd start still waiting for its rung's first keyframe after
        CROWD_RUNG_WAIT_S: the viewer goes live at its own stream's next keyframe."""
        if not video.paused or video.joining is None:
            session.crowd_wait_until = 0.0  # live (or held for another reason)
            return False
        if time.monotonic() < session.crowd_wait_until:
            return True
        session.crowd_wait_until = 0.0
        log.warning("viewer %s: no keyframe of %s yet", session.id, video.joining.stream.name)
        self.fanout.switch(video, session.stream)
        return True

    def _held_too_long(self, session: ViewerRung, video: RtpTarget, now: float) -> bool:
        """A switch whose rung never brought the keyframe the viewer stopped for: the
        viewer goes back to its own stream at that stream's next keyframe."""
        if not video.holding or video.fanout is None:
            session.held_since = None
            return False
        if session.held_since is None:
            session.held_since = now
        if now - session.held_since < HOLD_MAX_S:
            return False
        log.warning(
            "viewer %s: rung keyframe late; staying on %s", session.id, video.fanout.stream.name
        )
        self._stay(video)
        session.held_since = None
        session.probe_until = 0.0
        return True

    def _probing(self, session: ViewerRung, video: RtpTarget, now: float, estimate: int) -> bool:
        """True while a probe runs (a higher rung, or the lowest after audio only); at its
        end (or when the viewer loses packets) decides whether the link carries it."""
        start_estimate, start_nacks, start_packets = session.probe_from
        remb = session.estimate.remb
        if session.trial is not None and remb is not None:
            session.trial_remb_low = min(session.trial_remb_low or remb, remb)
        # The rung's keyframe came since the last look (a rung started for the viewer
        # makes one at once: often within a tick, and the trial was then judged at once
        # on the loss of the flood that made it go down: 83 % "lost", audio only).
        joined = video.switches != session.trial_switches
        if session.trial is not None and (
            video.joining is not None or joined or now < session.probe_settle_until
        ):
            # The lowest rung on trial: the viewer first NACKs and reports as lost what
            # its link dropped before (a pause, the burst that made it go down); judge
            # only what comes after its keyframe.
            if video.joining is not None or joined:
                session.trial_switches = video.switches
                settle = DOWN_SETTLE_S if session.trial == "down" else RESUME_SETTLE_S
                session.probe_settle_until = now + settle
                session.probe_until = now + PROBE_GRACE_S
            # A receiver report counted now still spans packets lost before the keyframe.
            session.estimate.recount()
            session.probe_from = (start_estimate, video.nacks_live, video.packets)
            return True
        sent, nacks = video.packets - start_packets, video.nacks_live - start_nacks
        nacked = nacks / sent if sent > 0 else 0.0
        lossy = session.estimate.congested
        # (After a switch down the viewer still NACKs the loss that made it go down.)
        if session.trial != "down":
            lossy = lossy or session.estimate.too_many(nacks, sent, PROBE_NACK_LIMIT)
        if video.joining is not None and not lossy:
            session.probe_until = now + PROBE_GRACE_S  # the probe starts at the rung's key
            return True
        grew = estimate >= start_estimate * PROBE_REMB_GROWTH
        if now < session.probe_until and not lossy:
            keyframe_at = session.probe_until - PROBE_GRACE_S
            if now - keyframe_at < PROBE_MIN_S or not grew or session.trial is not None:
                return True
            # else: the rung arrived without loss and the REMB grew already: it holds
        session.probe_until = 0.0
        rung = video.joining or video.fanout
        if rung is None:
            return False
        name = rung.stream.name
        # A loss-based figure cut by the higher rung's tail says nothing of this one, nor
        # does a REMB that a drained queue sent to its floor (50 kbit/s) and that climbs
        # back (8 % a second) while the rung arrives whole: that viewer went audio only
        # for 10 s. A REMB that stays low says the link is that slow.
        carried = max(estimate, remb or 0)
        arrived = (
            sent > 0
            and not session.estimate.too_many(nacks, sent, PROBE_NACK_LIMIT)
            and remb is not None
            and remb >= session.trial_remb_low * TRIAL_REMB_CLIMB
        )
        if not lossy and (
            session.trial == "resume"  # after audio only the lowest rung has to arrive
            or grew
            or (session.trial == "down" and (carried >= AUDIO_ONLY_BPS or arrived))
        ):
            session.estimate.on_probe(int(rung.bitrate_bps))  # it arrived: the link carries it
            estimate = session.estimate.bps
            session.proven = (name, estimate)
            session.climbed = None if session.trial is not None else name
            session.probe_again_at.pop(name, None)
        else:  # failed: the next probe of this rung waits twice as long as the last
            wait = min(2 * session.probe_again_at.get(name, (0.0, PROBE_BACKOFF_S / 2))[1], 60)
            session.probe_again_at[name] = (now + wait + session.hold_jitter, wait)
            if video.joining is not None and session.trial is None:
                self._stay(video)  # failed before its keyframe: the switch up is off
            log.info(
                "viewer %s: probe of %s failed (estimate %d -> %d bit/s, REMB %s, loss"
                " %.1f %%, %.1f %% NACKed); next in %.0f s",
                session.id,
                name,
                start_estimate,
                estimate,
                session.estimate.remb,
                session.estimate.loss * 100,
                nacked * 100,
                wait,
            )
        return False

    @staticmethod
    def _too_high(session: ViewerRung, name: str, bitrate: int, estimate: int) -> bool:
        """Is the viewer's current rung more than its estimate carries?"""
        if session.estimate.congested:
            return True
        if session.proven is not None and session.proven[0] == name:
            return estimate < session.proven[1] * DOWN_MARGIN
        return bitrate * DOWN_MARGIN > estimate
