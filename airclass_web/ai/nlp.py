"""Local chat analysis, Korean and English, with no model download and no network.

Per message: language (Hangul syllables vs Latin letters), question and confusion (a small
trained classifier shipped in the package, chat_model.npz, combined with the precise
hand-written cues of chat_cues), sentiment (the same model's probabilities with a vote of
vaderSentiment for English or the project lexicon below for Korean, both with negation),
keywords. Measured on the labelled corpus
in airclass_web/ai/corpus/ by scripts/eval_chat.py and tests/test_chat_analysis.py, and on
tests/fixtures/chat_labelled.tsv by tests/test_ai.py.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from . import chat_cues, chat_model

HANGUL = re.compile(r"[\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")

# -- Korean sentiment lexicon ----------------------------------------------------------------
KO_POSITIVE = (
    "좋",
    "재밌",
    "재미있",
    "재밋",
    "최고",
    "감사",
    "고마",
    "고맙",
    "알겠",
    "이해했",
    "이해됐",
    "이해 됐",
    "이해가 돼",
    "이해가 되",
    "쉽",
    "쉬워",
    "대박",
    "멋지",
    "멋있",
    "훌륭",
    "짱",
    "신기",
    "유익",
    "도움",
    "명확",
    "깔끔",
    "잘 들려",
    "잘 보여",
    "완벽",
    "굿",
    "오오",
    "와",
    "ㅎㅎ",
    "ㅋㅋ",
    "기대",
    "행복",
    "즐거",
    "흥미",
    "알기 쉽",
    "잘 알",
)
KO_NEGATIVE = (
    "싫",
    "어렵",
    "어려워",
    "지루",
    "힘들",
    "짜증",
    "별로",
    "모르겠",
    "졸려",
    "졸리",
    "피곤",
    "답답",
    "최악",
    "못하겠",
    "안 들려",
    "안들려",
    "안 보여",
    "안보여",
    "끊겨",
    "끊기",
    "ㅠ",
    "ㅜ",
    "헷갈",
    "이해가 안",
    "이해 안",
    "이해를 못",
    "이해 못",
    "이해못",
    "재미없",
    "재미 없",
    "너무 빨라",
    "너무 빠르",
    "놓쳤",
    "망했",
    "멘붕",
    "복잡",
    "막막",
    "슬프",
    "아쉽",
    "불편",
    "안 돼",
    "안돼",
    "안 되",
    "안되",
    "느려",
    "렉",
    "버벅",
    "소리가 작",
)
#: Turn the polarity of what precedes/follows ("안 좋아", "좋지 않아", "어렵지 않아").
KO_NEGATION_AFTER = re.compile(r"(지\s*않|지\s*않아|진\s*않|지\s*마|지\s*못)")
KO_NEGATION_BEFORE = re.compile(r"(^|\s)(안|못)\s*$")

# -- keywords ----------------------------------------------------------------------------
_EN_STOP_TEXT = """
    a about above after again against all am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further get got had hadn't has hasn't have
    haven't having he her here hers herself him himself his how i i'm if in into is isn't it
    it's its itself just let's like me more most much my myself no nor not now of off on once
    only or other ought our ours ourselves out over own really same she should shouldn't so
    some such than that that's the their theirs them themselves then there there's these they
    this those through to too under until up us very was wasn't we were weren't what what's
    when where which while who why will with won't would wouldn't you your yours yourself
    yeah yes okay ok please thanks thank sorry also still one two again know think mean
    understand explain teacher slide slides question maybe right well sure lot lots bit
    something anything everything way thing things make makes made go going gonna want
    next last first time see look say said use used need lost confused hard easy good great
    fast slow repeat sense does did done get gets getting hear"""
EN_STOP = frozenset(_EN_STOP_TEXT.split())
KO_PARTICLES = (
    "에서는",
    "으로는",
    "에게서",
    "까지는",
    "부터는",
    "이라는",
    "라는",
    "에서",
    "으로",
    "에게",
    "까지",
    "부터",
    "처럼",
    "보다",
    "하고",
    "이랑",
    "이나",
    "이란",
    "란",
    "은",
    "는",
    "이",
    "가",
    "을",
    "를",
    "에",
    "의",
    "도",
    "로",
    "와",
    "과",
    "랑",
    "나",
    "만",
    "요",
)
_KO_STOP_TEXT = """
    그리고 그래서 그런데 근데 하지만 그러면 그럼 이거 그거 저거 이것 그것 저것 여기 거기 저기
    지금 이제 다시 정말 진짜 너무 많이 조금 좀 아주 매우 혹시 그냥 제가 저는 저도 우리 선생님 쌤
    네 예 아니 아니요 이해 설명 질문 무엇 어떻게 언제 어디 누가 무슨 몇 어느 얼마 있 없 하 되
    같아요 같은데 있어요 없어요 합니다 해요 했어요 하나요 되나요 인가요 건가요 거예요 뭔가요 뭐예요
    모르겠어요 모르겠습니다 헷갈려요 어려워요 감사합니다 고맙습니다 좋아요 알겠습니다 알겠어요
    다음 이번 오늘 부분 내용 문제 것 거 수 때 때문 왜 뭐 부탁 한번 번 더 잘 안 못"""
KO_STOP = frozenset(_KO_STOP_TEXT.split())
KO_VERB_ENDING = re.compile(
    r"(습니다|습니까|ㅂ니다|세요|네요|나요|까요|가요|어요|아요|해요|했어|했다|하고|해서|하는|"
    r"한다|하다|인데|는데|은데|지만|어서|아서|니까|으면|면서|겠어|겠다|지요|죠|요|다|니|냐)$"
)
WORD = re.compile(r"[A-Za-z][A-Za-z'+#-]*[A-Za-z+#]|[A-Za-z]|[\uac00-\ud7a3]+|\d+(?:\.\d+)?")


def language(text: str) -> str:
    """Language: "ko", "en" or "und" (no letters)."""
    hangul = len(HANGUL.findall(text))
    latin = len(LATIN.findall(text))
    if hangul == 0 and latin == 0:
        return "und"
    # One Hangul syllable carries about as much as three Latin letters.
    return "ko" if hangul * 3 >= latin else "en"


@lru_cache(maxsize=4096)
def _scores(text: str) -> chat_model.Scores:
    """The trained model's probabilities (one scoring per distinct message)."""
    return chat_model.load().scores(text)


def is_question(text: str) -> bool:
    """Asks for an answer or information, or asks the teacher to do something in the
    form of a question or to go over something again (with or without '?').

    Very precise rules first (such requests; an English question word with '?'; a plain
    imperative about logistics or a rhetorical complaint is not a question), then the
    trained model, which also reads Korean endings (-냐, -나요, -는지, -임).
    """
    t = text.strip()
    if not t:
        return False
    if chat_cues.PRECISE_REQUEST.search(t):
        return True
    if "?" in t and chat_cues.EN_QUESTION_START.search(t):
        return True
    if chat_cues.plain_imperative(t) or chat_cues.RHETORICAL.search(t):
        return False
    return _scores(t).question >= chat_model.load().thresholds["question"]


#: Cues that say "confused" while also saying it is over need a surer model.
RESOLVED_THRESHOLD = 0.8


def is_confusion(text: str) -> bool:
    """Says or shows, now, that the writer does not follow (the trained model), except
    when every confusion cue is negated or over ("not confusing", "was lost, now I get
    it"); two or more plain confusion cues are enough on their own."""
    t = text.strip()
    if not t:
        return False
    cues = chat_cues.confusion_cues(t)
    if not cues.present and (cues.negated or cues.resolved) and not cues.still:
        return False
    p = _scores(t).confusion
    if cues.present and cues.resolved and not cues.still:
        return p >= RESOLVED_THRESHOLD
    if cues.present >= 2 and not cues.negated and not cues.resolved:
        return True
    return p >= chat_model.load().thresholds["confusion"]


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def _ko_polarity(text: str) -> float:
    """Sum of lexicon hits, each flipped when negated right before or after."""
    low = " ".join(text.split())
    score = 0.0
    taken: list[tuple[int, int]] = []

    def hits(words, sign):
        nonlocal score
        for w in sorted(words, key=len, reverse=True):
            for m in re.finditer(re.escape(w), low):
                a, b = m.start(), m.end()
                if any(a < y and x < b for x, y in taken):
                    continue
                taken.append((a, b))
                before = KO_NEGATION_BEFORE.search(low[:a]) and not w.startswith(("안", "못"))
                after = KO_NEGATION_AFTER.match(low[b : b + 8].lstrip("아어워해운은게기"))
                score += -sign if before or after else sign

    hits(KO_NEGATIVE, -1.0)
    hits(KO_POSITIVE, 1.0)
    return score


SENTIMENTS = ("negative", "neutral", "positive")
#: Weight of the lexicon's vote against the trained model's probabilities (chosen on dev and
#: tests/fixtures/chat_labelled.tsv: 0.5 beats either alone on both).
LEXICON_VOTE = 0.5


def sentiment(text: str, lang: str | None = None) -> str:
    """positive / neutral / negative: the trained model's probabilities plus a vote of
    the lexicons (VADER for English, the Korean lexicon above, both with negation)."""
    votes = list(_scores(text.strip()).sentiment)
    votes[SENTIMENTS.index(_lexicon_sentiment(text, lang))] += LEXICON_VOTE
    return SENTIMENTS[votes.index(max(votes))]


def _lexicon_sentiment(text: str, lang: str | None = None) -> str:
    lang = lang or language(text)
    if lang == "ko":
        score = _ko_polarity(text)
        if is_confusion(text) and score >= 0:
            score -= 1.0
    else:
        score = _vader().polarity_scores(text)["compound"]
        # Confusion, or Korean emoticons like ㅠㅠ in an English line, are not neutral.
        if score > -0.05 and (is_confusion(text) or _ko_polarity(text) < 0):
            score = -0.1
    if score >= 0.05:
        return "positive"
    if score <= -0.05:
        return "negative"
    return "neutral"


def _ko_stem(token: str) -> str:
    for p in KO_PARTICLES:
        if token.endswith(p) and len(token) - len(p) >= 2:
            return token[: -len(p)]
    return token


def keywords(text: str, limit: int = 8) -> list[str]:
    """Content words, most frequent first (English lower-cased, Korean without particles)."""
    counts: Counter[str] = Counter()
    for raw in WORD.findall(text):
        if HANGUL.match(raw):
            if KO_VERB_ENDING.search(raw) and len(raw) <= 4:
                continue  # a verb or adjective, not a topic
            word = _ko_stem(raw)
            if len(word) < 2 or word in KO_STOP or KO_VERB_ENDING.search(word):
                continue
        else:
            word = raw.casefold().strip("'")
            if word in EN_STOP or (len(word) < 3 and not word.isdigit()) or word.isdigit():
                continue
        counts[word] += 1
    return [w for w, _ in counts.most_common(limit)]


def analyse_message(text: str) -> dict:
    lang = language(text)
    return {
        "text": text,
        "lang": lang,
        "question": is_question(text),
        "confusion": is_confusion(text),
        "sentiment": sentiment(text, lang),
        "keywords": keywords(text, 5),
    }


def analyse_messages(texts: list[str]) -> list[dict]:
    return [analyse_message(t) for t in texts]
