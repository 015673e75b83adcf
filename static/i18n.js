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
    ko: { "app.title": "AIRClass 라이브 강의실", "nav.join": "수업 참여", "nav.teacher": "교사", "nav.vod": "녹화 영상" },
    en: { "app.title": "AIRClass live classroom", "nav.join": "Join a class", "nav.teacher": "Teacher", "nav.vod": "Recordings" },
  });
  document.addEventListener("click", (e) => {
    if (e.target.classList && e.target.classList.contains("lang-toggle")) setLang(lang === "ko" ? "en" : "ko");
  });
  document.addEventListener("DOMContentLoaded", () => apply());
  window.AirI18n = { t, register, apply, setLang, get lang() { return lang; } };
})();
