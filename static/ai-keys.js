// Teacher page: the AI provider key form. Saves the per-provider key the AI analysis
// uses (POST /api/ai/keys/{gemini|openai}); errors appear next to the field in the
// page's language.
(function () {
  AirI18n.register({
    ko: {
      "ai.title": "AI 분석 키", "ai.provider": "AI 제공자", "ai.openai": "OpenAI 호환 (OpenAI, Ollama, vLLM)",
      "ai.key": "API 키", "ai.base_url": "API 주소 (base URL)", "ai.model": "모델 (선택)",
      "ai.saved": "저장됨: {provider}, 모델 {model}", "ai.configured": "설정됨: {provider}, 모델 {model}",
      "ai.err.no_data_key": "이 서버에 AIRCLASS_DATA_KEY가 설정되지 않아 AI 키를 저장할 수 없습니다. 서버 운영자에게 문의하세요.",
      "ai.err.base_url_not_allowed": "이 서버에서 허용되지 않은 API 주소입니다. 허용된 주소를 고르거나 운영자에게 문의하세요.",
      "ai.err.key_required": "API 키를 입력하세요.",
      "ai.err.base_required": "API 주소를 입력하세요.",
      "ai.err.other": "저장하지 못했습니다: {error}",
    },
    en: {
      "ai.title": "AI analysis key", "ai.provider": "AI provider", "ai.openai": "OpenAI-compatible (OpenAI, Ollama, vLLM)",
      "ai.key": "API key", "ai.base_url": "API base URL", "ai.model": "Model (optional)",
      "ai.saved": "saved: {provider}, model {model}", "ai.configured": "configured: {provider}, model {model}",
      "ai.err.no_data_key": "This server cannot store AI keys: AIRCLASS_DATA_KEY is not set. Ask the server's operator.",
      "ai.err.base_url_not_allowed": "This server does not allow that API base URL. Pick an allowed one or ask the operator.",
      "ai.err.key_required": "Enter the API key.",
      "ai.err.base_required": "Enter the API base URL.",
      "ai.err.other": "Not saved: {error}",
    },
  });

  const $ = (id) => document.getElementById(id);
  const form = $("t-ai-form");
  const token = sessionStorage.getItem("airclass.teacher_token");
  if (!form || !token) return;
  const NAMES = { gemini: "Gemini", openai: "OpenAI" };
  let lastError = null;  // {code, message}: shown again in the other language on a switch
  let seq = 0;  // a status fetched before a save must not overwrite the save's answer

  async function call(method, path, body) {
    const resp = await fetch(path, { method, headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
                                     body: body ? JSON.stringify(body) : undefined });
    const data = await resp.json().catch(() => ({}));
    if (!resp.ok) throw Object.assign(new Error(data.error || String(resp.status)), { code: data.code || "" });
    return data;
  }
  function showError(err) {
    lastError = err;
    if (!err) { $("t-ai-error").textContent = ""; return; }
    const key = "ai.err." + err.code;
    const text = AirI18n.t(key);
    $("t-ai-error").textContent = text !== key ? text : AirI18n.t("ai.err.other", { error: err.message });
  }
  function showState(status, key) {
    $("t-ai-state").textContent = status && status.configured
      ? AirI18n.t(key, { provider: NAMES[status.provider] || status.provider, model: status.model }) : "";
  }
  function provider() { return $("t-ai-provider").value; }
  async function refresh() {
    $("t-ai-base-row").hidden = provider() !== "openai";
    const mine = ++seq;
    try {
      const status = await call("GET", `/api/ai/keys/${provider()}/status`);
      if (mine !== seq) return;
      showState(status, "ai.configured");
      if (status.allowed_base_urls) {
        const list = $("t-ai-allowed");
        list.textContent = "";
        for (const url of status.allowed_base_urls) { const o = document.createElement("option"); o.value = url; list.append(o); }
        if (!$("t-ai-base").value) $("t-ai-base").value = status.base_url || status.allowed_base_urls[0] || "";
      }
    } catch (err) { if (mine === seq) showError(err); }
  }

  $("t-ai-provider").addEventListener("change", () => { showError(null); refresh(); });
  document.addEventListener("airclass:lang", () => showError(lastError));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    showError(null);
    const body = { api_key: $("t-ai-key").value.trim() };
    if (!body.api_key && provider() === "gemini") { showError({ code: "key_required" }); return; }
    if ($("t-ai-model").value.trim()) body.model = $("t-ai-model").value.trim();
    if (provider() === "openai") {
      body.base_url = $("t-ai-base").value.trim();
      if (!body.base_url) { showError({ code: "base_required" }); return; }
    }
    ++seq;
    try {
      const status = await call("POST", `/api/ai/keys/${provider()}`, body);
      $("t-ai-key").value = "";
      showState(status, "ai.saved");
    } catch (err) { showError(err); }
  });
  refresh();
})();
