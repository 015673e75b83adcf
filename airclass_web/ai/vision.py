"""Local slide analysis: Tesseract OCR (Korean + English), title, keywords, and a
perceptual hash to tell when the slide changed.

Tesseract comes from Debian (`tesseract-ocr`, `tesseract-ocr-kor`, installed by
scripts/install-system.sh); pytesseract runs it as a subprocess. Everything here is
blocking: callers run it in a worker thread.
"""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
from PIL import Image, ImageOps

from . import nlp

OCR_LANGS = "kor+eng"
#: Hamming distance (of 64 bits) above which two screenshots are different slides.
CHANGE_BITS = 10
#: Largest image side given to Tesseract (a 1080p slide is scaled down: faster, same text).
OCR_MAX_SIDE = 1600


class OCRUnavailable(RuntimeError):
    """Tesseract or its Korean data is not installed."""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT32 = _dct_matrix(32)


def phash(image: Image.Image) -> int:
    """64-bit perceptual hash: low 8x8 frequencies of a 32x32 grey DCT above their median."""
    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=float)
    freq = _DCT32 @ grey @ _DCT32.T
    low = freq[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def phash_bytes(data: bytes) -> int:
    return phash(Image.open(io.BytesIO(data)))


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def changed(previous: int | None, current: int) -> bool:
    return previous is None or distance(previous, current) > CHANGE_BITS


def _check_tesseract() -> None:
    import pytesseract

    if shutil.which("tesseract") is None:
        raise OCRUnavailable("tesseract is not installed (scripts/install-system.sh)")
    if "kor" not in pytesseract.get_languages(config=""):
        raise OCRUnavailable("tesseract Korean data missing (tesseract-ocr-kor)")


_SYL = "[\uac00-\ud7a3]"
SPLIT_SYLLABLES = re.compile(rf"(?<!{_SYL})({_SYL}(?: {_SYL}){{2,}})(?!{_SYL})")


def _clean(line: str) -> str:
    """One space between words; Korean read as single spaced syllables ("에 너 지") joined."""
    line = re.sub(r"\s+", " ", line).strip(" |_—-")
    return SPLIT_SYLLABLES.sub(lambda m: m.group(1).replace(" ", ""), line)


def ocr_slide(data: bytes) -> dict:
    """{text, title, keywords, lines} of a slide image (JPEG/PNG bytes)."""
    import pytesseract

    _check_tesseract()
    image = Image.open(io.BytesIO(data))
    image = ImageOps.exif_transpose(image).convert("L")
    scale = OCR_MAX_SIDE / max(image.size)
    if scale < 1:
        image = image.resize(
            (int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS
        )
    if np.asarray(image).mean() < 110:  # light text on a dark slide: Tesseract wants dark
        image = ImageOps.invert(image)
    # --psm 4 (one column of text of varying sizes): the automatic layout (--psm 3) drops
    # large Korean headings (measured: 2 of 7 rendered slide titles found, 7 of 7 with 4).
    table = pytesseract.image_to_data(
        image, lang=OCR_LANGS, config="--psm 4", output_type=pytesseract.Output.DICT
    )
    rows: dict[tuple[int, int, int], list[int]] = {}
    for i, word in enumerate(table["text"]):
        if word.strip() and float(table["conf"][i]) >= 45:
            key = (table["block_num"][i], table["par_num"][i], table["line_num"][i])
            rows.setdefault(key, []).append(i)
    lines = []
    for idx in rows.values():
        text = _clean(" ".join(table["text"][i] for i in idx))
        if not text:
            continue
        height = float(np.median([table["height"][i] for i in idx]))
        top = min(table["top"][i] for i in idx)
        lines.append({"text": text, "height": height, "top": top})
    lines.sort(key=lambda ln: ln["top"])
    text = "\n".join(ln["text"] for ln in lines)
    title = ""
    if lines:
        # The title: the tallest line in the upper half (first line on a tie).
        upper = [ln for ln in lines if ln["top"] <= image.height / 2] or lines
        best = max(ln["height"] for ln in upper)
        title = next(ln["text"] for ln in upper if ln["height"] >= best * 0.9)
    return {
        "text": text,
        "title": title,
        "keywords": nlp.keywords(text, 10),
        "lines": len(lines),
    }
