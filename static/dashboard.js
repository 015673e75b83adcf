// Teacher analytics dashboard: /dashboard (sessions list) and /dashboard/<session>
// (cards, students, charts, slide timeline, quizzes, alerts, recordings, AI report).
// Live: the class WebSocket triggers a refresh; Chart.js (static/vendor) draws charts.
(function () {
  AirI18n.register({
    ko: {
      "d.list.title": "수업 분석", "d.all": "모든 수업", "d.export": "CSV 내보내기",
      "d.col.session": "수업", "d.col.status": "상태", "d.col.started": "시작", "d.col.duration": "길이",
      "d.col.students": "학생", "d.col.messages": "메시지", "d.col.quizzes": "퀴즈", "d.col.recordings": "녹화",
      "d.card.present": "접속 중", "d.card.mpm": "분당 메시지", "d.card.open": "열린 질문", "d.card.confusion": "혼란 지수",
      "d.engagement": "시간별 참여", "d.quizzes": "퀴즈 분석", "d.q.question": "문제", "d.q.answers": "응답",
      "d.q.accuracy": "정답률", "d.q.difficulty": "난이도", "d.students": "학생",
      "d.formula": "활동 점수 = 접속 시간, 채팅 메시지, 질문, 퀴즈 응답 각각 (학생 ÷ 최고 학생) × 2.5의 합 (0–10). 성적이 아닌 참여 신호입니다.",
      "d.s.name": "학생", "d.s.join": "입장", "d.s.leave": "퇴장", "d.s.present": "접속 시간", "d.s.messages": "메시지",
      "d.s.questions": "질문", "d.s.answers": "퀴즈 응답", "d.s.accuracy": "정답률", "d.s.activity": "활동 점수",
      "d.slides": "슬라이드 타임라인", "d.slides.empty": "아직 슬라이드가 없습니다. 녹화 화면에서 슬라이드를 읽습니다.",
      "d.report": "AI 리포트", "d.refresh": "새로 고침", "d.suggestions": "제안", "d.unanswered": "답하지 않은 질문",
      "d.peaks": "혼란 구간", "d.notes": "학생별 메모", "d.alerts": "알림 기록", "d.recordings": "녹화 영상",
      "d.active": "진행 중", "d.ended": "종료", "d.live": "실시간", "d.offline": "연결 끊김",
      "d.chart.attention": "집중도 (%)", "d.chart.messages": "메시지", "d.chart.confusion": "혼란", "d.chart.accuracy": "정답률 (%)",
      "d.source.local": "로컬 분석", "d.source.remote": "{provider} ({model})", "d.fallback": "— {provider} 대신 로컬 분석 ({reason})",
      "d.msgs": "메시지 {n}", "d.qs": "질문 {n}", "d.conf": "혼란 {n}", "d.none": "없음", "d.play": "재생",
      "d.reason.confusion_words": "혼란 표현", "d.reason.low_accuracy": "낮은 정답률", "d.reason.repeated_questions": "반복 질문",
      "sug.revisit": "'{title}' 부분에서 혼란이 많았습니다 ({n}건). 다른 예시로 다시 설명해 보세요.",
      "sug.answer_questions": "채팅 질문 {n}개에 답이 없었습니다. 다음 수업 시작에 답하거나 공지로 남겨 주세요.",
      "sug.hard_quiz": "퀴즈 '{question}' 정답률이 {accuracy}%입니다. 정답을 설명해 주세요.",
      "sug.invite_participation": "학생 {students}명 중 {silent}명이 아무것도 쓰지 않았습니다. 열린 질문이나 간단한 퀴즈를 해 보세요.",
      "sug.keep_going": "특별한 문제 신호가 없습니다. 지금 속도를 유지하세요.",
      "sug.check_in": "이해가 안 된다는 메시지가 {n}개 있었습니다. 해당 학생들에게 따로 확인해 보세요.",
      "d.summary": "학생 {students}명, 메시지 {messages}개 (질문 {questions}개, 혼란 {confused}개), 슬라이드 {slides}장, 혼란 구간 {peaks}개, 답하지 않은 질문 {unanswered}개.",
      "d.dur.hm": "{h}시간 {m}분", "d.dur.ms": "{m}분 {s}초",
      "note.confused": "이해가 안 된다고 {n}번 말함", "note.asked": "질문 {n}개", "note.quiz": "퀴즈 {n}개 응답, 정답률 {accuracy}%",
      "note.quiet": "채팅과 퀴즈 응답 없음",
    },
    en: {
      "d.list.title": "Class analytics", "d.all": "All sessions", "d.export": "Export CSV",
      "d.col.session": "Session", "d.col.status": "Status", "d.col.started": "Started", "d.col.duration": "Duration",
      "d.col.students": "Students", "d.col.messages": "Messages", "d.col.quizzes": "Quizzes", "d.col.recordings": "Recordings",
      "d.card.present": "Present", "d.card.mpm": "Messages / min", "d.card.open": "Open questions", "d.card.confusion": "Confusion index",
      "d.engagement": "Engagement over time", "d.quizzes": "Quizzes", "d.q.question": "Question", "d.q.answers": "Answers",
      "d.q.accuracy": "Accuracy", "d.q.difficulty": "Difficulty", "d.students": "Students",
      "d.formula": "Activity = sum over time present, chat messages, questions and quiz answers of (student ÷ best student) × 2.5 (0–10). Participation signals, not grades.",
      "d.s.name": "Student", "d.s.join": "Joined", "d.s.leave": "Left", "d.s.present": "Present", "d.s.messages": "Messages",
      "d.s.questions": "Questions", "d.s.answers": "Quiz answers", "d.s.accuracy": "Accuracy", "d.s.activity": "Activity",
      "d.slides": "Slide timeline", "d.slides.empty": "No slides yet: slides come from the recording's screenshots.",
      "d.report": "AI report", "d.refresh": "Refresh", "d.suggestions": "Suggestions", "d.unanswered": "Unanswered questions",
      "d.peaks": "Confusion peaks", "d.notes": "Notes per student", "d.alerts": "Alert history", "d.recordings": "Recordings",
      "d.active": "running", "d.ended": "ended", "d.live": "live", "d.offline": "disconnected",
      "d.chart.attention": "Attention (%)", "d.chart.messages": "Messages", "d.chart.confusion": "Confusion", "d.chart.accuracy": "Accuracy (%)",
      "d.source.local": "local analysis", "d.source.remote": "{provider} ({model})", "d.fallback": "— local instead of {provider} ({reason})",
      "d.msgs": "{n} msgs", "d.qs": "{n} questions", "d.conf": "{n} confused", "d.none": "none", "d.play": "play",
      "d.reason.confusion_words": "confusion words", "d.reason.low_accuracy": "low accuracy", "d.reason.repeated_questions": "repeated questions",
      "sug.revisit": "Many students were confused around '{title}' ({n} messages): go over it again with another example.",
      "sug.answer_questions": "{n} chat question(s) got no answer: answer them at the start of the next class or in a note.",
      "sug.hard_quiz": "Quiz '{question}' was answered correctly by {accuracy}%: explain the answer.",
      "sug.invite_participation": "{silent} of {students} students wrote nothing: ask an open question or run a quick poll.",
      "sug.keep_going": "No sign of trouble: keep the pace.",
      "sug.check_in": "{n} message(s) said a student did not understand: check in with them.",
      "d.summary": "{students} students, {messages} messages ({questions} questions, {confused} confused), {slides} slides, {peaks} confusion peak(s), {unanswered} unanswered question(s).",
      "d.dur.hm": "{h}h {m}m", "d.dur.ms": "{m}m {s}s",
      "note.confused": "said {n} time(s) they did not follow", "note.asked": "asked {n} question(s)",
      "note.quiz": "answered {n} quiz(zes), {accuracy}% correct", "note.quiet": "quiet: no chat, no quiz answer",
    },
  });

  const $ = (id) => document.getElementById(id);
  const token = sessionStorage.getItem("airclass.teacher_token");
  if (!token) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = text; if (cls) e.className = cls; return e; };
  const time = (t) => (t ? new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "–");
  const date = (t) => (t ? new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "–");
  const dur = (s) => {
    s = Math.round(s || 0);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h ? AirI18n.t("d.dur.hm", { h, m }) : AirI18n.t("d.dur.ms", { m, s: s % 60 });
  };
  const pct = (v) => (v === null || v === undefined ? "–" : Math.round(v) + "%");
  function showError(msg) { const e = $("d-error"); if (e) e.textContent = msg || ""; }

  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token } });
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("signed out"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw AirI18n.httpError(r.status, body.error || r.statusText);
    return body;
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }
  function tr(cells) { const row = el("tr"); for (const c of cells) { const td = c instanceof Node ? (c.tagName === "TD" ? c : wrap(c)) : el("td", c); row.append(td); } return row; }
  function wrap(node) { const td = el("td"); td.append(node); return td; }

  // -- /dashboard: list of sessions ----------------------------------------------------
  if ($("d-list-app")) {
    const render = (data) => {
      fill($("d-sessions").querySelector("tbody"), data.sessions.map((s) => {
        const a = el("a", s.title); a.href = "/dashboard/" + encodeURIComponent(s.id);
        const name = el("td", null, "name"); name.append(a);
        return tr([name, AirI18n.t(s.status === "active" ? "d.active" : "d.ended"), date(s.started_at), dur(s.duration),
          String(s.students), String(s.messages), String(s.quizzes), String(s.recordings)]);
      }));
    };
    let last = null;
    api("/api/dashboard/sessions").then((d) => { last = d; render(d); }).catch((e) => showError(e.message));
    document.addEventListener("airclass:lang", () => last && render(last));
    return;
  }

  // -- /dashboard/<session> ----------------------------------------------------------------
  const sessionId = $("d-app").dataset.session;
  const base = `/api/dashboard/session/${encodeURIComponent(sessionId)}`;
  let overview = null, students = null, alerts = null, slides = null, report = null;
  let trendChart = null, quizChart = null;

  $("d-export").addEventListener("click", async (ev) => {
    ev.preventDefault();
    const r = await fetch(base + "/export.csv", { headers: { Authorization: "Bearer " + token } });
    if (!r.ok) return showError("export failed");
    const url = URL.createObjectURL(await r.blob());
    const a = el("a"); a.href = url; a.download = sessionId + ".csv"; document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });

  function chartColors() { return { grid: "#2a3347", text: "#8d97ab" }; }
  function drawTrend() {
    if (!overview || typeof Chart === "undefined") return;
    const c = chartColors();
    const labels = overview.trend.map((b) => time(b.start));
    const ds = [
      { type: "line", label: AirI18n.t("d.chart.attention"), data: overview.trend.map((b) => b.attention), borderColor: "#3d8bfd", backgroundColor: "#3d8bfd", yAxisID: "pct", tension: 0.3, spanGaps: true },
      { type: "bar", label: AirI18n.t("d.chart.messages"), data: overview.trend.map((b) => b.chat_messages), backgroundColor: "#46a758aa", yAxisID: "n" },
      { type: "bar", label: AirI18n.t("d.chart.confusion"), data: overview.trend.map((b) => b.confusion), backgroundColor: "#e5484daa", yAxisID: "n" },
    ];
    if (trendChart) { trendChart.data.labels = labels; trendChart.data.datasets = ds; trendChart.update("none"); return; }
    trendChart = new Chart($("d-trend"), {
      data: { labels, datasets: ds },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { labels: { color: c.text, boxWidth: 12 } } },
        scales: {
          x: { ticks: { color: c.text, maxRotation: 0, autoSkip: true }, grid: { color: c.grid } },
          pct: { position: "left", min: 0, max: 100, ticks: { color: c.text }, grid: { color: c.grid } },
          n: { position: "right", beginAtZero: true, ticks: { color: c.text, precision: 0 }, grid: { drawOnChartArea: false } },
        },
      },
    });
  }
  function drawQuiz() {
    if (!overview || typeof Chart === "undefined") return;
    const c = chartColors();
    const labels = overview.quizzes.map((q, i) => `Q${i + 1}`);
    const ds = [{ label: AirI18n.t("d.chart.accuracy"), data: overview.quizzes.map((q) => q.accuracy), backgroundColor: "#3d8bfd" }];
    if (quizChart) { quizChart.data.labels = labels; quizChart.data.datasets = ds; quizChart.update("none"); return; }
    quizChart = new Chart($("d-quiz"), {
      type: "bar", data: { labels, datasets: ds },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        plugins: { legend: { labels: { color: c.text, boxWidth: 12 } } },
        scales: { x: { ticks: { color: c.text }, grid: { color: c.grid } }, y: { min: 0, max: 100, ticks: { color: c.text }, grid: { color: c.grid } } },
      },
    });
  }

  function renderOverview() {
    if (!overview) return;
    const s = overview.session, cards = overview.cards;
    $("d-title").textContent = s.title;
    $("d-status").textContent = AirI18n.t(s.status === "active" ? "d.active" : "d.ended");
    $("c-present").textContent = cards.present + " / " + cards.students;
    $("c-mpm").textContent = cards.messages_per_minute;
    $("c-open").textContent = cards.open_questions;
    $("c-confusion").textContent = cards.confusion_index;
    fill($("d-quiz-table").querySelector("tbody"), overview.quizzes.map((q, i) => {
      const name = el("td", `Q${i + 1}. ${q.question}`, "name");
      return tr([name, String(q.answers), pct(q.accuracy), q.difficulty === null ? "–" : q.difficulty + "/100"]);
    }));
    const recs = overview.recordings.map((r) => {
      const li = el("li");
      if (r.page_url) { const a = el("a", `${date(r.started_at)} · ${dur(r.duration)}`); a.href = r.page_url; li.append(a); }
      else li.textContent = `${date(r.started_at)} · ${r.status}`;
      return li;
    });
    $("d-recordings").replaceChildren(...(recs.length ? recs : [el("li", AirI18n.t("d.none"), "muted")]));
    drawTrend();
    drawQuiz();
  }
  function renderStudents() {
    if (!students) return;
    fill($("d-students").querySelector("tbody"), students.students.map((r) => {
      const name = el("td", r.name, "name");
      const score = el("td", String(r.activity_score));
      score.title = Object.entries(r.activity_parts).map(([k, v]) => `${k}: ${v}`).join(", ");
      return tr([name, time(r.joined_at), r.online ? "●" : time(r.left_at), dur(r.present_seconds), String(r.messages),
        String(r.questions), String(r.quiz_answers), pct(r.quiz_accuracy), score]);
    }));
  }
  function renderAlerts() {
    if (!alerts) return;
    const items = alerts.alerts.slice().reverse().map((a) => el("li", `${time(a.timestamp)} ${a.name}: ${AirI18n.t("d.reason." + a.reason)}${a.detail ? " — " + a.detail : ""}`));
    $("d-alerts").replaceChildren(...(items.length ? items : [el("li", AirI18n.t("d.none"), "muted")]));
  }
  function renderSlides() {
    if (!slides) return;
    $("d-slides-empty").hidden = slides.slides.length > 0;
    $("d-slides").replaceChildren(...slides.slides.map((s) => {
      const li = el("li");
      if (s.thumbnail) { const img = el("img"); img.src = s.thumbnail; img.alt = s.title || `#${s.index + 1}`; img.loading = "lazy"; li.append(img); }
      li.append(el("div", `${time(s.at)} · ${s.title || "#" + (s.index + 1)}`, "title"));
      const marks = el("div", null, "d-marks");
      marks.append(el("span", AirI18n.t("d.msgs", { n: s.messages }), "d-mark"));
      marks.append(el("span", AirI18n.t("d.qs", { n: s.questions }), "d-mark"));
      marks.append(el("span", AirI18n.t("d.conf", { n: s.confusion }), "d-mark" + (s.confusion ? " confusion" : "")));
      li.append(marks);
      return li;
    }));
  }
  function tr_(item, prefix) { return AirI18n.t(prefix + item.code, item.params || {}); }
  function renderReport() {
    if (!report) return;
    let src = report.source === "local" ? AirI18n.t("d.source.local") : AirI18n.t("d.source.remote", { provider: report.source, model: report.model || "" });
    if (report.fallback) src += " " + AirI18n.t("d.fallback", { provider: report.fallback.provider, reason: report.fallback.reason });
    $("d-report-source").textContent = src + " · " + time(report.generated_at);
    const p = report.participation || {};
    $("d-report-summary").textContent = report.ai_summary || AirI18n.t("d.summary", {
      students: p.students || 0, messages: p.messages || 0, questions: p.questions || 0,
      confused: p.confusion_messages || 0, slides: (report.topics_per_slide || []).length,
      peaks: report.confusion_peaks.length, unanswered: report.unanswered_questions.length });
    const sug = (report.ai_suggestions || []).map((t) => el("li", t)).concat(report.suggestions.map((s) => el("li", tr_(s, "sug."))));
    $("d-suggestions").replaceChildren(...sug);
    const un = report.unanswered_questions.map((q) => el("li", `${time(q.at)} ${q.name}: ${q.text}`));
    $("d-unanswered").replaceChildren(...(un.length ? un : [el("li", AirI18n.t("d.none"), "muted")]));
    const pk = report.confusion_peaks.map((p) => el("li", `${time(p.start)}–${time(p.end)} · ${p.confusion_messages} · ${(p.slide && p.slide.title) || ""} — ${p.examples.join(" / ")}`));
    $("d-peaks").replaceChildren(...(pk.length ? pk : [el("li", AirI18n.t("d.none"), "muted")]));
    const notes = report.student_notes.map((n) => {
      const parts = n.items.map((i) => tr_(i, "note."));
      return el("li", `${n.name}: ${n.ai_note || parts.join(", ") || "–"}`);
    });
    $("d-notes").replaceChildren(...(notes.length ? notes : [el("li", AirI18n.t("d.none"), "muted")]));
  }

  async function loadLive() {
    try {
      [overview, students, alerts] = await Promise.all([api(base + "/overview"), api(base + "/students"), api(base + "/alerts")]);
      renderOverview(); renderStudents(); renderAlerts(); showError("");
    } catch (e) { showError(e.message); }
  }
  async function loadSlides() { try { slides = await api(base + "/slides"); renderSlides(); } catch (e) { showError(e.message); } }
  async function loadReport(fresh) {
    try { report = await api(`/api/ai/session/${encodeURIComponent(sessionId)}/report${fresh ? "?fresh=1" : ""}`); renderReport(); } catch (e) { showError(e.message); }
  }
  $("d-report-refresh").addEventListener("click", () => loadReport(true));
  document.addEventListener("airclass:lang", () => {
    if (trendChart) { trendChart.destroy(); trendChart = null; }
    if (quizChart) { quizChart.destroy(); quizChart = null; }
    renderOverview(); renderStudents(); renderAlerts(); renderSlides(); renderReport();
  });

  // Live: class events over the existing WebSocket schedule a refresh (at most every 2 s).
  let pending = null, ws = null, retry = 1000;
  function soon() { if (!pending) pending = setTimeout(() => { pending = null; loadLive(); }, 2000); }
  function connect() {
    if (!overview || overview.session.status !== "active") return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/ws/session/${encodeURIComponent(sessionId)}?token=${encodeURIComponent(token)}`);
    ws.onopen = () => { retry = 1000; $("d-live").textContent = AirI18n.t("d.live"); $("d-live").classList.add("live"); };
    ws.onclose = () => { $("d-live").textContent = AirI18n.t("d.offline"); $("d-live").classList.remove("live"); setTimeout(connect, retry); retry = Math.min(retry * 2, 15000); };
    ws.onmessage = (ev) => {
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (["chat", "alert", "presence", "presence_batch", "quiz_stats", "quiz", "quiz_closed", "session_ended"].includes(m.type)) soon();
      if (m.type === "ai_report") loadReport(false);
      if (m.type === "session_ended") { ws.onclose = null; ws.close(); loadReport(true); }
    };
  }
  loadLive().then(() => { connect(); loadSlides(); loadReport(false); });
  setInterval(() => { if (overview && overview.session.status === "active") loadLive(); }, 30000);
  setInterval(() => { if (overview && overview.session.status === "active") loadSlides(); }, 60000);
})();
