// Teacher page (and, read-only, the monitor page): sessions, live roster with
// engagement, chat moderation, quiz creation and live results, confusion alerts.
(function () {
  AirI18n.register({
    ko: {
      "nav.home": "홈", "t.logout": "로그아웃", "t.sessions": "수업", "t.title": "제목", "t.stream": "스트림",
      "t.create": "수업 열기", "t.apikey": "AI API 키", "t.save": "저장", "t.saved": "저장됨", "t.code": "참여 코드",
      "t.join_link": "학생 링크", "t.publish_info": "방송 방법", "t.monitor_link": "모니터 링크", "t.end": "수업 종료",
      "t.student": "학생", "t.online": "접속", "t.video": "영상", "t.attention": "집중도", "t.participation": "참여도",
      "t.accuracy": "정답률", "t.overall": "종합", "t.confusion": "혼란", "t.chat": "채팅", "t.quizzes": "퀴즈",
      "t.q.question": "문제", "t.q.kind": "유형", "t.q.choice": "객관식", "t.q.short": "주관식",
      "t.q.options": "보기 (한 줄에 하나)", "t.q.correct": "정답 (보기 번호 또는 답)", "t.q.time": "제한 시간 (초)",
      "t.q.create": "퀴즈 만들기", "t.publish": "출제", "t.close": "마감", "t.results": "결과",
      "t.draft": "준비", "t.open": "진행 중", "t.closed": "마감", "t.answers": "응답 {n}개, 정답률 {acc}",
      "t.delete": "삭제", "t.mute": "채팅 금지", "t.unmute": "채팅 허용", "t.yes": "예", "t.no": "아니요",
      "t.playing": "재생 중", "t.stopped": "정지", "t.hidden": "다른 탭", "t.alert": "⚠ {name}: 이해하지 못한 것 같습니다 ({reason})",
      "t.summary": "학생 {n}명 · 접속 {online} · 집중도 {att} · 참여도 {part} · 정답률 {acc}",
      "t.ended": "종료됨", "t.confirm_end": "수업을 종료할까요?", "cls.connecting": "연결 중…", "cls.online": "연결됨", "cls.offline": "재연결 중…",
      "cls.chat.placeholder": "메시지 입력…", "cls.chat.send": "보내기",
      "reason.confusion_words": "혼란 표현", "reason.low_accuracy": "낮은 정답률", "reason.repeated_questions": "반복 질문",
      "state.live": "방송 중", "state.offline": "오프라인",
      "m.help.title": "모니터 링크가 필요합니다",
      "m.help.text": "이 페이지는 교사가 만든 모니터 링크로 엽니다. 교사는 /teacher 에서 수업을 열고 ‘모니터 링크’ 버튼을 눌러 링크를 복사해 보조 교사나 관리자에게 보냅니다. 링크에는 읽기 전용 토큰이 들어 있습니다.",
    },
    en: {
      "nav.home": "Home", "t.logout": "Sign out", "t.sessions": "Class sessions", "t.title": "Title", "t.stream": "Stream",
      "t.create": "Open session", "t.apikey": "AI API key", "t.save": "Save", "t.saved": "saved", "t.code": "Join code",
      "t.join_link": "student link", "t.publish_info": "How to go live", "t.monitor_link": "Monitor link", "t.end": "End session",
      "t.student": "Student", "t.online": "Online", "t.video": "Video", "t.attention": "Attention", "t.participation": "Participation",
      "t.accuracy": "Accuracy", "t.overall": "Overall", "t.confusion": "Confusion", "t.chat": "Chat", "t.quizzes": "Quizzes",
      "t.q.question": "Question", "t.q.kind": "Type", "t.q.choice": "Multiple choice", "t.q.short": "Short answer",
      "t.q.options": "Options (one per line)", "t.q.correct": "Correct answer (option number or text)", "t.q.time": "Time limit (s)",
      "t.q.create": "Create quiz", "t.publish": "Publish", "t.close": "Close", "t.results": "Results",
      "t.draft": "draft", "t.open": "open", "t.closed": "closed", "t.answers": "{n} answers, accuracy {acc}",
      "t.delete": "delete", "t.mute": "mute", "t.unmute": "unmute", "t.yes": "yes", "t.no": "no",
      "t.playing": "playing", "t.stopped": "stopped", "t.hidden": "tab hidden", "t.alert": "⚠ {name} seems confused ({reason})",
      "t.summary": "{n} students · {online} online · attention {att} · participation {part} · accuracy {acc}",
      "t.ended": "ended", "t.confirm_end": "End this session?", "cls.connecting": "connecting…", "cls.online": "connected", "cls.offline": "reconnecting…",
      "cls.chat.placeholder": "Type a message…", "cls.chat.send": "Send",
      "reason.confusion_words": "confusion words", "reason.low_accuracy": "low accuracy", "reason.repeated_questions": "repeated questions",
      "state.live": "LIVE", "state.offline": "offline",
      "m.help.title": "A monitor link is needed",
      "m.help.text": "This page opens from a monitor link made by the teacher. The teacher opens the class on /teacher, presses “Monitor link” and sends that link to a teaching assistant or supervisor. The link carries a read-only token.",
    },
  });

  const $ = (id) => document.getElementById(id);
  const app = $("t-app");
  const monitor = app.dataset.mode === "monitor";
  const params = new URLSearchParams(location.search);
  const token = sessionStorage.getItem(monitor ? "airclass.monitor_token" : "airclass.teacher_token");
  if (!token) {
    if (!monitor) location.href = "/login?next=/teacher";
    else $("m-help").hidden = false;
    return;
  }
  let ws = null, session = null, retry = 1000, pollTimer = null;
  const roster = new Map();          // student_id -> merged presence + engagement
  const quizzes = new Map();         // quiz_id -> quiz
  const stats = new Map();           // quiz_id -> stats
  let shownQuiz = null;
  let muted = new Set();
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const pct = (v) => (v === null || v === undefined ? "–" : v + "%");

  async function api(method, path, body) {
    const resp = await fetch(path, { method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
                                     body: body ? JSON.stringify(body) : undefined });
    const data = await resp.json().catch(() => ({}));
    if (resp.status === 401 && !monitor) { sessionStorage.removeItem("airclass.teacher_token"); location.href = "/login?next=/teacher"; }
    if (!resp.ok) throw AirI18n.httpError(resp.status, data.error || String(resp.status));
    return data;
  }
  function fail(err) { $("t-error").textContent = err.message || String(err); }

  // -- sessions (teacher) ---------------------------------------------------------------
  async function loadSessions() {
    const { sessions } = await api("GET", "/api/sessions");
    const list = $("t-session-list");
    list.textContent = "";
    for (const s of sessions) {
      const li = el("li");
      if (session && s.id === session.id) li.classList.add("active");
      const b = el("button", s.title, "secondary");
      b.type = "button";
      b.addEventListener("click", () => openSession(s.id));
      li.append(b, el("span", `${s.stream} · ${s.join_code}` + (s.status !== "active" ? " · " + AirI18n.t("t.ended") : ""), "muted"));
      list.append(li);
    }
  }
  if (!monitor) {
    $("t-logout").addEventListener("click", () => { sessionStorage.removeItem("airclass.teacher_token"); location.href = "/login"; });
    $("t-create").addEventListener("submit", async (e) => {
      e.preventDefault();
      $("t-error").textContent = "";
      try {
        const data = await api("POST", "/api/sessions", { title: $("t-title").value.trim(), stream: $("t-stream").value.trim() });
        await openSession(data.session_id);
        loadSessions();
      } catch (err) { fail(err); }
    });
    // The AI key form (provider + key) lives in static/ai-keys.js.
    $("t-end").addEventListener("click", async () => {
      if (session && confirm(AirI18n.t("t.confirm_end"))) { await api("POST", `/api/sessions/${session.id}/end`).catch(fail); loadSessions(); }
    });
    $("t-monitor-link").addEventListener("click", async () => {
      const data = await api("POST", `/api/sessions/${session.id}/monitor-token`).catch(fail);
      if (data) { $("t-info").hidden = false; $("t-info").textContent = data.url; }
    });
    // "How to go live" lives in static/golive.js.
  }

  async function openSession(id) {
    session = await api("GET", `/api/sessions/${encodeURIComponent(id)}`);
    if (!monitor) { sessionStorage.setItem("airclass.teacher_session", id); loadSessions().catch(() => {}); }
    roster.clear(); quizzes.clear(); stats.clear(); shownQuiz = null;
    ["t-live", "t-chat-card", "t-quiz-card"].forEach((x) => ($(x).hidden = false));
    $("t-live-title").textContent = session.title + " · " + session.stream;
    if (!monitor) {
      $("t-code").textContent = session.join_code;
      $("t-join-link").href = "/join?code=" + encodeURIComponent(session.join_code);
    }
    $("t-chat").textContent = "";
    if (!monitor) document.dispatchEvent(new CustomEvent("airclass:session", { detail: { session, token } }));
    clearInterval(streamTimer);
    pollStream();
    streamTimer = setInterval(pollStream, 3000);
    if (ws) { ws.onclose = null; ws.close(); }
    connect();
    clearInterval(pollTimer);
    poll();
    pollTimer = setInterval(poll, 4000);
  }

  // -- the session's stream: live or not (any publisher: RTMP, WHIP) -----------------
  let streamTimer = null;
  async function pollStream() {
    if (!session) return;
    let live = false;
    try {
      const res = await fetch("/api/streams/" + encodeURIComponent(session.stream), { headers: { Authorization: "Bearer " + token } });
      live = res.ok && (await res.json()).live;
    } catch (err) { /* offline */ }
    const badge = $("t-stream-state");
    badge.dataset.i18n = live ? "state.live" : "state.offline";
    badge.textContent = AirI18n.t(badge.dataset.i18n);
    badge.classList.toggle("live", live);
    document.dispatchEvent(new CustomEvent("airclass:stream", { detail: { live } }));
  }

  // -- engagement + roster --------------------------------------------------------------
  async function poll() {
    if (!session) return;
    try {
      const report = await api("GET", `/api/engagement/session/${session.id}`);
      for (const s of report.students) {
        const entry = roster.get(s.student_id) || {};
        roster.set(s.student_id, { ...entry, ...s, online: entry.live ? entry.online : s.online });
      }
      const sm = report.summary;
      $("t-summary").textContent = AirI18n.t("t.summary", { n: sm.students, online: [...roster.values()].filter((r) => r.online).length,
        att: pct(sm.attention), part: pct(sm.participation), acc: pct(sm.quiz_accuracy) });
      renderRoster();
    } catch (err) { /* next poll */ }
  }
  function presence(p) {
    const entry = roster.get(p.student_id) || { student_id: p.student_id, name: p.name };
    roster.set(p.student_id, { ...entry, name: p.name || entry.name, online: p.online, playing: p.playing, visible: p.visible, live: true });
    renderRoster();
  }
  function renderRoster() {
    const body = $("t-roster");
    body.textContent = "";
    const rows = [...roster.values()].sort((a, b) => (a.name || "").localeCompare(b.name || ""));
    for (const r of rows) {
      const tr = el("tr");
      tr.dataset.student = r.student_id;
      if (r.confusion && r.confusion.confused) tr.classList.add("confused");
      const video = !r.online ? "–" : !r.visible ? AirI18n.t("t.hidden") : r.playing ? AirI18n.t("t.playing") : AirI18n.t("t.stopped");
      const cells = [r.name, r.online ? "●" : "○", video, pct(r.attention), pct(r.participation), pct(r.quiz_accuracy), pct(r.overall),
                     r.confusion ? (r.confusion.confused ? "⚠ " : "") + r.confusion.score : "–"];
      cells.forEach((c) => tr.append(el("td", String(c))));
      const td = el("td");
      if (!monitor) {
        const isMuted = muted.has(r.student_id);
        const b = el("button", AirI18n.t(isMuted ? "t.unmute" : "t.mute"), "secondary");
        b.type = "button";
        b.addEventListener("click", () => send({ type: "mute", student_id: r.student_id, muted: !isMuted }));
        td.append(b);
      }
      tr.append(td);
      body.append(tr);
    }
  }

  // -- chat -------------------------------------------------------------------------------
  function addChat(m) {
    const li = el("li", undefined, m.role);
    li.dataset.id = m.id;
    li.append(el("b", m.name + ": "), document.createTextNode(m.text));
    if (!monitor) {
      const del = el("button", AirI18n.t("t.delete"), "secondary");
      del.type = "button";
      del.addEventListener("click", () => send({ type: "chat_delete", message_id: m.id }));
      li.append(del);
    }
    $("t-chat").append(li);
    $("t-chat").scrollTop = $("t-chat").scrollHeight;
  }
  if (!monitor) {
    $("t-chat-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = $("t-chat-input").value.trim();
      if (text) send({ type: "chat", text });
      $("t-chat-input").value = "";
    });
  }

  // -- quizzes ------------------------------------------------------------------------------
  if (!monitor) {
    $("t-q-kind").addEventListener("change", () => { $("t-q-options-label").hidden = $("t-q-kind").value !== "choice"; });
    $("t-quiz-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const kind = $("t-q-kind").value;
      const quiz = { question: $("t-q-question").value.trim(), kind, time_limit: Number($("t-q-time").value) || 60 };
      const correct = $("t-q-correct").value.trim();
      if (kind === "choice") {
        quiz.options = $("t-q-options").value.split("\n").map((s) => s.trim()).filter(Boolean);
        quiz.correct = Number(correct) - 1;
      } else quiz.correct = correct.split("|").map((s) => s.trim()).filter(Boolean);
      send({ type: "quiz_create", quiz });
    });
  }
  function renderQuizzes() {
    const list = $("t-quiz-list");
    list.textContent = "";
    for (const q of [...quizzes.values()].sort((a, b) => a.created_at - b.created_at)) {
      const li = el("li");
      li.dataset.quiz = q.id;
      li.append(el("span", q.question), el("span", AirI18n.t("t." + q.status), "badge"));
      const button = (key, fn) => { const b = el("button", AirI18n.t(key), "secondary"); b.type = "button"; b.addEventListener("click", fn); li.append(b); };
      if (!monitor && q.status === "draft") button("t.publish", () => send({ type: "quiz_publish", quiz_id: q.id }));
      if (!monitor && q.status === "open") button("t.close", () => send({ type: "quiz_close", quiz_id: q.id }));
      if (q.status !== "draft") button("t.results", () => { shownQuiz = q.id; send({ type: "quiz_stats", quiz_id: q.id }); });
      list.append(li);
    }
  }
  function renderResults() {
    const box = $("t-results");
    const s = stats.get(shownQuiz);
    box.textContent = "";
    if (!s) return;
    box.append(el("h3", s.question));
    box.append(el("p", AirI18n.t("t.answers", { n: s.total, acc: pct(s.accuracy) }), "t-answer-count"));
    const rows = s.kind === "choice" ? s.options.map((o, i) => [(i === s.correct_answer ? "✓ " : "") + o, s.counts[i]])
                                     : s.answers.map((a) => [a.answer, a.count]);
    for (const [label, n] of rows) {
      const row = el("div", undefined, "row");
      const bar = el("span", undefined, "bar");
      bar.style.width = (s.total ? (100 * n) / s.total : 0) + "%";
      const barBox = el("span");
      barBox.append(bar);
      row.append(el("span", label), barBox, el("span", String(n)));
      box.append(row);
    }
    const recent = el("ul", undefined, "cls-list t-recent");
    for (const r of s.recent) {
      const answer = s.kind === "choice" ? s.options[r.answer] : r.answer;
      recent.append(el("li", `${r.name}: ${answer} ${r.correct ? "✓" : "✗"}`));
    }
    box.append(recent);
  }

  // -- realtime -------------------------------------------------------------------------------
  function send(m) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(m)); }
  function setState(key) { $("t-ws-state").textContent = AirI18n.t(key); }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const sock = new WebSocket(`${scheme}://${location.host}/ws/session/${encodeURIComponent(session.id)}?token=${encodeURIComponent(token)}`);
    ws = sock;
    sock.onopen = () => { retry = 1000; setState("cls.online"); };
    sock.onclose = () => { if (ws !== sock) return; setState("cls.offline"); setTimeout(() => ws === sock && connect(), retry); retry = Math.min(retry * 2, 15000); };
    sock.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      switch (m.type) {
        case "welcome":
          $("t-chat").textContent = "";
          m.chat.forEach(addChat);
          muted = new Set(m.muted || []);
          (m.quizzes || []).forEach((q) => quizzes.set(q.id, q));
          (m.roster || []).forEach(presence);
          if (m.stats) { stats.set(m.stats.quiz_id, m.stats); shownQuiz = m.stats.quiz_id; }
          renderQuizzes(); renderResults();
          break;
        case "chat": addChat(m.message); break;
        case "chat_deleted": { const li = $("t-chat").querySelector(`li[data-id="${CSS.escape(m.message_id)}"]`); if (li) li.remove(); break; }
        case "presence": presence(m.presence); break;
        case "presence_batch": m.students.forEach(presence); break;
        case "session_update": muted = new Set(m.muted || []); renderRoster(); break;
        case "quiz_created": quizzes.set(m.quiz.id, m.quiz); renderQuizzes(); if (!monitor) $("t-quiz-form").reset(); break;
        case "quiz": quizzes.set(m.quiz.id, m.quiz); shownQuiz = m.quiz.id; renderQuizzes(); break;
        case "quiz_stats":
          stats.set(m.stats.quiz_id, m.stats);
          if (quizzes.has(m.stats.quiz_id)) quizzes.get(m.stats.quiz_id).status = m.stats.status;
          if (!shownQuiz) shownQuiz = m.stats.quiz_id;
          renderQuizzes(); renderResults();
          break;
        case "quiz_closed": if (quizzes.has(m.quiz.id)) quizzes.get(m.quiz.id).status = "closed"; renderQuizzes(); break;
        case "alert": {
          const a = m.alert;
          const li = el("li", AirI18n.t("t.alert", { name: a.name, reason: AirI18n.t("reason." + a.reason) }) + (a.detail ? " — " + a.detail : ""));
          $("t-alerts").prepend(li);
          while ($("t-alerts").children.length > 8) $("t-alerts").lastChild.remove();
          break;
        }
        case "session_ended": setState("t.ended"); break;
        case "error": $("t-error").textContent = m.message; break;
      }
    };
  }

  // -- start ----------------------------------------------------------------------------------
  if (monitor) {
    const sid = params.get("session");
    if (sid) openSession(sid).catch(fail);
  } else {
    loadSessions().catch(fail);
    const sid = params.get("session") || sessionStorage.getItem("airclass.teacher_session");
    if (sid) openSession(sid).catch(() => sessionStorage.removeItem("airclass.teacher_session"));
  }
})();
