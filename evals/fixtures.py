"""Synthetic images for the fixture ("smoke") rows every benchmark can generate offline.

The images are small, deterministic PIL drawings (shapes on a plain background); only the rows'
*schema* has to match the real data sets, not their content.
"""
from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

_COLORS = ["red", "green", "blue", "orange", "purple", "black", "brown", "teal"]


def make_image(seed: int, width: int = 64, height: int = 48, shapes: int | None = None) -> Image.Image:
    """A deterministic RGB image with ``shapes`` coloured rectangles / ellipses (random count if None)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    for _ in range(shapes if shapes is not None else rng.randint(1, 4)):
        x0, y0 = rng.randint(0, width - 12), rng.randint(0, height - 12)
        x1, y1 = x0 + rng.randint(6, 12), y0 + rng.randint(6, 12)
        fill = rng.choice(_COLORS)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_feature(img: Image.Image) -> dict:
    """The ``{"bytes", "path"}`` form a ``datasets.Image`` column holds before decoding."""
    return {"bytes": png_bytes(img), "path": None}
