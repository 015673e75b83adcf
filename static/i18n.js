// Korean / English UI text. Pages register their strings, then elements with
// data-i18n="key" (text) or data-i18n-placeholder="key" are filled in the chosen language.
(function () {
  const strings = { ko: {}, en: {} };
  const stored = localStorage.getItem("airclass.lang");
  let lang = stored || ((navigator.language || "en").toLowerCase().startsWith("ko") ? "ko" : "en");

  function t(key, vars) {
    let text = (strings[lang] && strings[lang][key]) || strings.en[key] || key;
    if (vars) for (const [k, v] of Object.entries(vars)) text = text.replace("{" + k + "}", v);
    return text;
  }
  function apply(root) {
    (root || document).querySelectorAll("[data-i18n]").forEach((el) => {
      el.textContent = t(el.dataset.i18n);
    });
    (root || document).querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
      el.placeholder = t(el.dataset.i18nPlaceholder);
    });
    document.documentElement.lang = lang;
    document.querySelectorAll(".lang-toggle").forEach((b) => (b.textContent = lang === "ko" ? "English" : "한국어"));
  }
  function register(dict) {
    for (const l of Object.keys(dict)) Object.assign(strings[l] || (strings[l] = {}), dict[l]);
    apply();
  }
  function setLang(l) {
    lang = l;
    localStorage.setItem("airclass.lang", l);
    apply();
    document.dispatchEvent(new CustomEvent("airclass:lang", { detail: l }));
  }
  register({
    ko: { "app.title": "AIRClass 라이브 강의실", "nav.join": "수업 참여", "nav.teacher": "교사", "nav.vod": "녹화 영상",
          "http.400": "입력한 내용을 확인해 주세요.", "http.401": "다시 로그인해 주세요.", "http.403": "이 작업을 할 권한이 없습니다.",
          "http.404": "찾을 수 없습니다.", "http.409": "이미 처리되었거나 다른 작업과 겹칩니다.", "http.413": "너무 큽니다.",
          "http.415": "지원하지 않는 형식입니다.", "http.429": "요청이 너무 많습니다. 잠시 후 다시 시도해 주세요.",
          "http.5xx": "서버에 문제가 있습니다. 잠시 후 다시 시도해 주세요.", "http.other": "요청을 처리하지 못했습니다." },
    en: { "app.title": "AIRClass live classroom", "nav.join": "Join a class", "nav.teacher": "Teacher", "nav.vod": "Recordings",
          "http.400": "Please check what you entered.", "http.401": "Please sign in again.", "http.403": "You may not do this.",
          "http.404": "Not found.", "http.409": "Already done, or in conflict with another action.", "http.413": "Too large.",
          "http.415": "Unsupported format.", "http.429": "Too many requests: try again in a moment.",
          "http.5xx": "The server has a problem: try again in a moment.", "http.other": "The request failed." },
  });
  // An Error for a failed request, in the page's language: the server's own text (English,
  // or already bilingual) in English or when it has Korean in it, else a Korean sentence
  // for the status; the server's text stays in err.detail.
  function httpError(status, message) {
    const detail = String(message || "");
    let text = detail;
    if (lang === "ko" && !/[\uac00-\ud7a3]/.test(detail)) {
      const key = status >= 500 ? "http.5xx" : "http." + status;
      text = strings.ko[key] ? t(key) : t("http.other");
    }
    const err = new Error(text || t("http.other"));
    err.status = status;
    err.detail = detail;
    return err;
  }
  document.addEventListener("click", (e) => {
    if (e.target.classList && e.target.classList.contains("lang-toggle")) setLang(lang === "ko" ? "en" : "ko");
  });
  document.addEventListener("DOMContentLoaded", () => apply());
  window.AirI18n = { t, register, apply, setLang, httpError, get lang() { return lang; } };
})();
