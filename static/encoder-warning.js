// Teacher page: warn while the session's stream comes from an encoder that sends B-frames
// (stream status "reorders"). Browsers then get a copy re-encoded by the server, which
// costs the node CPU; the teacher can fix it in the encoder's settings.
(function () {
  AirI18n.register({
    ko: { "t.bframes": "인코더가 B-프레임을 보내고 있습니다. x264 설정에 'bframes=0'을 넣거나, OBS에서 프로파일을 baseline으로 하거나 B-프레임을 0으로 설정해 주세요." },
    en: { "t.bframes": "Your encoder sends B-frames. Set x264 'bframes=0', or in OBS: Profile baseline, or B-frames 0." },
  });
  let current = null; // { session, token } of the open session
  let checkedAt = 0;
  const show = (on) => {
    const el = document.getElementById("t-bframes");
    if (el) el.hidden = !on;
  };
  document.addEventListener("airclass:session", (e) => { current = e.detail; checkedAt = 0; show(false); });
  document.addEventListener("airclass:stream", async (e) => {
    if (!e.detail.live) { checkedAt = 0; show(false); return; }
    if (!current || Date.now() - checkedAt < 10000) return;
    checkedAt = Date.now();
    try {
      const res = await fetch("/api/streams/" + encodeURIComponent(current.session.stream),
        { headers: { Authorization: "Bearer " + current.token } });
      if (res.ok) show((await res.json()).reorders === true);
    } catch (err) { /* the next poll tries again */ }
  });
})();
