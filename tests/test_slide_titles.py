"""Slide OCR finds the title a teacher wrote: rendered Korean and English slides with known
titles (Tesseract from Debian; the title is the tallest line in the upper half)."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image, ImageOps

from airclass_web.ai import vision

from .ai_support import render_slide

pytestmark = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract not installed (install-system.sh)"
)

SLIDES = [
    (
        "이차방정식의 판별식",
        ["판별식 D = b² - 4ac", "D > 0 이면 서로 다른 두 실근", "D < 0 이면 허근"],
    ),
    ("광합성의 원리", ["빛에너지를 화학 에너지로", "엽록체에서 일어난다"]),
    ("Newton's Laws", ["Inertia", "F = ma", "Action and reaction"]),
    ("세포 분열", ["체세포 분열과 감수 분열의 차이를 설명할 수 있다", "염색체 수의 변화"]),
    ("The French Revolution", ["1789: the Estates-General meets", "The storming of the Bastille"]),
    ("함수의 극한", ["lim f(x) 의 뜻", "좌극한과 우극한"]),
    ("Python 반복문", ["for 문과 while 문", "range() 함수 사용하기"]),
]


def squeeze(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize(("title", "lines"), SLIDES, ids=[s[0] for s in SLIDES])
def test_title_is_the_largest_heading(title: str, lines: list[str]):
    result = vision.ocr_slide(render_slide(title, lines))
    assert squeeze(result["title"]) == squeeze(title), result
    assert result["lines"] >= 1 + len(lines) - 1  # the body is read too (one may be garbled)


def test_title_on_a_dark_slide():
    light = Image.open(io.BytesIO(render_slide("이차방정식의 판별식", ["D = b² - 4ac"])))
    out = io.BytesIO()
    ImageOps.invert(light.convert("RGB")).save(out, "PNG")
    assert squeeze(vision.ocr_slide(out.getvalue())["title"]) == "이차방정식의판별식"
