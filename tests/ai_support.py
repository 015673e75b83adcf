"""AI test helpers: slide images with Korean and English text (PIL + a Nanum font from
Debian's fonts-nanum, installed by scripts/install-system.sh)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")


def render_slide(title: str, lines: list[str], fmt: str = "JPEG") -> bytes:
    """A 1280x720 slide: a big title and bullet lines, black on white."""
    from PIL import Image, ImageDraw, ImageFont

    if not FONT.exists():
        pytest.skip("fonts-nanum not installed (scripts/install-system.sh)")
    image = Image.new("RGB", (1280, 720), "white")
    draw = ImageDraw.Draw(image)
    draw.text((80, 60), title, font=ImageFont.truetype(str(FONT), 64), fill="black")
    body = ImageFont.truetype(str(FONT), 40)
    for i, line in enumerate(lines):
        draw.text((100, 220 + i * 80), line, font=body, fill="black")
    out = io.BytesIO()
    image.save(out, fmt, quality=90)
    return out.getvalue()
