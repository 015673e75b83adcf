// Student page: says when this class's chat and slides are analysed by an external AI
// provider (the teacher configured one). Nothing is shown when analysis stays local.
(function () {
  AirI18n.register({
    ko: { "ai.notice": "이 수업의 채팅과 슬라이드는 외부 AI 서비스({provider})로 분석됩니다. 이름은 가명으로 바뀌어 전송됩니다." },
    en: { "ai.notice": "This class's chat and slides are analysed by an external AI service ({provider}). Names are replaced by pseudonyms before sending." },
  });
  const params = new URLSearchParams(location.search);
  const sessionId = params.get("session") || sessionStorage.getItem("airclass.session");
  const token = sessionStorage.getItem("airclass.token");
  if (!sessionId || !token) return;
  let provider = null;
  function show() {
    if (!provider) return;
    let box = document.getElementById("ai-notice");
    if (!box) {
      box = document.createElement("p");
      box.id = "ai-notice";
      box.className = "cls-notice ai-notice";
      box.setAttribute("role", "note");
      const panel = document.getElementById("cls-panel") || document.querySelector("main");
      panel.prepend(box);
    }
    box.textContent = AirI18n.t("ai.notice", { provider: provider === "gemini" ? "Google Gemini" : provider });
  }
  fetch(`/api/ai/session/${encodeURIComponent(sessionId)}/privacy`, { headers: { Authorization: "Bearer " + token } })
    .then((r) => (r.ok ? r.json() : null))
    .then((data) => { if (data && data.external) { provider = data.provider; show(); } })
    .catch(() => {});
  document.addEventListener("airclass:lang", show);
})();
