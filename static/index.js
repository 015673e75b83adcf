// Home page strings (kept out of the page: the Content-Security-Policy allows no inline script).
AirI18n.register({
  ko: { "index.tagline": "채팅과 퀴즈가 있는 실시간 수업을 브라우저에서 바로.",
        "index.join": "수업 참여", "index.join_help": "선생님이 알려 준 참여 코드로",
        "index.teach": "선생님이에요", "index.teach_help": "수업을 열고 방송하기",
        "index.vod": "녹화 영상", "index.vod_help": "지난 수업 다시 보기",
        "index.streams": "지금 열린 공개 수업", "index.viewers": "명 시청 중",
        "index.none": "지금 열린 공개 수업이 없습니다. 비공개 수업은 참여 코드로 들어갑니다.",
        "state.live": "방송 중", "state.offline": "오프라인" },
  en: { "index.tagline": "Live lessons with chat and quizzes, in the browser.",
        "index.join": "Join a class", "index.join_help": "with the code from your teacher",
        "index.teach": "I am a teacher", "index.teach_help": "open a class and go live",
        "index.vod": "Recordings", "index.vod_help": "watch past classes again",
        "index.streams": "Open classes on now", "index.viewers": "viewers",
        "index.none": "No open class right now. Private classes are joined with a code.",
        "state.live": "LIVE", "state.offline": "offline" },
});
