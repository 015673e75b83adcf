"""The trained chat classifier (issue 21): features and a numpy scorer.

Features are character n-grams inside words (2-4, like scikit-learn's char_wb), word uni-
and bigrams, a few markers of how a message ends (its last characters carry Korean
question endings such as -냐, -나요, -는지, -임; a final "?" or "..."), and the
hand-written cues of chat_cues (confusion phrases with negation and tense, question
shapes), weighted so that they generalise past the training words. The weights are
trained by scripts/train_chat_model.py with scikit-learn (TF-IDF, logistic regression per
head) and exported to chat_model.npz, so scoring here needs numpy only: no scikit-learn,
no pickle, nothing downloaded. The training script checks that this scorer gives the
same probabilities as scikit-learn.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import chat_cues

MODEL_PATH = Path(__file__).with_name("chat_model.npz")
#: The heads, in the order of the weight matrix rows.
BINARY_HEADS = ("question", "confusion")
SENTIMENT_CLASSES = (-1, 0, 1)
#: Each hand-written cue counts this many times (they generalise beyond the training words;
#: 3 was best of 1/3/5 in 5-fold cross-validation on the train split).
CUE_WEIGHT = 3

_REPEAT = re.compile(r"(.)\1{2,}")
_DIGITS = re.compile(r"\d+")
_WORD = re.compile(r"[^\W\d_]+|0|[?？]|[!]|\.\.+|[…]")
_TRAIL = re.compile(r"[\s.!~ㅋㅎㅠㅜ^;:)(*\-]+$")
_EMOJI_CATEGORIES = ("So", "Sk")


def normalise(text: str) -> str:
    """NFKC, case-folded, runs of 3+ same characters cut to 2, numbers to '0'."""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _REPEAT.sub(r"\1\1", t)
    return _DIGITS.sub("0", " ".join(t.split()))


def features(text: str) -> list[str]:
    """The feature strings of one message (repeats count)."""
    t = normalise(text)
    out: list[str] = []
    for token in t.split():
        padded = f" {token} "
        for n in (2, 3, 4):
            out.extend("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
    words = _WORD.findall(t)
    out.extend("w:" + w for w in words)
    out.extend(f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False))
    if words:
        out.append("first:" + words[0])
    stripped = _TRAIL.sub("", t)
    tail = "".join(ch for ch in stripped if unicodedata.category(ch) not in _EMOJI_CATEGORIES)
    tail = tail.rstrip()
    if tail:
        last = tail.split()[-1]
        for n in (1, 2, 3):
            if len(last) >= n:
                out.append(f"end{n}:" + last[-n:])
        out.append("endword:" + last)
    if t.endswith(("?", "？")) or re.search(r"[?？][\s\W]*$", t):
        out.append("mark:ends?")
    if "?" in t or "？" in t:
        out.append("mark:has?")
    if re.search(r"(\.\.+|…)\s*[?？]?\s*$", t):
        out.append("mark:trails")
    if any(unicodedata.category(ch) in _EMOJI_CATEGORIES for ch in t):
        out.append("mark:emoji")
    if len(words) <= 2:
        out.append("mark:short")
    return out + cue_features(text) * CUE_WEIGHT


def cue_features(text: str) -> list[str]:
    """The hand-written cues (chat_cues) as features, so the model weighs them."""
    out = []
    cues = chat_cues.confusion_cues(text)
    if cues.present:
        out.append("cue:conf")
        if cues.present >= 2:
            out.append("cue:conf2")
        if cues.resolved and not cues.still:
            out.append("cue:conf+resolved")
    if cues.negated:
        out.append("cue:conf-negated" if cues.present else "cue:conf-negated-only")
    if cues.resolved:
        out.append("cue:resolved")
    if cues.still:
        out.append("cue:still")
    ending = chat_cues.korean_question_ending(text)
    if ending:
        out += ["cue:ko-q-end", "cue:ko-q-end:" + ending]
    if chat_cues.KO_QUESTION_WORD.search(text):
        out.append("cue:ko-q-word")
    if chat_cues.EN_QUESTION_START.search(text):
        out.append("cue:en-q-start")
    if chat_cues.english_statement_shape(text):
        out.append("cue:en-statement")
    if chat_cues.RHETORICAL.search(text):
        out.append("cue:rhetorical")
    if chat_cues.EN_REQUEST.search(text) or chat_cues.KO_REQUEST.search(text):
        out.append("cue:request")
    return out


@dataclass(frozen=True)
class Scores:
    """Model probabilities for one message."""

    question: float
    confusion: float
    #: P(negative), P(neutral), P(positive)
    sentiment: tuple[float, float, float]


class ChatModel:
    """TF-IDF (sublinear tf, l2 norm) + logistic regression heads, scored with numpy."""

    def __init__(self, path: Path = MODEL_PATH):
        with np.load(path, allow_pickle=False) as z:
            vocab = str(z["vocab"]).split("\n")
            self.index = {f: i for i, f in enumerate(vocab)}
            self.idf = z["idf"].astype(np.float64)
            self.coef = z["coef"].astype(np.float64)  # rows: question, confusion, sentiment x3
            self.intercept = z["intercept"].astype(np.float64)
            self.thresholds = dict(zip(BINARY_HEADS, z["thresholds"].tolist(), strict=True))
            self.sklearn_version = str(z["sklearn_version"])

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Feature indices and their TF-IDF values (l2-normalised)."""
        counts: dict[int, int] = {}
        for f in features(text):
            i = self.index.get(f)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.intp), np.zeros(0)
        idx = np.fromiter(counts, dtype=np.intp, count=len(counts))
        tf = np.fromiter((1.0 + math.log(c) for c in counts.values()), float, len(counts))
        val = tf * self.idf[idx]
        return idx, val / np.linalg.norm(val)

    def scores(self, text: str) -> Scores:
        """Probabilities of each head for one message."""
        idx, val = self.vector(text)
        z = self.coef[:, idx] @ val + self.intercept
        q, c = 1.0 / (1.0 + np.exp(-z[:2]))
        s = np.exp(z[2:] - z[2:].max())
        s /= s.sum()
        return Scores(float(q), float(c), (float(s[0]), float(s[1]), float(s[2])))


@lru_cache(maxsize=1)
def load() -> ChatModel:
    """The model shipped with the package (read once)."""
    return ChatModel()
