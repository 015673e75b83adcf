// Student player: WHEP (WebRTC) playback of one stream, live/offline state, reconnects
// by itself with a fresh token (a cluster may send it to another node).
(function () {
  AirI18n.register({
    ko: {
      "player.connecting": "연결 중…", "player.waiting": "선생님이 방송을 시작하기를 기다리는 중…",
      "player.reconnecting": "다시 연결하는 중…", "player.audio_only": "연결이 약해 소리만 듣고 있습니다. 연결이 좋아지면 화면이 다시 나옵니다.", "player.live": "", "player.unmute": "눌러서 소리 켜기",
      "player.error": "연결할 수 없습니다. 다시 시도합니다…", "state.live": "방송 중", "state.offline": "오프라인",
      "player.full": "서버가 가득 찼습니다. 잠시 후 다시 시도합니다…",
      "player.unknown": "이 이름의 방송이 아직 없습니다. 링크를 확인하거나 선생님이 수업을 열 때까지 기다리세요.",
      "state.unknown": "없는 방송", "player.private": "비공개 수업입니다. 선생님이 알려 준 참여 코드로 참여하면 볼 수 있습니다.",
    },
    en: {
      "player.connecting": "Connecting…", "player.waiting": "Waiting for the teacher to go live…",
      "player.reconnecting": "Reconnecting…", "player.audio_only": "Weak connection: audio only for now. The picture comes back when the connection improves.", "player.live": "", "player.unmute": "Tap to unmute",
      "player.error": "Cannot connect. Retrying…", "state.live": "LIVE", "state.offline": "offline",
      "player.full": "The server is full. Retrying soon…",
      "player.unknown": "There is no stream with this name yet. Check the link, or wait for the teacher to open the class.",
      "state.unknown": "unknown stream", "player.private": "This class is private: join it with the code from your teacher to watch.",
    },
  });

  const stream = document.getElementById("player").dataset.stream;
  const video = document.getElementById("video");
  const overlay = document.getElementById("overlay");
  const stateText = document.getElementById("state-text");
  const badge = document.getElementById("live-badge");
  const statsText = document.getElementById("player-stats");
  const unmute = document.getElementById("unmute");

  const userId = localStorage.getItem("airclass.userId") ||
    (() => { const id = "student-" + Math.random().toString(36).slice(2, 10); localStorage.setItem("airclass.userId", id); return id; })();

  let pc = null, sessionUrl = null, retryDelay = 1000, retryTimer = null, lastFrames = 0, stalledSince = null;
  let lastGrant = null, framesAtConnect = 0;
  const player = { state: "connecting", live: false, reconnects: 0, iceRestarts: 0 };
  window.airclassPlayer = player;

  function setState(state, key) {
    player.state = state;
    overlay.hidden = state === "playing";
    if (key) { stateText.dataset.i18n = key; stateText.textContent = AirI18n.t(key); }
  }
  // known: false when the node has no such stream (never announced): "unknown", not "offline".
  function setLive(live, known = true) {
    player.live = live;
    player.known = known;
    badge.dataset.i18n = live ? "state.live" : known ? "state.offline" : "state.unknown";
    badge.textContent = AirI18n.t(badge.dataset.i18n);
    badge.classList.toggle("live", live);
  }
  player.framesDecoded = () => (video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality().totalVideoFrames : 0);

  // A student who joined this class session watches with the join token (private streams).
  function joinedToken() {
    const session = new URLSearchParams(location.search).get("session");
    const token = sessionStorage.getItem("airclass.token");
    return session && token && sessionStorage.getItem("airclass.session") === session ? token : null;
  }

  async function getToken() {
    const joined = joinedToken();
    if (joined) {
      // Where to watch from now (a node chosen at join time may have died since).
      const res = await fetch("/api/streams/" + encodeURIComponent(stream) + "/route", { headers: { Authorization: "Bearer " + joined } });
      if (!res.ok) throw httpError("route", res);
      const route = await res.json();
      return { token: joined, whep_url: route.whep_url, ice_servers: route.ice_servers };
    }
    const q = new URLSearchParams({ user_type: "student", action: "read", stream, user_id: userId });
    const res = await fetch("/api/token?" + q, { method: "POST" });
    if (!res.ok) throw httpError("token", res);
    return res.json();
  }

  function httpError(what, res) {
    const err = new Error(what + " " + res.status);
    err.status = res.status;
    err.retryAfterMs = 1000 * (parseInt(res.headers.get("Retry-After"), 10) || 5);
    return err;
  }

  function waitGathering(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", done); resolve(); } };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ms);
    });
  }

  // A WHEP session on a new peer connection: { pc, sessionUrl } (error.status on failure).
  // The caller shows its tracks (ontrack) and watches its state.
  async function openWhep(grant, onTrack) {
    const { token, whep_url, ice_servers } = grant;
    // STUN/TURN from the node (TURN with short-lived credentials): a relay for
    // networks that block UDP to the node.
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: ice_servers || [] });
    try {
      const vt = pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      if (RTCRtpReceiver.getCapabilities && vt.setCodecPreferences) {
        const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
        const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264");
        if (h264.length) vt.setCodecPreferences([...h264, ...codecs.filter((c) => !h264.includes(c))]);
      }
      pc.ontrack = onTrack;
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathering(pc, 2000);
      const res = await fetch(whep_url, {
        method: "POST", body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token },
      });
      if (res.status !== 201) throw httpError("WHEP", res);
      const url = new URL(res.headers.get("Location"), whep_url).toString();
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      return { pc, sessionUrl: url };
    } catch (err) {
      pc.close();
      throw err;
    }
  }

  function showTrack(ev) {
    if (!video.srcObject) video.srcObject = new MediaStream();
    video.srcObject.addTrack(ev.track);
    video.play().catch(() => {});
  }

  // A path that died (a phone moving from Wi-Fi to LTE, a node that died) shows as
  // "disconnected" within seconds (ICE consent checks go unanswered); Chromium would wait
  // ~30 s for "failed". After 2 s: recover().
  let disconnectTimer = null;
  function watchConnection() {
    const peer = pc;
    pc.onconnectionstatechange = () => {
      if (pc !== peer) return;
      clearTimeout(disconnectTimer);
      if (peer.connectionState === "closed") scheduleRetry("player.reconnecting");
      else if (peer.connectionState === "failed") recover();
      else if (peer.connectionState === "disconnected") {
        disconnectTimer = setTimeout(() => { if (pc === peer && peer.connectionState === "disconnected") recover(); }, 2000);
      }
    };
  }

  // First an ICE restart on the same session (new addresses, same node): the session, its
  // rendition and the decoder stay, media is back within a round trip of the new path.
  // A new session when the node refuses it or nothing arrives within RESTART_WAIT_MS on
  // a path that did not come back. One that did (connected, yet silent) carries a quiet
  // source (a publisher stalled): silence alone restarts nothing for QUIET_MS then.
  const RESTART_WAIT_MS = 6000, QUIET_MS = 30000;
  let restarting = null;  // the peer connection whose restart waits for media
  let quietSince = 0;
  async function recover() {
    const peer = pc;
    if (!peer || !sessionUrl || restarting === peer) {
      if (!peer || !sessionUrl) scheduleRetry("player.reconnecting");
      return;
    }
    restarting = peer;
    setState("connected", "player.reconnecting");
    setTimeout(() => {
      if (pc !== peer || restarting !== peer) return;
      if (peer.connectionState !== "connected") return scheduleRetry("player.reconnecting");
      restarting = null;
      quietSince = Date.now();
    }, RESTART_WAIT_MS);
    try {
      await AirIceRestart(peer, sessionUrl);
      player.iceRestarts += 1;
    } catch (err) {
      console.warn("airclass ICE restart:", err);
      if (pc === peer) scheduleRetry("player.reconnecting");
    }
  }

  async function connect() {
    clearTimeout(retryTimer);
    teardown();
    try {
      const grant = await getToken();
      lastGrant = grant;
      player.whepUrl = grant.whep_url;
      framesAtConnect = player.framesDecoded();
      armFallback();
      let opened;
      try {
        opened = await openWhep(grant, showTrack);
      } catch (err) {
        if (err.status !== 404) throw err;
        setLive(false, false);
        return scheduleRetry("player.unknown", unknownDelay());
      }
      ({ pc, sessionUrl } = opened);
      watchConnection();
      retryDelay = 1000;
      setState("connected", player.live ? "player.connecting" : "player.waiting");
    } catch (err) {
      console.warn("airclass player:", err);
      if (err.status === 503) scheduleRetry("player.full", err.retryAfterMs);  // every node full
      else if (err.status === 404) { setLive(false, false); scheduleRetry("player.unknown", unknownDelay()); }
      else if (err.status === 403) { player.private = true; setLive(false); scheduleRetry("player.private", unknownDelay()); }
      else scheduleRetry("player.error");
    }
  }

  function teardown() {
    stopHls();
    // keepalive: the DELETE outlives a closing page (else the node streams on until it
    // finds the viewer silent).
    if (sessionUrl) { fetch(sessionUrl, { method: "DELETE", keepalive: true }).catch(() => {}); sessionUrl = null; }
    if (pc) { pc.onconnectionstatechange = null; pc.close(); pc = null; }
    if (video.srcObject) { video.srcObject.getTracks().forEach((t) => t.stop()); video.srcObject = null; }
  }

  // --- HLS fallback: when WebRTC gives no picture (UDP blocked, no TURN), play the
  // node's Low-Latency HLS with hls.js (loaded only then), or natively on Safari; say so
  // quietly and keep probing WebRTC in the background, switching back when it works.
  AirI18n.register({
    ko: { "player.hls": "호환 모드(HLS) · 지연이 조금 더 깁니다" },
    en: { "player.hls": "compatibility mode (HLS) · a little more delay" },
  });
  const FALLBACK_MS = 6000, PROBE_MS = 30000, PROBE_WAIT_MS = 8000;
  let hls = null, fallbackTimer = null, probeTimer = null, hlsScript = null;
  player.transport = "webrtc";
  // Type of the local ICE candidate WebRTC plays through ("host", "relay", ...), or null.
  player.candidateType = async () => {
    if (!pc) return null;
    let type = null;
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === "transport" && r.selectedCandidatePairId) {
        const pair = stats.get(r.selectedCandidatePairId);
        const local = pair && stats.get(pair.localCandidateId);
        if (local) type = local.candidateType;
      }
    });
    return type;
  };

  function armFallback() {
    clearTimeout(fallbackTimer);
    fallbackTimer = setTimeout(() => {
      if (player.transport === "webrtc" && player.live && player.framesDecoded() <= framesAtConnect) startHls();
    }, FALLBACK_MS);
  }

  function loadHlsJs() {
    if (window.Hls) return Promise.resolve();
    hlsScript = hlsScript || new Promise((resolve, reject) => {
      const el = document.createElement("script");
      el.src = "/static/vendor/hlsjs/hls.min.js";
      el.onload = resolve;
      el.onerror = () => { hlsScript = null; reject(new Error("hls.js did not load")); };
      document.head.appendChild(el);
    });
    return hlsScript;
  }

  async function startHls() {
    teardown();
    clearTimeout(retryTimer);
    player.transport = "hls";
    statsText.dataset.transport = "hls";
    setState("connected", "player.connecting");
    try {
      const grant = lastGrant || await getToken();
      const url = grant.whep_url.replace(/\/whep$/, "/index.m3u8") + "?token=" + encodeURIComponent(grant.token);
      const mse = window.MediaSource || window.ManagedMediaSource;
      if (!mse && video.canPlayType("application/vnd.apple.mpegurl")) {
        video.src = url;  // Safari without MSE: native HLS
      } else {
        await loadHlsJs();
        if (player.transport !== "hls") return;
        // No worker: the page's CSP allows no blob: scripts.
        hls = new window.Hls({ lowLatencyMode: true, enableWorker: false, backBufferLength: 10 });
        hls.on(window.Hls.Events.ERROR, (_ev, data) => {
          if (data.fatal) { console.warn("airclass hls:", data.details); scheduleRetry("player.reconnecting"); }
        });
        hls.loadSource(url);
        hls.attachMedia(video);
      }
      video.play().catch(() => {});
      clearTimeout(probeTimer);
      probeTimer = setTimeout(probeWebrtc, PROBE_MS);
    } catch (err) {
      console.warn("airclass hls:", err);
      scheduleRetry("player.error");
    }
  }

  function stopHls() {
    clearTimeout(fallbackTimer);
    clearTimeout(probeTimer);
    if (player.transport !== "hls") return;
    player.transport = "webrtc";
    delete statsText.dataset.transport;
    if (hls) { hls.destroy(); hls = null; }
    video.removeAttribute("src");
    video.load();
  }

  // In the background: a WHEP session not shown; once its video packets flow, switch.
  async function probeWebrtc() {
    if (player.transport !== "hls") return;
    let probe = null;
    try {
      const grant = await getToken();
      probe = await openWhep(grant, () => {});
      const deadline = Date.now() + PROBE_WAIT_MS;
      while (Date.now() < deadline && player.transport === "hls") {
        await new Promise((r) => setTimeout(r, 500));
        const stats = await probe.pc.getStats();
        let packets = 0;
        stats.forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video") packets = r.packetsReceived || 0; });
        if (packets > 0) {
          const tracks = probe.pc.getReceivers().map((r) => r.track);
          stopHls();
          ({ pc, sessionUrl } = probe);
          probe = null;
          video.srcObject = new MediaStream(tracks);
          video.play().catch(() => {});
          watchConnection();
          framesAtConnect = player.framesDecoded();
          return;
        }
      }
    } catch (err) {
      console.warn("airclass probe:", err);
    } finally {
      if (probe) {
        fetch(probe.sessionUrl, { method: "DELETE" }).catch(() => {});
        probe.pc.close();
      }
    }
    if (player.transport === "hls") probeTimer = setTimeout(probeWebrtc, PROBE_MS);
  }

  function scheduleRetry(key, delay) {
    teardown();
    player.reconnects += 1;
    setState("reconnecting", key);
    clearTimeout(retryTimer);
    // Jittered (x0.5-1.5): when a media worker or node dies, its hundreds of viewers do
    // not all come back in the same instant (a join storm).
    retryTimer = setTimeout(connect, (delay || retryDelay) * (0.5 + Math.random()));
    retryDelay = Math.min(retryDelay * 2, 10000);
  }

  // An unknown stream (a typo in the link?) is asked about less and less often.
  let unknownTries = 0;
  function unknownDelay() { return Math.min(5000 * 2 ** unknownTries++, 60000); }

  async function pollLive() {
    let listed = false;
    try {
      const joined = joinedToken();
      const res = await fetch("/api/streams/" + encodeURIComponent(stream), joined ? { headers: { Authorization: "Bearer " + joined } } : {});
      listed = res.ok;
      // A private stream is not listed to visitors (404): it is still not "unknown".
      setLive(res.ok && (await res.json()).live, res.status !== 404 || !!player.private);
    } catch (err) { setLive(false); }
    if (listed) unknownTries = 0;
    setTimeout(pollLive, listed ? 3000 : unknownDelay());
  }

  // Watchdog, every second, from the browser's own receive counters:
  // - video arriving but no frame decoded for 10 s: a stuck decoder -> reconnect;
  // - audio arriving, video not (the server paused video on a weak link): say "audio only".
  let received = null, countedPc = null, audioOnly = false;
  async function receivedBytes() {
    const now = { audio: 0, video: 0 };
    (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind in now) now[s.kind] += s.bytesReceived || 0; });
    return now;
  }
  setInterval(async () => {
    const frames = player.framesDecoded();
    let flowing = null;
    if (pc && player.transport === "webrtc") {
      const peer = pc;
      const now = await receivedBytes().catch(() => null);
      if (now && peer === pc) {
        if (countedPc === peer) flowing = { audio: now.audio > received.audio, video: now.video > received.video };
        countedPc = peer;
        received = now;
      }
    }
    const watching = player.state === "playing" || player.state === "connected";
    audioOnly = !!(flowing && flowing.audio && !flowing.video && frames === lastFrames && watching);
    player.audioOnly = audioOnly;
    if (frames > lastFrames) {
      stalledSince = null;
      if (player.state !== "playing") setState("playing");
    } else if (audioOnly) {
      stalledSince = null;
      setState("connected", "player.audio_only");
    } else if (watching) {
      stalledSince = stalledSince || Date.now();
      if (player.state === "playing") setState("connected", player.live ? "player.reconnecting" : "player.waiting");
      if (player.live && Date.now() - stalledSince > 10000) { stalledSince = null; scheduleRetry("player.reconnecting"); }
    }
    lastFrames = frames;
    if (video.videoWidth) {
      statsText.textContent = video.videoWidth + "×" + video.videoHeight +
        (player.transport === "hls" ? " · " + AirI18n.t("player.hls") : "");
    }
  }, 1000);

  // Silence, every 250 ms: nothing at all received for 1 s on a connection that carried
  // media, while live (audio alone is 50 packets a second): the path or the node died ->
  // recover(). (No bytes yet is ICE or a UDP block, which the HLS fallback handles.)
  const SILENCE_CHECK_MS = 250, SILENCE_MS = 1000;
  let silentPc = null, silentBytes = 0, silentSince = null;
  setInterval(async () => {
    const peer = pc;
    if (!peer || player.transport !== "webrtc") return;
    const now = await receivedBytes().catch(() => null);
    if (!now || peer !== pc) return;
    const bytes = now.audio + now.video;
    if (silentPc !== peer || bytes > silentBytes) {
      silentPc = peer;
      silentBytes = bytes;
      silentSince = null;
      if (restarting === peer && bytes > 0) restarting = null;  // the restart brought media
      return;
    }
    const watching = player.state === "playing" || player.state === "connected";
    const quiet = Date.now() - quietSince < QUIET_MS;
    if (!watching || !player.live || bytes === 0 || quiet) { silentSince = null; return; }
    silentSince = silentSince || Date.now() - SILENCE_CHECK_MS;  // silent since the last check
    if (Date.now() - silentSince >= SILENCE_MS) recover();
  }, SILENCE_CHECK_MS);

  unmute.addEventListener("click", () => { video.muted = false; video.play().catch(() => {}); unmute.hidden = true; });
  window.addEventListener("pagehide", teardown);
  pollLive();
  connect();
})();
