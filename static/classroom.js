// Student classroom: join by code, realtime chat, quiz pop-up, presence reports.
// Join stores the student token in sessionStorage ("airclass.token", "airclass.session");
// the player (student.js) uses the same token. Presence: whether <video id="video"> is
// playing and whether the tab is visible, sent on every change and every 5 s.
(function () {
  AirI18n.register({
    ko: {
      "cls.join.title": "수업 참여", "cls.join.code": "참여 코드", "cls.join.code_ph": "예: ABC234",
      "cls.join.name": "이름", "cls.join.submit": "참여하기", "cls.join.bad": "참여 코드를 확인하세요.",
      "cls.connecting": "연결 중…", "cls.online": "연결됨", "cls.offline": "재연결 중…",
      "cls.chat.placeholder": "메시지 입력…", "cls.chat.send": "보내기", "cls.muted": "선생님이 채팅을 막았습니다.",
      "cls.unmuted": "다시 채팅할 수 있습니다.", "cls.ended": "수업이 끝났습니다.",
      "cls.quiz.title": "퀴즈", "cls.quiz.submit": "제출", "cls.quiz.your_answer": "답 입력…",
      "cls.quiz.dismiss": "닫기", "cls.quiz.sent": "답을 제출했습니다.", "cls.quiz.already": "이미 답했습니다.",
      "cls.quiz.closed": "퀴즈가 끝났습니다.", "cls.quiz.correct": "정답입니다!", "cls.quiz.wrong": "오답입니다. 정답: {answer}",
      "cls.quiz.result": "정답: {answer} ({correct}/{total}명 정답)", "cls.me": "{name}(으)로 참여 중",
      "cls.quiz.left": "남은 시간 {n}초", "cls.quiz.mine": "내 답",
    },
    en: {
      "cls.join.title": "Join a class", "cls.join.code": "Join code", "cls.join.code_ph": "e.g. ABC234",
      "cls.join.name": "Your name", "cls.join.submit": "Join", "cls.join.bad": "Check the join code.",
      "cls.connecting": "connecting…", "cls.online": "connected", "cls.offline": "reconnecting…",
      "cls.chat.placeholder": "Type a message…", "cls.chat.send": "Send", "cls.muted": "The teacher muted your chat.",
      "cls.unmuted": "You can chat again.", "cls.ended": "The class has ended.",
      "cls.quiz.title": "Quiz", "cls.quiz.submit": "Submit", "cls.quiz.your_answer": "Your answer…",
      "cls.quiz.dismiss": "Close", "cls.quiz.sent": "Answer sent.", "cls.quiz.already": "You already answered.",
      "cls.quiz.closed": "The quiz is closed.", "cls.quiz.correct": "Correct!", "cls.quiz.wrong": "Not quite. Answer: {answer}",
      "cls.quiz.result": "Answer: {answer} ({correct}/{total} correct)", "cls.me": "joined as {name}",
      "cls.quiz.left": "{n} s left", "cls.quiz.mine": "your answer",
    },
  });

  const $ = (id) => document.getElementById(id);
  const panel = $("cls-panel");
  if (!panel) return;
  const params = new URLSearchParams(location.search);
  const video = $("video");
  const joinOnly = panel.classList.contains("cls-join-only");
  let ws = null, retry = 1000, ended = false, quiz = null, myAnswer = null, timerId = null;

  function showJoin() {
    $("cls-join").hidden = false;
    $("cls-room").hidden = true;
    const code = params.get("code") || panel.dataset.code;
    if (code) $("cls-code").value = code;
    const name = localStorage.getItem("airclass.name");
    if (name) $("cls-name").value = name;
  }

  $("cls-join").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("cls-join-error").textContent = "";
    const name = $("cls-name").value.trim();
    const resp = await fetch("/api/sessions/join", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ join_code: $("cls-code").value.trim(), name }),
    });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) { $("cls-join-error").textContent = resp.status === 404 ? AirI18n.t("cls.join.bad") : (data.error || resp.status); return; }
    sessionStorage.setItem("airclass.token", data.token);
    sessionStorage.setItem("airclass.session", data.session_id);
    sessionStorage.setItem("airclass.student_id", data.student_id);
    localStorage.setItem("airclass.name", name);
    location.href = "/student?stream=" + encodeURIComponent(data.stream) + "&session=" + encodeURIComponent(data.session_id);
  });

  // -- chat ---------------------------------------------------------------------------
  function addChat(m) {
    const li = document.createElement("li");
    li.dataset.id = m.id;
    li.className = m.role;
    const who = document.createElement("b");
    who.textContent = m.name + ": ";
    li.append(who, document.createTextNode(m.text));
    $("cls-chat").append(li);
    $("cls-chat").scrollTop = $("cls-chat").scrollHeight;
  }
  function notice(key, vars) {
    const n = $("cls-notice");
    n.hidden = !key;
    n.textContent = key ? AirI18n.t(key, vars) : "";
  }
  $("cls-chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("cls-chat-input").value.trim();
    if (!text || !ws || ws.readyState !== 1) return;
    ws.send(JSON.stringify({ type: "chat", text }));
    $("cls-chat-input").value = "";
  });

  // -- quiz ---------------------------------------------------------------------------
  function answerText(q, a) { return q.kind === "choice" && q.options ? q.options[a] : String(a); }
  function showQuiz(q, answered) {
    quiz = q;
    myAnswer = null;
    $("cls-quiz").hidden = false;
    $("cls-quiz-question").textContent = q.question;
    $("cls-quiz-result").textContent = answered ? AirI18n.t("cls.quiz.already") : "";
    const opts = $("cls-quiz-options");
    opts.textContent = "";
    $("cls-quiz-short").hidden = q.kind !== "short" || answered;
    if (q.kind === "choice") {
      q.options.forEach((text, i) => {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "cls-option";
        b.dataset.index = i;
        b.textContent = (i + 1) + ". " + text;
        b.disabled = !!answered;
        b.addEventListener("click", () => sendAnswer(i));
        opts.append(b);
      });
    }
    clearInterval(timerId);
    const tick = () => {
      const left = Math.max(0, Math.round((q.closes_at || 0) - Date.now() / 1000));
      $("cls-quiz-timer").textContent = q.closes_at ? AirI18n.t("cls.quiz.left", { n: left }) : "";
      $("cls-quiz-timer").classList.toggle("urgent", !!q.closes_at && left <= 10);
    };
    tick();
    timerId = setInterval(tick, 500);
  }
  function sendAnswer(answer) {
    if (!quiz || !ws || ws.readyState !== 1) return;
    myAnswer = answer;
    ws.send(JSON.stringify({ type: "quiz_answer", quiz_id: quiz.id, answer }));
    document.querySelectorAll(".cls-option").forEach((b) => {
      b.disabled = true;
      if (String(b.dataset.index) === String(answer)) {
        b.classList.add("chosen");
        b.setAttribute("aria-pressed", "true");
        b.dataset.mine = AirI18n.t("cls.quiz.mine");
      }
    });
  }
  $("cls-quiz-short").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("cls-quiz-text").value.trim();
    if (text) { sendAnswer(text); $("cls-quiz-short").hidden = true; }
  });
  $("cls-quiz-close").addEventListener("click", () => { $("cls-quiz").hidden = true; });
  function quizClosed(q, stats) {
    clearInterval(timerId);
    $("cls-quiz-timer").textContent = "";
    if (!quiz || quiz.id !== q.id) return;
    const answer = Array.isArray(q.correct) ? q.correct[0] : answerText(q, q.correct);
    document.querySelectorAll(".cls-option").forEach((b) => {
      b.disabled = true;
      if (Number(b.dataset.index) === q.correct) b.classList.add("correct");
    });
    $("cls-quiz-short").hidden = true;
    $("cls-quiz").hidden = false;
    $("cls-quiz-result").textContent = AirI18n.t("cls.quiz.result", { answer, correct: stats.correct, total: stats.total });
  }

  // -- realtime -------------------------------------------------------------------------
  function presence() {
    if (!ws || ws.readyState !== 1) return;
    const playing = !!video && !video.paused && !video.ended && video.readyState > 2;
    const visible = document.visibilityState === "visible";
    ws.send(JSON.stringify({ type: "presence", playing, visible }));
  }
  function setStatus(key) { $("cls-status").dataset.i18n = key; $("cls-status").textContent = AirI18n.t(key); }

  function connect(sessionId, token) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/ws/session/${encodeURIComponent(sessionId)}?token=${encodeURIComponent(token)}`);
    ws.onopen = () => { retry = 1000; setStatus("cls.online"); };
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      switch (m.type) {
        case "welcome":
          $("cls-title").textContent = m.session.title;
          $("cls-me").textContent = AirI18n.t("cls.me", { name: m.name });
          $("cls-chat").textContent = "";
          m.chat.forEach(addChat);
          notice(m.muted ? "cls.muted" : m.session.status !== "active" ? "cls.ended" : null);
          if (m.quiz && m.quiz.status === "open") showQuiz(m.quiz, m.answered);
          presence();
          break;
        case "chat": addChat(m.message); break;
        case "chat_deleted": {
          const li = $("cls-chat").querySelector(`li[data-id="${CSS.escape(m.message_id)}"]`);
          if (li) li.remove();
          break;
        }
        case "muted": notice(m.muted ? "cls.muted" : "cls.unmuted"); break;
        case "quiz": showQuiz(m.quiz, false); break;
        case "quiz_answer":
          $("cls-quiz-result").textContent = AirI18n.t("cls.quiz.sent");
          break;
        case "quiz_closed": quizClosed(m.quiz, m.stats || {}); break;
        case "session_ended": ended = true; notice("cls.ended"); break;
        case "error":
          if (m.request === "quiz_answer") {
            $("cls-quiz-result").textContent = m.code === "duplicate" ? AirI18n.t("cls.quiz.already")
              : m.code === "quiz_closed" ? AirI18n.t("cls.quiz.closed") : m.message;
          } else if (m.code === "muted") notice("cls.muted");
          else { const n = $("cls-notice"); n.hidden = false; n.textContent = m.message; }
          break;
      }
    };
    ws.onclose = (ev) => {
      setStatus("cls.offline");
      if (ended) return;
      setTimeout(() => connect(sessionId, token), retry);
      retry = Math.min(retry * 2, 15000);
    };
  }

  const sessionId = params.get("session") || sessionStorage.getItem("airclass.session");
  const token = sessionStorage.getItem("airclass.token");
  if (!joinOnly && sessionId && token && sessionStorage.getItem("airclass.session") === sessionId) {
    $("cls-join").hidden = true;
    $("cls-room").hidden = false;
    connect(sessionId, token);
    setInterval(presence, 5000);
    document.addEventListener("visibilitychange", presence);
    if (video) ["playing", "pause", "waiting", "ended", "emptied", "stalled"].forEach((e) => video.addEventListener(e, presence));
  } else {
    showJoin();
  }
  window.airclassClassroom = { get ws() { return ws; }, presence };
})();
