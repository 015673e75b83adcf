// /admin: cluster overview for operators, refreshed every few seconds. Admin token in
// sessionStorage "airclass.admin_token" (POST /api/admin/login).
(function () {
  AirI18n.register({
    ko: {
      "nav.home": "홈", "a.login.title": "운영자 로그인", "a.login.user": "사용자 이름", "a.login.password": "비밀번호",
      "a.login.submit": "로그인", "a.login.failed": "로그인 실패: 사용자 이름, 비밀번호 또는 관리자 권한을 확인하세요",
      "a.title": "클러스터 운영", "a.logout": "로그아웃", "a.updated": "{time} 갱신",
      "a.tile.nodes": "노드", "a.tile.viewers": "시청자", "a.tile.capacity": "용량 사용률", "a.tile.streams": "라이브 스트림",
      "a.nodes": "노드", "a.col.node": "노드", "a.col.role": "역할", "a.col.status": "상태", "a.col.load": "부하 / 용량",
      "a.col.streams": "스트림", "a.col.heartbeat": "하트비트",
      "a.streams": "이 노드의 스트림", "a.relays": "릴레이", "a.deps": "의존 서비스", "a.recordings": "녹화 디스크",
      "a.none": "없음", "a.live": "라이브", "a.offline": "오프라인", "a.viewers": "시청자 {n}명",
      "a.status.ok": "정상", "a.status.full": "가득 참", "a.status.down": "중단",
      "a.role.main": "메인", "a.role.sub": "서브", "a.role.standalone": "단독",
      "a.ago": "{s}초 전", "a.self": "(이 노드)", "a.dep.ok": "정상", "a.dep.down": "장애",
      "a.relay.serving": "{stream} → 서브 (패킷 {packets})", "a.relay.pulling": "{stream} ← 메인",
      "a.disk": "여유 {free} / 전체 {total} · 녹화 {count}개 ({used}) · 녹화 중 {now}",
      "a.advice.add_sub": "클러스터 용량의 {percentage}%를 사용 중입니다: 서브 노드를 추가하세요.",
      "a.advice.node_full": "노드 {node}가 가득 찼습니다.",
      "a.advice.node_down": "노드 {node}가 응답하지 않습니다.",
      "a.advice.dependency_down": "{name} 장애: 이 노드가 준비되지 않았습니다.",
      "a.dep.name.store": "저장소", "a.dep.name.redis": "Redis", "a.dep.name.main": "메인 노드", "a.dep.name.services": "노드 서비스",
      "a.advice.disk_low": "녹화 디스크 여유 공간 부족 ({free_mb} MB).",
      "a.advice.none": "조치할 사항이 없습니다.",
      "a.error.load": "상태를 불러오지 못했습니다: {error}",
    },
    en: {
      "nav.home": "Home", "a.login.title": "Operator sign-in", "a.login.user": "Username", "a.login.password": "Password",
      "a.login.submit": "Sign in", "a.login.failed": "Sign-in failed: check the username, password and admin rights",
      "a.title": "Cluster operations", "a.logout": "Sign out", "a.updated": "updated {time}",
      "a.tile.nodes": "Nodes", "a.tile.viewers": "Viewers", "a.tile.capacity": "Capacity used", "a.tile.streams": "Live streams",
      "a.nodes": "Nodes", "a.col.node": "Node", "a.col.role": "Role", "a.col.status": "Status", "a.col.load": "Load / capacity",
      "a.col.streams": "Streams", "a.col.heartbeat": "Heartbeat",
      "a.streams": "Streams on this node", "a.relays": "Relays", "a.deps": "Dependencies", "a.recordings": "Recordings disk",
      "a.none": "none", "a.live": "live", "a.offline": "offline", "a.viewers": "{n} viewers",
      "a.status.ok": "ok", "a.status.full": "full", "a.status.down": "down",
      "a.role.main": "main", "a.role.sub": "sub", "a.role.standalone": "standalone",
      "a.ago": "{s} s ago", "a.self": "(this node)", "a.dep.ok": "ok", "a.dep.down": "down",
      "a.relay.serving": "{stream} → sub ({packets} packets)", "a.relay.pulling": "{stream} ← main",
      "a.disk": "{free} free of {total} · {count} recordings ({used}) · {now} recording now",
      "a.advice.add_sub": "The cluster uses {percentage}% of its capacity: add a sub node.",
      "a.advice.node_full": "Node {node} is full.",
      "a.advice.node_down": "Node {node} does not answer.",
      "a.advice.dependency_down": "{name} is down: this node is not ready.",
      "a.advice.disk_low": "Recordings disk is low on space ({free_mb} MB free).",
      "a.advice.none": "Nothing to do.",
      "a.error.load": "Could not load the status: {error}",
    },
  });
  const t = AirI18n.t;
  const $ = (id) => document.getElementById(id);
  const KEY = "airclass.admin_token";
  const REFRESH_MS = 3000;
  let last = null;
  let timer = null;

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    const { dataset, ...rest } = props || {};
    Object.assign(e, rest);
    if (dataset) for (const [k, v] of Object.entries(dataset)) e.dataset[k] = String(v);
    for (const c of children) e.append(c);
    return e;
  }
  function bytes(n) {
    if (n == null) return "–";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + units[i];
  }
  function barClass(p) { return p >= 90 ? "a-bar-fill crit" : p >= 80 ? "a-bar-fill warn" : "a-bar-fill"; }

  function showLogin(show) {
    $("a-login").hidden = !show;
    $("a-app").hidden = show;
  }

  async function login(ev) {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const resp = await fetch("/api/admin/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    if (!resp.ok) { $("a-login-error").textContent = t("a.login.failed"); return; }
    const body = await resp.json();
    sessionStorage.setItem(KEY, body.token);
    $("a-login-error").textContent = "";
    start();
  }

  async function load() {
    const token = sessionStorage.getItem(KEY);
    if (!token) { stop(); showLogin(true); return; }
    let resp;
    try {
      resp = await fetch("/api/admin/overview", { headers: { Authorization: "Bearer " + token } });
    } catch (err) {
      $("a-error").textContent = t("a.error.load", { error: String(err) });
      return;
    }
    if (resp.status === 401 || resp.status === 403) { sessionStorage.removeItem(KEY); stop(); showLogin(true); return; }
    if (!resp.ok) { $("a-error").textContent = t("a.error.load", { error: resp.status }); return; }
    last = await resp.json();
    $("a-error").textContent = "";
    render();
  }

  function render() {
    const d = last;
    if (!d) return;
    showLogin(false);
    $("a-updated").textContent = t("a.updated", { time: new Date(d.time * 1000).toLocaleTimeString(AirI18n.lang) });
    $("a-nodes-count").textContent = d.cluster.nodes;
    $("a-load").textContent = d.cluster.load + " / " + d.cluster.capacity;
    $("a-percent").textContent = d.cluster.load_percentage + " %";
    $("a-percent-bar").style.width = Math.min(100, d.cluster.load_percentage) + "%";
    $("a-percent-bar").className = barClass(d.cluster.load_percentage);
    $("a-streams-count").textContent = d.streams.filter((s) => s.live).length;

    const advice = $("a-advice");
    advice.replaceChildren(...(d.advice.length ? d.advice.map((a) =>
      el("li", { className: a.level, textContent: t("a.advice." + a.code, a) })) :
      [el("li", { textContent: t("a.advice.none") })]));

    const rows = d.nodes.map((n) => {
      const load = n.status === "down" ? "–" : `${n.load} / ${n.capacity} (${n.load_percentage} %)`;
      return el("tr", { className: "a-node", dataset: { status: n.status } },
        el("td", {}, n.node_id + (n.self ? " " + t("a.self") : ""), el("br"), el("span", { className: "muted", textContent: n.url || "" })),
        el("td", { textContent: t("a.role." + n.role) }),
        el("td", { className: "a-status-" + n.status, textContent: t("a.status." + n.status) }),
        el("td", { textContent: load }),
        el("td", { textContent: (n.streams || []).join(", ") || t("a.none") }),
        el("td", { textContent: n.age_s == null ? "–" : t("a.ago", { s: n.age_s }) }));
    });
    $("a-nodes").tBodies[0].replaceChildren(...rows);

    const streams = d.streams.map((s) => el("li", {
      textContent: `${s.name} · ${t(s.live ? "a.live" : "a.offline")} · ${t("a.viewers", { n: s.viewers })}` }));
    $("a-streams").replaceChildren(...(streams.length ? streams : [el("li", { className: "muted", textContent: t("a.none") })]));
    const relays = [
      ...(d.relays.serving || []).map((r) => el("li", { textContent: t("a.relay.serving", { stream: r.stream, packets: r.packets_sent }) })),
      ...(d.relays.pulling || []).map((r) => el("li", { textContent: t("a.relay.pulling", { stream: r.stream }) })),
    ];
    $("a-relays").replaceChildren(...(relays.length ? relays : [el("li", { className: "muted", textContent: t("a.none") })]));
    // Dependency details are the operator's (English) text: shown in English, a tooltip in Korean.
    $("a-deps").replaceChildren(...Object.entries(d.dependencies).map(([name, c]) => el("li", {
      className: "a-dep", dataset: { ok: c.ok }, title: c.detail,
      textContent: `${t("a.dep.name." + name) === "a.dep.name." + name ? name : t("a.dep.name." + name)}: ${t(c.ok ? "a.dep.ok" : "a.dep.down")}` +
        (AirI18n.lang === "en" && c.detail ? ` — ${c.detail}` : "") })));
    const r = d.recordings;
    if (r) {
      $("a-disk").textContent = t("a.disk", { free: bytes(r.disk_free_bytes), total: bytes(r.disk_total_bytes),
        count: r.recordings, used: bytes(r.recordings_bytes), now: r.recording_now });
      const used = r.disk_total_bytes ? 100 * r.disk_used_bytes / r.disk_total_bytes : 0;
      $("a-disk-bar").style.width = used.toFixed(1) + "%";
      $("a-disk-bar").className = r.low_disk ? "a-bar-fill crit" : barClass(used);
    }
  }

  function start() {
    stop();
    load();
    timer = setInterval(load, REFRESH_MS);
  }
  function stop() { if (timer) clearInterval(timer); timer = null; }

  document.addEventListener("airclass:lang", render);
  document.addEventListener("DOMContentLoaded", () => {
    $("a-login-form").addEventListener("submit", login);
    $("a-logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); stop(); showLogin(true); });
    if (sessionStorage.getItem(KEY)) start(); else showLogin(true);
  });
})();
