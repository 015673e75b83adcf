"""Local chat analysis, Korean and English, with no model download and no network.

Per message: language (Hangul syllables vs Latin letters), question, confusion,
sentiment (vaderSentiment for English, the project lexicon below for Korean, both with
negation), keywords. Measured on tests/fixtures/chat_labelled.tsv by tests/test_ai.py.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

HANGUL = re.compile(r"[\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")

# -- questions ---------------------------------------------------------------------------
KO_QUESTION_END = re.compile(
    r"(까요|나요|가요|니|냐|냐고|니까|는지|ㄴ지|은지|을까|ㄹ까|죠|지요|어요\?|데요\?|래요|"
    r"건가요|건가|거예요\?|건지|는데요\?|겠어요\?|할까|인가|인가요|이에요\?|예요\?)"
    r"\s*[?？!.~ㅠㅜ]*\s*$"
)
KO_QUESTION_WORD = re.compile(
    r"(^|\s)(왜|뭐|뭔가요|뭐예요|무엇|어떻게|언제|어디|누가|무슨|몇|어느|얼마)"
)
KO_EMBEDDED = re.compile(r"(모르겠\S*|못\s*했\S*|놓쳤\S*)\s*[~ㅠㅜ.!]*$")
EN_QUESTION_START = re.compile(
    r"^\s*(what|why|how|when|where|who|whom|which|whose|is|are|am|was|were|can|could|do|"
    r"does|did|will|would|should|shall|may|might|have|has|isn't|aren't|don't|doesn't|"
    r"didn't|can't|won't|wouldn't|shouldn't)\b",
    re.IGNORECASE,
)
EN_QUESTION_INNER = re.compile(
    r"\b(any(one|body) know|i wonder|is it (true|ok|okay)|what about|how about|"
    r"could you|can you|can we|should we|do we)\b",
    re.IGNORECASE,
)

# -- confusion ---------------------------------------------------------------------------
KO_CONFUSION = (
    "모르겠",
    "몰라",
    "모름",
    "이해가 안",
    "이해 안",
    "이해안",
    "이해가 잘 안",
    "이해를 못",
    "이해 못",
    "이해못",
    "헷갈",
    "햇갈",
    "어려워",
    "어렵다",
    "어려운데",
    "어렵네",
    "어렵고",
    "어렵습니다",
    "무슨 말",
    "뭔 말",
    "다시 설명",
    "한번 더 설명",
    "한 번 더 설명",
    "다시 한번",
    "다시 한 번",
    "너무 빨라",
    "너무 빠르",
    "놓쳤",
    "못 따라",
    "못따라",
    "따라가기 힘",
    "멘붕",
    "복잡",
    "막막",
    "감이 안",
    "감이 안 와",
    "뭐지",
    "뭔지 모",
    "잘 모르",
)
EN_CONFUSION = (
    "confused",
    "confusing",
    "confuses me",
    "don't understand",
    "dont understand",
    "do not understand",
    "didn't understand",
    "didnt understand",
    "don't get",
    "dont get",
    "didn't get",
    "doesn't make sense",
    "does not make sense",
    "makes no sense",
    "make sense of",
    "i'm lost",
    "im lost",
    "i am lost",
    "lost me",
    "got lost",
    "no idea",
    "not sure",
    "unclear",
    "what does that mean",
    "what does this mean",
    "can you repeat",
    "could you repeat",
    "say that again",
    "explain again",
    "explain that again",
    "explain it again",
    "one more time",
    "too fast",
    "slow down",
    "hard to follow",
    "can't follow",
    "cannot follow",
    "confuse me",
    "i missed",
    "missed the",
    "over my head",
    "i'm stuck",
    "im stuck",
    "stuck on",
    "which one",
    "huh",
)
#: A confusion phrase right after one of these is negated ("not confused", "안 헷갈려").
EN_NEGATORS = re.compile(r"\b(not|no longer|never|isn't|wasn't|n't)\s+(so\s+|that\s+|too\s+)?$")
KO_CONFUSION_NEGATED = (
    "안 헷갈",
    "안헷갈",
    "어렵지 않",
    "어렵진 않",
    "안 어려",
    "안어려",
    "복잡하지 않",
    "복잡하진 않",
    "이제 이해",
    "이해가 돼",
    "이해가 되",
    "이해됐",
    "이해 됐",
    "이해했",
    "이제 알겠",
    "안 빨라",
    "빠르지 않",
)
EN_CONFUSION_NEGATED = (
    "not confused",
    "no longer confused",
    "not confusing",
    "makes sense now",
    "get it now",
    "not lost",
    "not hard to follow",
    "now i understand",
    "i understand now",
)

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
    """"ko", "en" or "und" (no letters)."""
    hangul = len(HANGUL.findall(text))
    latin = len(LATIN.findall(text))
    if hangul == 0 and latin == 0:
        return "und"
    # One Hangul syllable carries about as much as three Latin letters.
    return "ko" if hangul * 3 >= latin else "en"


def is_question(text: str) -> bool:
    t = text.strip()
    if not t:
        return False
    if "?" in t or "？" in t:
        return True
    for sentence in re.split(r"[.!。\n]+", t):
        s = sentence.strip()
        if not s:
            continue
        if KO_QUESTION_END.search(s) and not s.endswith(("습니다", "어요", "아요")):
            return True
        if KO_EMBEDDED.search(s):
            continue  # "왜 그런지 모르겠어요": a statement about a question
        if KO_QUESTION_WORD.search(s) and re.search(r"(요|까|니|냐|죠|지)\s*[~ㅠㅜ]*$", s):
            return True
        if EN_QUESTION_START.search(s) or EN_QUESTION_INNER.search(s):
            return True
    return False


def _negated_en(low: str, start: int) -> bool:
    return bool(EN_NEGATORS.search(low[:start]))


def is_confusion(text: str) -> bool:
    low = " ".join(text.casefold().split()).replace("복잡도", "")  # complexity (O(n))
    if any(p in low for p in KO_CONFUSION_NEGATED + EN_CONFUSION_NEGATED):
        # "이제 이해했어요" / "not confused": negated unless another cue stays.
        for p in KO_CONFUSION_NEGATED + EN_CONFUSION_NEGATED:
            low = low.replace(p, " ")
    for phrase in KO_CONFUSION:
        if phrase in low:
            i = low.find(phrase)
            tail = low[i + len(phrase) : i + len(phrase) + 6]
            hard = phrase.startswith(("어렵", "어려", "복잡"))
            if hard and KO_NEGATION_AFTER.match(tail.lstrip()):
                continue  # "어렵지 않아요"
            return True
    for phrase in EN_CONFUSION:
        for m in re.finditer(r"(?<![a-z])" + re.escape(phrase) + r"(?![a-z])", low):
            if not _negated_en(low, m.start()):
                return True
    return False


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


def sentiment(text: str, lang: str | None = None) -> str:
    """positive / neutral / negative."""
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
