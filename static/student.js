// Student player: WHEP (WebRTC) playback of one stream, live/offline state, reconnects
// by itself with a fresh token (a cluster may send it to another node).
(function () {
  AirI18n.register({
    ko: {
      "player.connecting": "연결 중…", "player.waiting": "선생님이 방송을 시작하기를 기다리는 중…",
      "player.reconnecting": "다시 연결하는 중…", "player.live": "", "player.unmute": "눌러서 소리 켜기",
      "player.error": "연결할 수 없습니다. 다시 시도합니다…", "state.live": "방송 중", "state.offline": "오프라인",
      "player.full": "서버가 가득 찼습니다. 잠시 후 다시 시도합니다…",
      "player.unknown": "이 이름의 방송이 아직 없습니다. 링크를 확인하거나 선생님이 수업을 열 때까지 기다리세요.",
      "state.unknown": "없는 방송", "player.private": "비공개 수업입니다. 선생님이 알려 준 참여 코드로 참여하면 볼 수 있습니다.",
    },
    en: {
      "player.connecting": "Connecting…", "player.waiting": "Waiting for the teacher to go live…",
      "player.reconnecting": "Reconnecting…", "player.live": "", "player.unmute": "Tap to unmute",
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
  const player = { state: "connecting", live: false, reconnects: 0 };
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
    if (joined && sessionStorage.getItem("airclass.whep_url")) {
      return { token: joined, whep_url: sessionStorage.getItem("airclass.whep_url") };
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

  async function connect() {
    clearTimeout(retryTimer);
    teardown();
    try {
      const { token, whep_url, ice_servers } = await getToken();
      // STUN/TURN from the node (TURN with short-lived credentials): a relay for
      // networks that block UDP to the node.
      pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: ice_servers || [] });
      const vt = pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      if (RTCRtpReceiver.getCapabilities && vt.setCodecPreferences) {
        const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
        const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264");
        if (h264.length) vt.setCodecPreferences([...h264, ...codecs.filter((c) => !h264.includes(c))]);
      }
      pc.ontrack = (ev) => {
        if (!video.srcObject) video.srcObject = new MediaStream();
        video.srcObject.addTrack(ev.track);
        video.play().catch(() => {});
      };
      pc.onconnectionstatechange = () => {
        if (pc && (pc.connectionState === "failed" || pc.connectionState === "closed")) scheduleRetry("player.reconnecting");
      };
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathering(pc, 2000);
      const res = await fetch(whep_url, {
        method: "POST", body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + token },
      });
      if (res.status === 404) { setLive(false, false); return scheduleRetry("player.unknown", 5000); }
      if (res.status !== 201) throw httpError("WHEP", res);
      sessionUrl = new URL(res.headers.get("Location"), whep_url).toString();
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      retryDelay = 1000;
      setState("connected", player.live ? "player.connecting" : "player.waiting");
    } catch (err) {
      console.warn("airclass player:", err);
      if (err.status === 503) scheduleRetry("player.full", err.retryAfterMs);  // every node full
      else if (err.status === 403) { player.private = true; setLive(false); scheduleRetry("player.private", 10000); }
      else scheduleRetry("player.error");
    }
  }

  function teardown() {
    if (sessionUrl) { fetch(sessionUrl, { method: "DELETE" }).catch(() => {}); sessionUrl = null; }
    if (pc) { pc.onconnectionstatechange = null; pc.close(); pc = null; }
    if (video.srcObject) { video.srcObject.getTracks().forEach((t) => t.stop()); video.srcObject = null; }
  }

  function scheduleRetry(key, delay) {
    teardown();
    player.reconnects += 1;
    setState("reconnecting", key);
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay || retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  }

  async function pollLive() {
    try {
      const joined = joinedToken();
      const res = await fetch("/api/streams/" + encodeURIComponent(stream), joined ? { headers: { Authorization: "Bearer " + joined } } : {});
      // A private stream is not listed to visitors (404): it is still not "unknown".
      setLive(res.ok && (await res.json()).live, res.status !== 404 || !!player.private);
    } catch (err) { setLive(false); }
  }

  // Watchdog: frames flowing -> playing; live but no frames for 10 s -> reconnect.
  setInterval(() => {
    const frames = player.framesDecoded();
    if (frames > lastFrames) {
      stalledSince = null;
      if (player.state !== "playing") setState("playing");
    } else if (player.state === "playing" || player.state === "connected") {
      stalledSince = stalledSince || Date.now();
      if (player.state === "playing") setState("connected", player.live ? "player.reconnecting" : "player.waiting");
      if (player.live && Date.now() - stalledSince > 10000) { stalledSince = null; scheduleRetry("player.reconnecting"); }
    }
    lastFrames = frames;
    if (video.videoWidth) statsText.textContent = video.videoWidth + "×" + video.videoHeight;
  }, 1000);

  unmute.addEventListener("click", () => { video.muted = false; video.play().catch(() => {}); unmute.hidden = true; });
  window.addEventListener("pagehide", teardown);
  setInterval(pollLive, 3000);
  pollLive();
  connect();
})();
