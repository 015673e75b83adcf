"""Split the chat corpus's source batches 13+ into the train and dev splits (issue 21).

Batches 1-12 were split once, by hand, before this script: random.Random(21) shuffled each
batch, 15 % of it went to dev and the rest to train. Later batches are kept whole in
airclass_web/ai/corpus/batches/batchN.tsv and split here the same way (a fresh
random.Random(21) per batch, round(15 %) to dev), then appended after a marker line at the
end of chat_train.tsv and chat_dev.tsv. Everything from the marker on is rewritten, so the
script is idempotent and the lines above it (batches 1-12) are never touched. The test
split and the outside set are only read for their texts: a batch line with the same text as
one of theirs is left out (only the count is printed).

    .venv/bin/python scripts/split_chat_batches.py
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

from airclass_web.ai import chat_corpus

CORPUS = chat_corpus.CORPUS_DIR
MARKER = "# == batches 13+: appended by scripts/split_chat_batches.py from corpus/batches/ =="
DEV_SHARE = 0.15
SEED = 21
COUNT = re.compile(r"^(# AIRClass chat analysis: \w+ split \()\d+( lines\)\.)$")


def rows(path: Path) -> list[str]:
    """The labelled lines of one batch file (header skipped), checked."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        ok = len(parts) == 5 and parts[0] in ("ko", "en") and parts[1] in ("0", "1")
        if not (ok and parts[2] in ("0", "1") and parts[3] in ("-1", "0", "1")):
            raise SystemExit(f"{path.name}:{n}: bad row {line!r}")
        out.append(line)
    return out


def held_out_texts() -> set[str]:
    """Texts of the frozen test split and the outside set: a batch line with the same text
    is left out (compared by a script that prints only the count; never looked at)."""
    return {e.text for name in chat_corpus.FROZEN for e in chat_corpus.load(name)}


def split(lines: list[str]) -> tuple[list[str], list[str]]:
    """(train, dev) of one batch."""
    shuffled = list(lines)
    random.Random(SEED).shuffle(shuffled)
    k = round(DEV_SHARE * len(shuffled))
    return shuffled[k:], shuffled[:k]


def rewrite(path: Path, sections: list[tuple[str, list[str]]]) -> int:
    """Keep the file up to the marker, append the sections; fix the header's line count."""
    old = path.read_text(encoding="utf-8").splitlines()
    keep = old[: old.index(MARKER)] if MARKER in old else old
    new = list(keep) + [MARKER]
    for title, lines in sections:
        new += [f"# {title}: {len(lines)} lines", *lines]
    total = sum(1 for line in new if line.strip() and not line.startswith("#"))
    new = [COUNT.sub(rf"\g<1>{total}\g<2>", line) for line in new]
    path.write_text("\n".join(new) + "\n", encoding="utf-8")
    return total


def main() -> int:
    batches = sorted(
        (CORPUS / "batches").glob("batch*.tsv"), key=lambda p: int(re.sub(r"\D", "", p.stem))
    )
    train_sections, dev_sections = [], []
    held_out = held_out_texts()
    for path in batches:
        lines = rows(path)
        kept = [line for line in lines if line.split("\t", 4)[4] not in held_out]
        if len(kept) < len(lines):
            left_out = len(lines) - len(kept)
            print(f"{path.name}: {left_out} lines left out (same text as a held-out line)")
        train, dev = split(kept)
        train_sections.append((f"{path.stem} (batches/{path.name})", train))
        dev_sections.append((f"{path.stem} (batches/{path.name})", dev))
        print(f"{path.name}: {len(train)} train, {len(dev)} dev")
    n_train = rewrite(CORPUS / "chat_train.tsv", train_sections)
    n_dev = rewrite(CORPUS / "chat_dev.tsv", dev_sections)
    print(f"chat_train.tsv: {n_train} lines, chat_dev.tsv: {n_dev} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
