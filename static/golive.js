// "How to go live" on the teacher page: OBS's Server and Stream key with copy buttons, QR
// codes a phone RTMP app scans (Larix's set-up link and the plain URL), WHIP with its
// bearer token, stream-key rotation and the projector join screen.
(function () {
  AirI18n.register({
    ko: {
      "g.obs": "OBS 등 인코더 (RTMP)", "g.server": "서버", "g.key": "스트림 키", "g.copy": "복사", "g.copied": "복사했습니다",
      "g.key_help": "스트림 키는 선생님 전용이며 새로 만들기 전까지 계속 쓸 수 있습니다. 다른 사람에게 알려 주지 마세요.",
      "g.rotate": "스트림 키 새로 만들기", "g.confirm_rotate": "새 키를 만들면 지금 키로는 더 이상 방송할 수 없습니다. 계속할까요?",
      "g.rotated": "새 스트림 키를 만들었습니다. 인코더에 새 키를 넣어 주세요.",
      "g.phone": "휴대폰: Larix Broadcaster 또는 다른 RTMP 앱", "g.qr_larix": "휴대폰 카메라로 찍으면 Larix가 자동으로 설정됩니다",
      "g.qr_rtmp": "다른 앱용 RTMP 주소", "g.url": "전체 주소", "g.whip": "WHIP (OBS 30 이상, 기타 WebRTC 인코더)",
      "g.whip_url": "WHIP 주소", "g.bearer": "Bearer 토큰", "g.whip_help": "Bearer 토큰은 몇 시간 동안만 유효합니다. 위의 스트림 키는 만료되지 않습니다.",
      "g.present": "프로젝터용 참여 화면 열기", "g.hidden": "이 키는 다시 표시할 수 없습니다. 새로 만들어 주세요.",
    },
    en: {
      "g.obs": "OBS and other encoders (RTMP)", "g.server": "Server", "g.key": "Stream key", "g.copy": "Copy", "g.copied": "Copied",
      "g.key_help": "The stream key is yours and lasts until you rotate it. Keep it secret.",
      "g.rotate": "Rotate stream key", "g.confirm_rotate": "After rotating, the current key can no longer go live. Continue?",
      "g.rotated": "New stream key made. Put the new key in your encoder.",
      "g.phone": "Phone: Larix Broadcaster or another RTMP app", "g.qr_larix": "Scan with the phone camera: Larix sets itself up",
      "g.qr_rtmp": "The RTMP URL, for other apps", "g.url": "Full URL", "g.whip": "WHIP (OBS 30 or newer, other WebRTC encoders)",
      "g.whip_url": "WHIP URL", "g.bearer": "Bearer token", "g.whip_help": "The bearer token is valid for a few hours; the stream key above does not expire.",
      "g.present": "Open the join screen for the projector", "g.hidden": "This key cannot be shown again: rotate it to get a new one.",
    },
  });
  const $ = (id) => document.getElementById(id);
  const button = $("t-publish-info");
  if (!button || document.getElementById("t-app").dataset.mode === "monitor") return;
  const token = () => sessionStorage.getItem("airclass.teacher_token");
  const sessionId = () => sessionStorage.getItem("airclass.teacher_session");
  const urls = [];

  async function call(method, path) {
    const resp = await fetch(path, { method, headers: { Authorization: "Bearer " + token() } });
    if (!resp.ok) throw AirI18n.httpError(resp.status, (await resp.json().catch(() => ({}))).error);
    return resp;
  }
  async function qr(img, app) {
    const blob = await (await call("GET", `/api/sessions/${encodeURIComponent(sessionId())}/go-live/qr?app=${app}`)).blob();
    const url = URL.createObjectURL(blob);
    urls.push(url);
    img.src = url;
  }
  async function show() {
    const data = await (await call("GET", `/api/sessions/${encodeURIComponent(sessionId())}/go-live`)).json();
    urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    $("g-server").textContent = data.server;
    $("g-key").textContent = data.stream_key || AirI18n.t("g.hidden");
    $("g-rtmp-url").textContent = data.rtmp_url || "";
    $("g-whip-url").textContent = data.whip_url;
    $("g-whip-token").textContent = data.whip_token;
    const code = document.getElementById("t-code").textContent.trim();
    $("g-present").href = "/present?code=" + encodeURIComponent(code);
    $("g-panel").hidden = false;
    if (data.stream_key) await Promise.all([qr($("g-qr-larix"), "larix"), qr($("g-qr-rtmp"), "rtmp")]);
  }
  button.addEventListener("click", () => {
    if (!$("g-panel").hidden) { $("g-panel").hidden = true; return; }
    show().catch((err) => { $("t-error").textContent = err.message; });
  });
  document.querySelectorAll(".g-copy").forEach((b) => b.addEventListener("click", async () => {
    await navigator.clipboard.writeText($(b.dataset.copy).textContent).catch(() => {});
    $("g-state").textContent = AirI18n.t("g.copied");
  }));
  $("g-rotate").addEventListener("click", async () => {
    if (!confirm(AirI18n.t("g.confirm_rotate"))) return;
    await call("POST", "/api/stream-key/rotate");
    await show();
    $("g-state").textContent = AirI18n.t("g.rotated");
  });
})();
