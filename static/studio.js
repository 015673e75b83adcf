// Teacher studio: go live from the browser over WHIP (camera or screen, microphone,
// 720p/1080p), with a preview, a live indicator and stop. Shown once teacher.js opened a
// class session (event "airclass:session"); publishes to that session's stream.
(function () {
  AirI18n.register({
    ko: {
      "s.title": "방송하기", "s.off": "방송 안 함", "s.elsewhere": "인코더(OBS·휴대폰 앱)로 방송 중", "s.connecting": "연결 중…", "s.live": "방송 중",
      "s.source": "화면 소스", "s.camera": "카메라", "s.screen": "화면 공유", "s.mic": "마이크",
      "s.quality": "화질", "s.q720": "720p · 2.5 Mbps", "s.q1080": "1080p · 4.5 Mbps",
      "s.preview": "미리 보기", "s.go": "방송 시작", "s.stop": "방송 종료",
      "s.no_preview": "소스를 고르고 미리 보기를 누르세요",
      "s.denied": "카메라/화면/마이크를 사용할 수 없습니다: {why}",
      "s.failed": "방송을 시작할 수 없습니다: {why}", "s.busy": "이 스트림은 이미 방송 중입니다 (다른 방송 프로그램).",
      "s.lost": "연결이 끊어졌습니다. 다시 방송을 시작하세요.",
      "s.insecure": "브라우저 방송에는 HTTPS 주소(또는 localhost)가 필요합니다. 또는 OBS로 RTMP/WHIP 방송을 하세요.", "s.sending": "{w}×{h} 전송 중",
    },
    en: {
      "s.title": "Go live", "s.off": "not live", "s.elsewhere": "live from an encoder (OBS, phone app)", "s.connecting": "connecting…", "s.live": "LIVE",
      "s.source": "Source", "s.camera": "Camera", "s.screen": "Share screen", "s.mic": "Microphone",
      "s.quality": "Quality", "s.q720": "720p · 2.5 Mbps", "s.q1080": "1080p · 4.5 Mbps",
      "s.preview": "Preview", "s.go": "Go live", "s.stop": "Stop",
      "s.no_preview": "Choose a source and press Preview",
      "s.denied": "Cannot use the camera/screen/microphone: {why}",
      "s.failed": "Cannot go live: {why}", "s.busy": "This stream is already live (another encoder).",
      "s.lost": "The connection was lost. Go live again.",
      "s.insecure": "Going live from the browser needs an HTTPS address (or localhost). Or publish with OBS (RTMP/WHIP).", "s.sending": "sending {w}×{h}",
    },
  });

  const $ = (id) => document.getElementById(id);
  const card = $("t-studio");
  if (!card) return;
  const QUALITY = {
    720: { width: 1280, height: 720, bitrate: 2500000 },
    1080: { width: 1920, height: 1080, bitrate: 4500000 },
  };
  let session = null, teacherToken = null, media = null, pc = null, location_ = null, publishToken = null;
  let infoTimer = null, streamLive = false;
  const studio = { state: "off" };
  window.airclassStudio = studio;

  function setState(state) {
    studio.state = state;
    const badge = $("s-state");
    const elsewhere = state === "off" && streamLive;  // OBS or a phone app is publishing
    badge.dataset.i18n = state === "live" ? "s.live" : state === "connecting" ? "s.connecting" : elsewhere ? "s.elsewhere" : "s.off";
    badge.textContent = AirI18n.t(badge.dataset.i18n);
    badge.classList.toggle("live", state === "live" || elsewhere);
    $("s-go").hidden = state !== "off";
    $("s-stop").hidden = state === "off";
    ["s-source", "s-mic", "s-quality", "s-preview-btn"].forEach((id) => ($(id).disabled = state !== "off"));
    if (!window.isSecureContext) ["s-preview-btn", "s-go"].forEach((id) => ($(id).disabled = true));
  }
  function fail(key, err) {
    $("s-error").textContent = AirI18n.t(key, { why: (err && (err.message || err.name)) || String(err) });
  }

  function stopCapture() {
    if (media) media.getTracks().forEach((t) => t.stop());
    media = null;
    $("s-preview").srcObject = null;
    $("s-preview-empty").hidden = false;
  }

  async function capture() {
    stopCapture();
    $("s-error").textContent = "";
    if (!navigator.mediaDevices) throw new Error(AirI18n.t("s.insecure"));  // not a secure context
    const q = QUALITY[$("s-quality").value];
    const video = { width: { ideal: q.width }, height: { ideal: q.height }, frameRate: { ideal: 30 } };
    const mic = $("s-mic").checked;
    const screen = $("s-source").value === "screen";
    let stream;
    if (screen) {
      stream = await navigator.mediaDevices.getDisplayMedia({ video, audio: false });
      if (mic) (await navigator.mediaDevices.getUserMedia({ audio: true })).getAudioTracks().forEach((t) => stream.addTrack(t));
    } else {
      stream = await navigator.mediaDevices.getUserMedia({ video, audio: mic });
    }
    const track = stream.getVideoTracks()[0];
    if (track) {
      track.contentHint = screen ? "detail" : "motion";
      track.addEventListener("ended", () => { if (studio.state !== "off") stop(); });  // "Stop sharing"
    }
    media = stream;
    $("s-preview").srcObject = stream;
    $("s-preview-empty").hidden = true;
    return stream;
  }

  function h264First(kind) {
    const codecs = RTCRtpSender.getCapabilities(kind).codecs;
    const rank = (c) => (/profile-level-id=42e0/.test(c.sdpFmtpLine || "") ? 0 : /profile-level-id=4200/.test(c.sdpFmtpLine || "") ? 1 : 2);
    const h264 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
    return [...h264.sort((a, b) => rank(a) - rank(b)), ...codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx")];
  }

  function waitGathering(peer, ms) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (peer.iceGatheringState === "complete") resolve(); };
      peer.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ms);
    });
  }

  async function goLive() {
    $("s-error").textContent = "";
    setState("connecting");
    try {
      if (!media) await capture();
    } catch (err) { setState("off"); return fail("s.denied", err); }
    try {
      const q = new URLSearchParams({ user_type: "teacher", action: "publish", stream: session.stream });
      const res = await fetch("/api/token?" + q, { method: "POST", headers: { Authorization: "Bearer " + teacherToken } });
      const grant = await res.json().catch(() => ({}));
      if (!res.ok) throw AirI18n.httpError(res.status, grant.error);
      publishToken = grant.token;
      const quality = QUALITY[$("s-quality").value];
      pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
      const videoTrack = media.getVideoTracks()[0];
      const vt = pc.addTransceiver(videoTrack, { direction: "sendonly", streams: [media],
        sendEncodings: [{ maxBitrate: quality.bitrate, maxFramerate: 30 }] });
      if (vt.setCodecPreferences) vt.setCodecPreferences(h264First("video"));
      const audioTrack = media.getAudioTracks()[0];
      if (audioTrack) pc.addTransceiver(audioTrack, { direction: "sendonly", streams: [media] });
      const peer = pc;
      let lostTimer = null;
      pc.onconnectionstatechange = () => {
        if (pc !== peer) return;
        clearTimeout(lostTimer);
        const state = peer.connectionState;
        if (state === "connected") { peer.restarting = false; setState("live"); }
        else if (state === "failed") reconnect(peer);
        else if (state === "disconnected") lostTimer = setTimeout(() => reconnect(peer), 2000);
      };
      await pc.setLocalDescription(await pc.createOffer());
      await waitGathering(pc, 2000);
      const post = await fetch(grant.whip_url, { method: "POST", body: pc.localDescription.sdp,
        headers: { "Content-Type": "application/sdp", Authorization: "Bearer " + publishToken } });
      if (post.status === 409) throw new Error(AirI18n.t("s.busy"));
      if (post.status !== 201) throw AirI18n.httpError(post.status, (await post.json().catch(() => ({}))).error);
      location_ = new URL(post.headers.get("Location"), grant.whip_url).toString();
      studio.location = location_;
      studio.pc = pc;
      await pc.setRemoteDescription({ type: "answer", sdp: await post.text() });
      const params = vt.sender.getParameters();
      if (params.encodings && params.encodings.length) {
        params.degradationPreference = videoTrack.contentHint === "detail" ? "maintain-resolution" : "balanced";
        await vt.sender.setParameters(params).catch(() => {});
      }
      clearInterval(infoTimer);
      infoTimer = setInterval(showSending, 2000);
    } catch (err) {
      fail("s.failed", err);
      stop();
    }
  }

  // A path that died under a live publish (a laptop moving to another network): an ICE
  // restart on the same session keeps the stream live for the class; "connection lost"
  // when the node refuses it or it brings no connection within RESTART_WAIT_MS.
  const RESTART_WAIT_MS = 8000;
  async function reconnect(peer) {
    const lost = () => { if (pc === peer) { fail("s.failed", AirI18n.t("s.lost")); stop(); } };
    if (pc !== peer || peer.connectionState === "connected") return;
    if (peer.restarting) return lost();
    peer.restarting = true;
    setState("connecting");
    setTimeout(() => { if (pc === peer && peer.connectionState !== "connected") lost(); }, RESTART_WAIT_MS);
    try {
      await AirIceRestart(peer, location_);
      studio.iceRestarts = (studio.iceRestarts || 0) + 1;
    } catch (err) {
      console.warn("airclass studio ICE restart:", err);
      lost();
    }
  }

  async function showSending() {
    if (!pc) return;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "outbound-rtp" && s.kind === "video" && s.frameWidth) {
        delete $("s-info").dataset.i18n;
        $("s-info").textContent = AirI18n.t("s.sending", { w: s.frameWidth, h: s.frameHeight });
      }
    });
  }

  function stop() {
    clearInterval(infoTimer);
    if (location_) {
      fetch(location_, { method: "DELETE", headers: { Authorization: "Bearer " + publishToken } }).catch(() => {});
      location_ = null;
    }
    if (pc) { pc.onconnectionstatechange = null; pc.close(); pc = null; }
    $("s-info").textContent = "";
    setState("off");
  }

  $("s-preview-btn").addEventListener("click", () => capture().catch((err) => fail("s.denied", err)));
  ["s-source", "s-quality", "s-mic"].forEach((id) => $(id).addEventListener("change", () => {
    if (media) capture().catch((err) => fail("s.denied", err));
  }));
  $("s-form").addEventListener("submit", (e) => { e.preventDefault(); goLive(); });
  $("s-stop").addEventListener("click", () => { stop(); stopCapture(); });
  window.addEventListener("pagehide", stop);
  document.addEventListener("airclass:session", (e) => {
    if (session && session.stream !== e.detail.session.stream && studio.state !== "off") { stop(); stopCapture(); }
    session = e.detail.session;
    teacherToken = e.detail.token;
    card.hidden = false;
  });
  // The session's stream went live or offline (teacher.js polls it).
  document.addEventListener("airclass:stream", (e) => {
    streamLive = !!e.detail.live;
    if (studio.state === "off") setState("off");
  });
  setState("off");
  if (!window.isSecureContext) {
    // Camera and screen capture need HTTPS: say so at once, not after a click.
    $("s-info").dataset.i18n = "s.insecure";
    $("s-info").textContent = AirI18n.t("s.insecure");
  }
})();
