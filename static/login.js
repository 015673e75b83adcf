// Teacher sign-in: POST /api/auth/login, keep the token in sessionStorage, go to /teacher.
(function () {
  AirI18n.register({
    ko: { "login.title": "교사 로그인", "login.username": "아이디", "login.password": "비밀번호",
          "login.submit": "로그인", "login.hint": "계정 만들기: airclass teacher add <아이디>",
          "login.failed": "아이디 또는 비밀번호가 틀렸습니다.", "login.limited": "시도가 너무 많습니다. 잠시 후 다시 시도하세요." },
    en: { "login.title": "Teacher sign-in", "login.username": "Username", "login.password": "Password",
          "login.submit": "Sign in", "login.hint": "Accounts are created with: airclass teacher add <username>",
          "login.failed": "Wrong username or password.", "login.limited": "Too many attempts. Try again in a moment." },
  });
  // Where to go after signing in: a path of this origin only (no open redirect). The
  // server checked it already (pages.safe_next, put in the form's data-next); the page
  // checks again the same way. Browsers read "/\\evil.com" as "//evil.com", and
  // "/.//evil.com/x" normalises to the path "//evil.com/x", which is another host once
  // handed to location: so the URL is resolved, its origin compared, and so is the path
  // that comes out.
  function sameOrigin(path) {
    try { return new URL(path, location.origin).origin === location.origin; } catch (err) { return false; }
  }
  function safeNext(next) {
    if (!next || next[0] !== "/" || /[\\\u0000-\u0020\u007f]/.test(next) || !sameOrigin(next)) return "/teacher";
    const url = new URL(next, location.origin);
    const path = url.pathname + url.search + url.hash;
    return path.startsWith("//") || !sameOrigin(path) ? "/teacher" : path;
  }
  window.AirLogin = { safeNext };
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const body = { username: document.getElementById("login-username").value.trim(),
                   password: document.getElementById("login-password").value };
    try {
      const resp = await fetch("/api/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
                                                    body: JSON.stringify(body) });
      if (!resp.ok) { error.textContent = AirI18n.t(resp.status === 429 ? "login.limited" : "login.failed"); return; }
      const data = await resp.json();
      sessionStorage.setItem("airclass.teacher_token", data.token);
      sessionStorage.setItem("airclass.teacher", data.username);
      location.href = safeNext(form.dataset.next || new URLSearchParams(location.search).get("next"));
    } catch (err) { error.textContent = String(err); }
  });
})();
