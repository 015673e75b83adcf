// VOD: recordings list with record controls (teacher), and the player page (teacher, or
// a student with a signed link). Teacher token: sessionStorage "airclass.teacher_token".
(function () {
  AirI18n.register({
    ko: {
      "nav.home": "홈", "vod.teacher": "교사", "vod.title": "녹화 영상", "vod.stream": "스트림",
      "vod.start": "녹화 시작", "vod.stop": "녹화 중지", "vod.none": "아직 녹화 영상이 없습니다.",
      "vod.shots": "타임라인", "vod.segments": "세그먼트", "vod.share": "학생용 링크 복사",
      "vod.copied": "링크를 복사했습니다 ({hours}시간 유효)", "vod.play": "재생", "vod.delete": "삭제",
      "vod.confirmDelete": "이 녹화를 삭제할까요?", "vod.signin": "교사로 로그인하거나 공유 링크를 사용하세요.",
      "vod.storage": "녹화 {count}개, {used} 사용 · 디스크 여유 {free}",
      "vod.lowdisk": "디스크 공간 부족: 녹화를 시작할 수 없습니다",
      "vod.pending": "녹화가 아직 진행 중이거나 마무리 중입니다…",
      "vod.status.recording": "녹화 중", "vod.status.stopping": "중지 중", "vod.status.finalizing": "마무리 중",
      "vod.status.complete": "완료", "vod.status.failed": "실패",
      "vod.recovered": "(중단 후 복구됨)",
      "vod.part": "{part}부 (서버가 바뀐 뒤 이어서 녹화)",
    },
    en: {
      "nav.home": "Home", "vod.teacher": "Teacher", "vod.title": "Recordings", "vod.stream": "Stream",
      "vod.start": "Start recording", "vod.stop": "Stop recording", "vod.none": "No recordings yet.",
      "vod.shots": "Timeline", "vod.segments": "Segments", "vod.share": "Copy student link",
      "vod.copied": "Link copied (valid {hours} h)", "vod.play": "Play", "vod.delete": "Delete",
      "vod.confirmDelete": "Delete this recording?", "vod.signin": "Sign in as a teacher, or use a shared link.",
      "vod.storage": "{count} recordings, {used} used · {free} free on disk",
      "vod.lowdisk": "Low disk space: recording cannot start",
      "vod.pending": "This recording is still running or being finalized…",
      "vod.status.recording": "recording", "vod.status.stopping": "stopping", "vod.status.finalizing": "finalizing",
      "vod.status.complete": "complete", "vod.status.failed": "failed",
      "vod.recovered": "(recovered after an interruption)",
      "vod.part": "part {part} (continued on another server)",
    },
  });
  const t = AirI18n.t;
  const $ = (id) => document.getElementById(id);
  const app = $("vod-app");
  const token = sessionStorage.getItem("airclass.teacher_token");
  const SHARE_HOURS = 72;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const c of children) e.append(c);
    return e;
  }
  function clock(seconds) {
    const s = Math.max(0, Math.round(seconds || 0));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0") + ":" + String(r).padStart(2, "0");
    return h ? h + ":" + mm : mm;
  }
  function bytes(n) {
    if (n > 1e9) return (n / 1e9).toFixed(1) + " GB";
    return (n / 1e6).toFixed(1) + " MB";
  }
  function showError(message) { $("vod-error").textContent = message || ""; }

  async function api(method, path, body) {
    const resp = await fetch(path, {
      method,
      headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    if (resp.status === 401) {
      sessionStorage.removeItem("airclass.teacher_token");
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
      throw new Error("signed out");
    }
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw AirI18n.httpError(resp.status, data.error || resp.statusText);
    return data;
  }

  // -- list page ---------------------------------------------------------------------
  async function loadList() {
    const [list, storage] = await Promise.all([
      api("GET", "/api/recording/list"),
      api("GET", "/api/recording/storage"),
    ]);
    $("vod-storage").textContent = t("vod.storage", {
      count: storage.recordings, used: bytes(storage.recordings_bytes), free: bytes(storage.disk_free_bytes),
    }) + (storage.low_disk ? " — " + t("vod.lowdisk") : "");
    const ul = $("vod-list");
    ul.replaceChildren();
    $("vod-empty").hidden = list.recordings.length > 0;
    let running = false;
    for (const r of list.recordings) {
      running = running || ["recording", "stopping", "finalizing"].includes(r.status);
      const thumb = r.screenshots.length ? el("img", { src: r.screenshots[0].url, alt: "" }) : el("img", { alt: "" });
      const when = new Date(r.started_at * 1000).toLocaleString(AirI18n.lang === "ko" ? "ko-KR" : undefined);
      const info = el("div", { className: "vod-info" },
        el("b", { textContent: r.title || r.stream }), (r.title ? " · " + r.stream : "") + " · " + when + " · " + clock(r.duration) + " · " + bytes(r.size) + " ",
        el("span", { className: "badge" + (r.status === "recording" ? " live" : ""), textContent: t("vod.status." + r.status) }),
        r.recovered ? el("span", { className: "muted", textContent: " " + t("vod.recovered") }) : "",
        r.part > 1 ? el("span", { className: "muted", textContent: " " + t("vod.part", { part: r.part }) }) : "");
      const play = el("a", { href: r.page_url, className: "button", textContent: t("vod.play") });
      const del = el("button", { type: "button", className: "secondary", textContent: t("vod.delete") });
      del.disabled = ["recording", "stopping", "finalizing"].includes(r.status);
      del.addEventListener("click", async () => {
        if (!confirm(t("vod.confirmDelete"))) return;
        await api("DELETE", "/api/recording/" + encodeURIComponent(r.id)).catch((e) => showError(e.message));
        loadList().catch((e) => showError(e.message));
      });
      ul.append(el("li", { className: "vod-item" }, thumb, info, play, del));
    }
    clearTimeout(loadList.timer);
    if (running) loadList.timer = setTimeout(() => loadList().catch(() => {}), 5000);
  }

  function listPage() {
    if (!token) { showError(t("vod.signin")); return; }
    $("vod-record").addEventListener("submit", async (e) => {
      e.preventDefault();
      showError("");
      await api("POST", "/api/recording/start", { stream: $("vod-stream").value }).catch((err) => showError(err.message));
      loadList().catch((err) => showError(err.message));
    });
    $("vod-stop").addEventListener("click", async () => {
      showError("");
      await api("POST", "/api/recording/stop", { stream: $("vod-stream").value }).catch((err) => showError(err.message));
      loadList().catch((err) => showError(err.message));
    });
    document.addEventListener("airclass:lang", () => loadList().catch(() => {}));
    loadList().catch((e) => showError(e.message));
  }

  // -- player page -------------------------------------------------------------------
  async function playPage() {
    const id = app.dataset.recording;
    const query = new URLSearchParams(location.search);
    const signed = query.has("sig");
    let doc;
    const load = async () => signed
      ? fetch(`/vod/${encodeURIComponent(id)}/info?exp=${query.get("exp")}&sig=${query.get("sig")}`).then(async (r) => {
        const d = await r.json();
        if (!r.ok) throw AirI18n.httpError(r.status, d.error || r.statusText);
        return d;
      })
      : api("GET", "/api/recording/" + encodeURIComponent(id));
    if (!signed && !token) { showError(t("vod.signin")); return; }
    try { doc = await load(); } catch (e) { showError(e.message); return; }
    const video = $("vod-video");
    const started = new Date(doc.started_at * 1000).toLocaleString(AirI18n.lang === "ko" ? "ko-KR" : undefined);
    $("vod-heading").textContent = (doc.title || doc.stream) + " — " + started;
    document.title = "AIRClass — " + (doc.title || doc.stream);
    $("vod-meta").textContent = clock(doc.duration) + " · " + bytes(doc.size) + " · " + t("vod.status." + doc.status) +
      (doc.video ? ` · ${doc.video.width}×${doc.video.height}` : "") + (doc.recovered ? " " + t("vod.recovered") : "") +
      (doc.part > 1 ? " · " + t("vod.part", { part: doc.part }) : "");
    if (doc.mp4_url) video.src = doc.mp4_url;
    else { showError(t("vod.pending")); setTimeout(() => location.reload(), 5000); }
    const strip = $("vod-shots");
    const figures = doc.screenshots.map((s) => {
      const fig = el("figure", {}, el("img", { src: s.url, alt: clock(s.t), loading: "lazy" }), el("figcaption", { textContent: clock(s.t) }));
      fig.addEventListener("click", () => { video.currentTime = s.t; video.play().catch(() => {}); });
      strip.append(fig);
      return [s.t, fig];
    });
    video.addEventListener("timeupdate", () => {
      let current = null;
      for (const [time, fig] of figures) if (time <= video.currentTime + 0.25) current = fig;
      for (const [, fig] of figures) fig.classList.toggle("current", fig === current);
    });
    const segs = $("vod-segments");
    for (const s of doc.segments.filter((x) => x.url)) {  // segments are gone once the MP4 is made
      segs.append(el("li", {}, el("a", { href: s.url, textContent: s.file }), ` ${clock(s.start)} +${s.duration.toFixed(1)} s, ${bytes(s.size)}`));
    }
    segs.closest("details").hidden = !segs.children.length;
    if (!signed) {
      const share = $("vod-share");
      share.hidden = false;
      share.addEventListener("click", async () => {
        try {
          const link = await api("GET", `/api/recording/${encodeURIComponent(id)}/share?hours=${SHARE_HOURS}`);
          const url = new URL(link.url, location.href).href;
          await navigator.clipboard.writeText(url).catch(() => {});
          $("vod-share-state").textContent = t("vod.copied", { hours: SHARE_HOURS }) + " " + url;
        } catch (e) { showError(e.message); }
      });
    }
  }

  if (app.dataset.page === "list") listPage();
  else playPage();
})();
