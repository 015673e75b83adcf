"""Hand-written cues for chat analysis: confusion phrases with negation and tense, Korean
question endings. Used two ways: as features of the trained model (chat_model.features)
and, where they are very precise, as rules on their own (nlp.is_question/is_confusion).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# -- confusion --------------------------------------------------------------------------
_EN_CONFUSION = (
    r"confus\w*|puzzl\w*|baffl\w*|perplex\w*|"
    r"(do|did|does)\s*(n[o']?t|not)\s+(really\s+|quite\s+|fully\s+)?(get|understand|follow|see)|"
    r"(dont|don't|didnt|didn't|do not|did not|doesnt|doesn't)\s+(get|understand|follow)|"
    r"not\s+(getting|following|understanding|sure i (get|follow|understand))|"
    r"(can'?t|cannot|couldn'?t)\s+(follow|keep up|keep track|tell (them|the two)? ?apart|"
    r"wrap my head|understand|figure out|keep (them|it) straight)|"
    r"lost( me| track| the thread)?|i'?m lost|stuck|no (idea|clue)|clueless|"
    r"(makes?|made) (no|zero) sense|(doesn'?t|does not|didn'?t) (make sense|add up)|"
    r"over my head|flew (right )?over|went over|head (is )?(spinning|hurts|full)|"
    r"brain (hurts|is (melting|fried|soup|full|dead))|my brain|melting my brain|fried|"
    r"mix(ing|ed)? (them |it )?up|blur(ring)?|overload|drowning|struggl\w*|"
    r"(not|isn'?t|still not) (clear|clicking)|unclear|(doesn'?t|does not|not) click(ing)?|"
    r"wait,? what|what\?{2,}|uh+ what|sorry what|huh|wdym|what do (you|u) mean|"
    r"what does (that|this) (even )?mean|what (even )?is (this|that|going on)|"
    r"what'?s going on|too (fast|quick)|slow(er| down)|(go|went) too fast|"
    r"missed (it|that|what|the (last|first|second|part|step|bit|slide|explanation|example|"
    r"beginning|end|formula|graph|derivation))|didn'?t (quite )?catch|"
    r"(so|too|really) (hard|difficult|complicated|painful)|give up|i feel (so )?dumb|"
    r"(one more time|once more|again)|turned around|blank(ing|ed)?|sinking in|greek to me|"
    r"fuzzy|hazy|help|send help|what am i looking at|wait how|how did (you|u) get|"
    r"where'?d (that|this) come from|where did (that|this|the \w+) come from|"
    r"can'?t figure( it)? out|(not|n't) following|in the sauce|head is swimming|"
    r"went (right )?past me|understood nothing|no comprendo|what now|i quit|"
    r"(doesn'?t|does not|didn'?t|not) (make|making) (any )?sense|throw(ing|s)? me off|"
    r"(can'?t|cannot) keep (it|them) straight|getting mixed up|all over the place"
)
_KO_CONFUSION = (
    r"모르겠|몰라|모름|모르|이해\s*(가|를|도|는)?\s*(잘\s*)?(안|못|1도)|이해\s*안|헷갈|햇갈|"
    r"섞여|섞였|어렵|어려워|어려움|빡세|막혔|막힘|막혀|멘붕|멘탈|뇌\s*정지|뇌정지|뇌가|"
    r"머리\S*\s*(가\s*)?(아파|아프|터|하얘|어지|복잡|지끈|빙글|뒤죽|꽉)|감이\s*안|감\s*안|"
    r"감이\s*안\s*잡|와닿지|못\s*따라|따라가기\s*(힘|벅)|(너무|넘|좀|진짜)\s*빨|빠르네|놓쳤|놓침|놓쳐|"
    r"길\s*을?\s*잃|흐름\s*놓|무슨\s*(말|소리|뜻)|뭔\s*(말|소리)|뭔소리|헤매|말이\s*안\s*되|"
    r"구분이?\s*안|정신\s*(이\s*)?없|복잡(?!도)|막막|포기|뒤죽박죽|엉망|엥|잉\?|네\?\?|뭐지|"
    r"못\s*알아들|알아듣기|다시\s*(설명|알려|해|보여|말|정리)|한\s*번\s*(만\s*)?더|한번\s*(만\s*)?더|"
    r"천천히|애매|멍해|멍하|안\s*돌아가|어질|혼란|뭐가\s*뭔지|혼미|안드로메다|도와\s*주세요|살려|"
    r"난해|으악|안\s*들어와|안\s*남아|용량\s*초과|스쳐\s*지나|그냥\s*지나|머릿속|"
    r"못\s*알아듣|이해\s*못|모르겠|이해력|어떻게\s*(간|나온|된)\s*거"
)
CONFUSION = re.compile(rf"(?<![a-z])({_EN_CONFUSION})(?![a-z])|{_KO_CONFUSION}", re.IGNORECASE)
#: Right before a confusion cue: it is negated ("not confused", "안 헷갈려요").
NEGATED_BEFORE = re.compile(
    r"(\b(not|never|no longer|isn'?t|wasn'?t|aren'?t|less)\s+(so\s+|that\s+|too\s+|at all\s+|"
    r"really\s+|even\s+|very\s+)?|(^|\s)(안|전혀\s*안|하나도\s*안|별로\s*안|덜)\s*)$",
    re.IGNORECASE,
)
#: Right after a confusion cue: negated in Korean ("헷갈리지 않아", "어렵진 않은데").
NEGATED_AFTER = re.compile(
    r"^\S*(지|진|진\s*않|지는)\s*않|^\S*\s*(at all|anymore)\b", re.IGNORECASE
)
#: Confusion that is over: "was confused but now it makes sense", "헷갈렸는데 이제 알겠어요".
RESOLVED = re.compile(
    r"\b(now|finally|anymore|cleared (it )?up|helped|makes? (so much |a lot of )?sense now|"
    r"(i )?(get|got|understand) it now|clicked|for once)\b|"
    r"이제|드디어|덕분에|보니까\s*\S*\s*(알|이해)|들으니까\s*\S*\s*(알|이해)|이젠|정리됐|정리 됐|"
    r"이해\s*(됐|돼|됨|했|완료)|알겠|알았|구분\s*(돼|됨)|쉽네",
    re.IGNORECASE,
)
#: Present, not over: "still", "again", "아직".
STILL = re.compile(
    r"\b(still|again|but not|now i'?m)\b|아직|다시\s*(헷|모르)|근데\s*\S*\s*모르", re.IGNORECASE
)


@dataclass(frozen=True)
class ConfusionCues:
    """What the confusion cues say about one message."""

    present: int  # cues not negated
    negated: int  # cues negated ("not confusing", "안 헷갈려요")
    resolved: bool  # the message says the confusion is over
    still: bool  # ... or that it goes on


def confusion_cues(text: str) -> ConfusionCues:
    """Count confusion cues, telling negated ones apart; note resolution and 'still'."""
    low = " ".join(text.casefold().split())
    present = negated = 0
    for m in CONFUSION.finditer(low):
        if NEGATED_BEFORE.search(low[: m.start()][-20:]) or NEGATED_AFTER.search(
            low[m.end() : m.end() + 12]
        ):
            negated += 1
        else:
            present += 1
    return ConfusionCues(present, negated, bool(RESOLVED.search(low)), bool(STILL.search(low)))


# -- questions --------------------------------------------------------------------------
#: Korean question endings carried without "?" (the last word of a sentence).
KO_QUESTION_END = re.compile(
    r"(냐|냐고|니|나|나요|니까|까|까요|래요|려나|ㄹ까|을까|는지|은지|인지|건지|던지|죠|지요|"
    r"나용|남|임|거임|건가|건가요|인가|인가요|뭐임|어케|어떡해|어때|어때요|뭐야|뭐예요|뭔가요|"
    r"맞죠|맞지|맞나|맞나요|맞아요|되나요|돼요|되니|되냐|됨|해요|했어요|있어요|없나요|있나요|"
    r"할래|할까|줄래|실래요|주실래요|주세요|해주세요|알려줘|보여줘)$"
)
KO_QUESTION_WORD = re.compile(
    r"(^|\s)(왜|뭐|뭔|무엇|어떻게|어케|언제|어디|누가|누구|무슨|몇|어느|얼마)"
)
_KO_SENTENCE_END = re.compile(r"[\s.!~ㅋㅎㅠㅜ^;:)(*\-…]+$")
EN_QUESTION_START = re.compile(
    r"^\s*(what|why|how|when|where|who|whom|which|whose|is|are|am|was|were|can|could|do|"
    r"does|did|will|would|should|shall|may|might|isn't|aren't|don't|doesn't|didn't|can't|"
    r"won't|wouldn't|shouldn't|wdym|r|u|any(one|body))\b",
    re.IGNORECASE,
)
EN_REQUEST = re.compile(
    r"\b(can|could|would|will) (you|u|we|i|someone|anyone)\b|\bplease\b|\bpls\b|\bplz\b|"
    r"\b(go|walk|run) (over|through|thru)\b|\b(explain|repeat|show)\b.*\b(again|more)\b",
    re.IGNORECASE,
)
KO_REQUEST = re.compile(r"(주세요|주실\s*(수|래)|주시면|줄\s*수|줘|주라|해\s*줘|해주세|부탁)")
#: Requests precise enough to be questions on their own: asked as a question ("could you
#: ...", "...주실 수 있나요"), or asking to go over something again.
PRECISE_REQUEST = re.compile(
    r"\b(can|could|would|will) (you|u)\b|"
    r"\b(explain|repeat|go over|go through|walk (me )?thr(ough|u)|run through|say)\b.*"
    r"\b(again|one more time|once more)\b|"
    r"주실\s*수|주실래|주시겠|줄\s*수\s*있|"
    r"(다시|한\s*번\s*만?\s*더|한번\s*만?\s*더)\s*\S*\s*(주세요|주실|줘)",
    re.IGNORECASE,
)


def korean_question_ending(text: str) -> str | None:
    """The Korean question ending a message's last word has, if any."""
    t = _KO_SENTENCE_END.sub("", text.strip())
    if not t:
        return None
    m = KO_QUESTION_END.search(t.split()[-1])
    return m.group(1) if m else None


_IMPERATIVE = re.compile(r"\b(please|pls|plz)\b|(주세요|세요|줘|주라)\s*[.!~ㅠㅜ]*$", re.IGNORECASE)
_ASKS_TO_EXPLAIN = re.compile(
    r"\b(explain|show|tell|teach|example|repeat|again|help)\b|"
    r"알려|설명|보여|가르쳐|다시|한\s*번\s*만?\s*더|한번\s*만?\s*더|예시|예제|도와",
    re.IGNORECASE,
)


def plain_imperative(text: str) -> bool:
    """A request about logistics, not asked as a question and not asking to explain or go
    over something ("next slide please", "칠판 좀 확대해 주세요"): not a question."""
    return bool(
        "?" not in text
        and _IMPERATIVE.search(text)
        and not PRECISE_REQUEST.search(text)
        and not _ASKS_TO_EXPLAIN.search(text)
        and not KO_QUESTION_WORD.search(text)
        and not EN_QUESTION_START.search(text)
    )


#: An English message that starts like a statement (a subject first) and has no "?".
EN_STATEMENT_START = re.compile(
    r"^\s*(the|this|that|it|its|it's|i|i'm|im|my|we|our|they|their|he|she|there|mine|"
    r"yours|x|y|[0-9])\b",
    re.IGNORECASE,
)


def english_statement_shape(text: str) -> bool:
    """Starts with a subject and carries no question mark ("the answer should be 7")."""
    return "?" not in text and bool(EN_STATEMENT_START.search(text))


#: A complaint shaped like a question: "why is this so hard", "왜 이렇게 어려워".
RHETORICAL = re.compile(
    r"^\W*(but |ok |ugh |man |bruh )?(why|how)\b.{0,40}\b(so|this|that|these|those)\s+"
    r"(hard|difficult|complicated|confusing|painful|brutal|annoying|impossible|many)\b|"
    r"왜\s*(이렇게|이리|그렇게|저렇게)\s*\S*(어려|어렵|복잡|헷갈|힘들|많|빡세|난해)",
    re.IGNORECASE,
)
