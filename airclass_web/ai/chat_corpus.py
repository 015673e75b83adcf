"""The labelled classroom-chat corpus shipped in airclass_web/ai/corpus/ (issue 21).

Three splits and an outside set, tab-separated, '#' lines are the header: lang, question
(0/1), confusion (0/1), sentiment (-1/0/1), text. The test split and the outside set (lines
written by an annotator who never saw the analyser or the corpus) are frozen: their SHA-256
are below.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "corpus"
SPLITS = ("train", "dev", "test", "outside")
#: The frozen test split (written before the model; never trained or tuned on).
TEST_SHA256 = "e0b6d401bf53df3c10a2cacc45eba93f0fbeec85ec88728cf2d241acb8211984"
#: The frozen outside set (written apart from the project; never trained or tuned on).
OUTSIDE_SHA256 = "bd51b871e5d839e6426bd526d0c9a16edf55865aec489e5e2be6db49660458c8"
#: The frozen sets and their SHA-256.
FROZEN = {"test": TEST_SHA256, "outside": OUTSIDE_SHA256}


@dataclass(frozen=True)
class Example:
    """One labelled chat message."""

    lang: str
    question: bool
    confusion: bool
    sentiment: int
    text: str


def path(split: str) -> Path:
    """The TSV file of one split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return CORPUS_DIR / f"chat_{split}.tsv"


def sha256(split: str) -> str:
    """Hex SHA-256 of a split's file as shipped."""
    return hashlib.sha256(path(split).read_bytes()).hexdigest()


def load(split: str) -> list[Example]:
    """All examples of one split, in file order."""
    return load_file(path(split))


def load_file(file: Path) -> list[Example]:
    """All examples of a labelled file in the corpus format, in file order."""
    rows = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 5 or parts[0] not in ("ko", "en"):
            raise ValueError(f"{file.name}:{n}: bad row {line!r}")
        lang, q, c, s, text = parts
        rows.append(Example(lang, q == "1", c == "1", int(s), text))
    return rows


@dataclass(frozen=True)
class Figures:
    """Precision, recall and F1 of one binary label, with the 2x2 table."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def figures(pred: list[bool], gold: list[bool]) -> Figures:
    """Compare predictions with gold labels."""
    pairs = list(zip(pred, gold, strict=True))
    return Figures(
        tp=sum(p and g for p, g in pairs),
        fp=sum(p and not g for p, g in pairs),
        fn=sum(g and not p for p, g in pairs),
        tn=sum(not p and not g for p, g in pairs),
    )
