// Home page strings (kept out of the page: the Content-Security-Policy allows no inline script).
AirI18n.register({
  ko: { "index.role": "노드 역할", "index.streams": "스트림", "index.viewers": "명 시청 중",
        "index.none": "아직 스트림이 없습니다.", "state.live": "방송 중", "state.offline": "오프라인" },
  en: { "index.role": "Node role", "index.streams": "Streams", "index.viewers": "viewers",
        "index.none": "No streams yet.", "state.live": "LIVE", "state.offline": "offline" },
});
