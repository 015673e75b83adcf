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
      const next = new URLSearchParams(location.search).get("next");
      location.href = next && next.startsWith("/") && !next.startsWith("//") ? next : "/teacher";
    } catch (err) { error.textContent = String(err); }
  });
})();
