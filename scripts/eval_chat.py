"""Evaluate the chat analyser (issue 21) on the labelled corpus.

Prints precision, recall and F1 of question and confusion per language, the 2x2 tables,
sentiment accuracy and its 3x3 table, and the time per message, on the frozen test split,
the frozen outside set and the dev split (or --split; --file adds any labelled file in the
corpus format). The frozen files must have their SHA-256.

    .venv/bin/python scripts/eval_chat.py
    .venv/bin/python scripts/eval_chat.py --split dev --errors   # list dev mistakes
    .venv/bin/python scripts/eval_chat.py --file their_labels.tsv  # a set of your own
    GEMINI_API_KEY=... .venv/bin/python scripts/eval_chat.py --provider gemini

--provider sends the same split to Gemini or an OpenAI-compatible API through
airclass_web/ai/providers.py, with the prompt and schema the node uses, and prints the
same figures side by side; without the key variable it says so and skips.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from airclass_web.ai import chat_corpus, nlp
from airclass_web.ai.chat_corpus import FROZEN, Example, figures

SENTIMENT = {"negative": -1, "neutral": 0, "positive": 1}
KEY_VARS = {"gemini": "GEMINI_API_KEY", "openai": "OPENAI_API_KEY"}
BASE_VARS = {"gemini": "GEMINI_BASE_URL", "openai": "OPENAI_BASE_URL"}
BATCH = 40  # as airclass_web.ai.service.CHAT_BATCH


def local_predictions(examples: list[Example]) -> tuple[list[dict], float]:
    """nlp.analyse_message on every example, and the mean milliseconds per message."""
    nlp.analyse_message("warm up: load the model and VADER")
    nlp._scores.cache_clear()
    start = time.perf_counter()
    out = [nlp.analyse_message(e.text) for e in examples]
    return out, (time.perf_counter() - start) * 1000 / max(len(examples), 1)


def report(name: str, examples: list[Example], preds: list[dict]) -> dict[str, tuple]:
    """Print the figures of one set of predictions; return {label_lang: (P, R)}."""
    print(f"\n== {name}: {len(examples)} messages")
    print(f"{'label':10} {'lang':4} {'n':>4} {'P':>6} {'R':>6} {'F1':>6}   TP  FP  FN  TN")
    out = {}
    for label in ("question", "confusion"):
        for lang in ("ko", "en", "all"):
            idx = [i for i, e in enumerate(examples) if lang in ("all", e.lang)]
            pred = [bool(preds[i][label]) for i in idx]
            f = figures(pred, [getattr(examples[i], label) for i in idx])
            out[f"{label}_{lang}"] = (f.precision, f.recall)
            print(
                f"{label:10} {lang:4} {len(idx):4} {f.precision:6.3f} {f.recall:6.3f} {f.f1:6.3f}"
                f" {f.tp:4}{f.fp:4}{f.fn:4}{f.tn:4}"
            )
    table = {(g, p): 0 for g in (-1, 0, 1) for p in (-1, 0, 1)}
    for e, r in zip(examples, preds, strict=True):
        table[(e.sentiment, SENTIMENT[r["sentiment"]])] += 1
    right = sum(table[(k, k)] for k in (-1, 0, 1))
    print(f"sentiment accuracy {right / max(len(examples), 1):.3f}; rows gold, columns predicted")
    print("        neg  neu  pos")
    for g, label in ((-1, "neg"), (0, "neu"), (1, "pos")):
        print(f"  {label}  " + " ".join(f"{table[(g, p)]:4}" for p in (-1, 0, 1)))
    return out


def errors(examples: list[Example], preds: list[dict]) -> None:
    """Every message with a wrong question or confusion label."""
    for e, r in zip(examples, preds, strict=True):
        wrong = [k for k in ("question", "confusion") if bool(r[k]) != getattr(e, k)]
        if wrong:
            print(f"  {e.lang} gold q={int(e.question)} c={int(e.confusion)} {wrong}: {e.text}")


async def provider_predictions(name: str, model: str, examples: list[Example]) -> list[dict]:
    """The same messages analysed by a provider, with the node's prompt and schema."""
    import aiohttp

    from airclass_web.ai.providers import DEFAULT_GEMINI_BASE, Request, make_provider
    from airclass_web.ai.service import CHAT_SCHEMA

    base = os.environ.get(BASE_VARS[name]) or (
        DEFAULT_GEMINI_BASE if name == "gemini" else "https://api.openai.com"
    )
    out: list[dict] = []
    async with aiohttp.ClientSession() as http:
        provider = make_provider(name, http, os.environ[KEY_VARS[name]], model, base)
        for i in range(0, len(examples), BATCH):
            batch = [e.text for e in examples[i : i + BATCH]]
            numbered = "\n".join(f"{k}: {t}" for k, t in enumerate(batch))
            answer = await provider.generate(
                Request(
                    system="You analyse students' chat messages in a live class (Korean or "
                    "English). For each numbered message: lang (ko/en), question (asks for an "
                    "answer), confusion (does not follow or understand), sentiment "
                    "(positive/neutral/negative), up to 5 topic keywords.",
                    prompt=f"Messages:\n{numbered}\nReturn results with i = the message number.",
                    schema=CHAT_SCHEMA,
                )
            )
            by_i = {r.get("i"): r for r in answer.get("results", []) if isinstance(r, dict)}
            for k in range(len(batch)):
                r = by_i.get(k, {})
                sentiment = r.get("sentiment") if r.get("sentiment") in SENTIMENT else "neutral"
                out.append(
                    {
                        "question": bool(r.get("question")),
                        "confusion": bool(r.get("confusion")),
                        "sentiment": sentiment,
                    }
                )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=chat_corpus.SPLITS, action="append")
    ap.add_argument(
        "--errors", action="store_true", help="list the mistakes (not on the frozen sets)"
    )
    ap.add_argument(
        "--file",
        type=Path,
        action="append",
        default=[],
        help="also a labelled file in the corpus format (a set written apart from the corpus)",
    )
    ap.add_argument("--provider", choices=sorted(KEY_VARS))
    ap.add_argument("--model", default="", help="provider model (default: the node's default)")
    args = ap.parse_args()
    splits = args.split or ([] if args.file else ["test", "outside", "dev"])
    for split in set(splits) & set(FROZEN):
        if chat_corpus.sha256(split) != FROZEN[split]:
            print(f"the {split} set is not the frozen one (SHA-256 differs)", file=sys.stderr)
            return 2
    if args.provider and not os.environ.get(KEY_VARS[args.provider]):
        print(f"--provider {args.provider}: skipped, {KEY_VARS[args.provider]} is not set")
        args.provider = None
    sets = [(split, chat_corpus.load(split)) for split in splits]
    sets += [(str(file), chat_corpus.load_file(file)) for file in args.file]
    for split, examples in sets:
        preds, ms = local_predictions(examples)
        report(f"{split}, local analyser (nlp.py)", examples, preds)
        print(f"time: {ms:.3f} ms per message (analyse_message, one core, warm)")
        if args.errors and split not in FROZEN:
            errors(examples, preds)
        if args.provider:
            remote = asyncio.run(provider_predictions(args.provider, args.model, examples))
            report(f"{split}, provider {args.provider}", examples, remote)
    return 0


if __name__ == "__main__":
    sys.exit(main())
