"""Train the chat classifier (issue 21) and export it to airclass_web/ai/chat_model.npz.

Reproducible: the same corpus and scikit-learn version give the same file. Trains on the
train split only; the regularisation C is chosen by 5-fold cross-validation on the train
split, each binary head's threshold on the dev split (see `dev_threshold`);
the test split is never read here. Needs the "train" extra (scikit-learn):

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python scripts/train_chat_model.py

The weights go to a small .npz (no pickle) that airclass_web/ai/chat_model.py scores with
numpy; before writing, this script checks that scorer against scikit-learn on every train
and dev line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score
from sklearn.model_selection import StratifiedKFold

from airclass_web.ai import chat_corpus, chat_model

C_GRID = (1.0, 3.0, 10.0)
THRESHOLDS = tuple(round(0.30 + 0.05 * k, 2) for k in range(9))  # 0.30 .. 0.70


def fit_head(x, y, c: float) -> LogisticRegression:
    """One logistic regression (balanced classes, deterministic solver)."""
    return LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(x, y)


def choose(texts: list[str], y: np.ndarray) -> tuple[float, float]:
    """The (C, threshold) with the best cross-validated F1; ties: smaller C, then 0.5."""
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(texts, y))
    best = (-1.0, 0.0, 0.0)
    for c in C_GRID:
        oof = np.zeros(len(texts))
        for tr, te in folds:
            vec = vectorizer()
            x = vec.fit_transform([texts[i] for i in tr])
            model = fit_head(x, y[tr], c)
            oof[te] = model.predict_proba(vec.transform([texts[i] for i in te]))[:, 1]
        for t in sorted(THRESHOLDS, key=lambda t: abs(t - 0.5)):
            f1 = f1_score(y, oof >= t)
            if f1 > best[0] + 1e-9:
                best = (f1, c, t)
    return best[1], best[2]


def dev_threshold(p: np.ndarray, y: np.ndarray, langs: list[str]) -> float:
    """The threshold whose lowest of precision and recall, in Korean and in English, on
    the dev split is highest (the goal asks each of the four to be high); ties: nearer 0.5.
    Chosen on dev, not by cross-validation on train: train's batches hold near-variants of
    one another, so out-of-fold scores are too sure of the positive class (on lines written
    apart from the corpus that cost precision: 0.79-0.83 on confusion)."""
    masks = [np.array([lang == code for lang in langs]) for code in ("ko", "en")]
    best = (-1.0, 0.5)
    for t in sorted(THRESHOLDS, key=lambda t: abs(t - 0.5)):
        worst = min(
            score(y[m], p[m] >= t, zero_division=0)
            for m in masks
            for score in (precision_score, recall_score)
        )
        if worst > best[0] + 1e-9:
            best = (worst, t)
    return best[1]


def vectorizer() -> TfidfVectorizer:
    """TF-IDF over chat_model.features (sublinear tf, l2 norm, features seen twice+)."""
    return TfidfVectorizer(analyzer=chat_model.features, sublinear_tf=True, min_df=2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=chat_model.MODEL_PATH)
    args = ap.parse_args()
    train, dev = chat_corpus.load("train"), chat_corpus.load("dev")
    texts = [e.text for e in train]
    vec = vectorizer()
    x_train = vec.fit_transform([e.text for e in train])
    x_dev = vec.transform([e.text for e in dev])
    coefs, intercepts, thresholds = [], [], []
    for head in chat_model.BINARY_HEADS:
        y_train = np.array([getattr(e, head) for e in train], dtype=int)
        y_dev = np.array([getattr(e, head) for e in dev], dtype=int)
        c, cv_threshold = choose(texts, y_train)
        model = fit_head(x_train, y_train, c)
        coefs.append(model.coef_[0])
        intercepts.append(model.intercept_[0])
        p_dev = model.predict_proba(x_dev)[:, 1]
        t = dev_threshold(p_dev, y_dev, [e.lang for e in dev])
        thresholds.append(t)
        dev_f1 = f1_score(y_dev, p_dev >= t)
        print(
            f"{head}: C={c} threshold={t} (cross-validated on train: {cv_threshold}) "
            f"dev F1 (model alone)={dev_f1:.3f}"
        )
    y_sent = np.array([e.sentiment for e in train])
    sent = LogisticRegression(C=2.0, class_weight="balanced", max_iter=5000).fit(x_train, y_sent)
    assert tuple(sent.classes_) == chat_model.SENTIMENT_CLASSES
    coefs.extend(sent.coef_)
    intercepts.extend(sent.intercept_)

    vocab = vec.get_feature_names_out()
    assert not any("\n" in f for f in vocab)
    arrays = {
        "vocab": np.array("\n".join(vocab)),
        "idf": vec.idf_.astype(np.float32),
        "coef": np.vstack(coefs).astype(np.float32),
        "intercept": np.array(intercepts, dtype=np.float32),
        "thresholds": np.array(thresholds, dtype=np.float32),
        "sklearn_version": np.array(sklearn.__version__),
    }
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / "model.npz"
        np.savez_compressed(candidate, **arrays)
        check(chat_model.ChatModel(candidate), vec, coefs, intercepts, train + dev)
        args.out.write_bytes(candidate.read_bytes())
    print(f"{args.out}: {len(vocab)} features, {args.out.stat().st_size // 1024} KiB")
    return 0


def check(scorer: chat_model.ChatModel, vec, coefs, intercepts, examples) -> None:
    """The numpy scorer must match scikit-learn's probabilities (float32 weights)."""
    x = vec.transform([e.text for e in examples])
    z = x @ np.vstack(coefs).T + np.array(intercepts)
    want_q = 1 / (1 + np.exp(-z[:, 0]))
    want_c = 1 / (1 + np.exp(-z[:, 1]))
    worst = 0.0
    for i, e in enumerate(examples):
        s = scorer.scores(e.text)
        worst = max(worst, abs(s.question - want_q[i]), abs(s.confusion - want_c[i]))
    print(f"numpy scorer vs scikit-learn: max |difference| {worst:.2e}")
    if worst > 1e-4:
        raise SystemExit("the numpy scorer does not reproduce scikit-learn")


if __name__ == "__main__":
    sys.exit(main())
