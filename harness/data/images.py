"""Decoding images from the many forms data sets store them in, with errors that say where."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from harness.errors import DataError


def decode_image(value: Any, source: str, row: int | str | None, field: str,
                 base_dir: str | Path | None = None) -> Image.Image:
    """Return an RGB ``PIL.Image`` from a PIL image, raw bytes, ``{"bytes"|"path": ...}`` or a path.

    Raises :class:`DataError` naming ``source``/``row``/``field`` when the value does not decode.
    """
    try:
        if isinstance(value, Image.Image):
            img = value
        elif isinstance(value, (bytes, bytearray)):
            img = Image.open(io.BytesIO(value))
        elif isinstance(value, dict) and value.get("bytes") is not None:
            img = Image.open(io.BytesIO(value["bytes"]))
        elif isinstance(value, dict) and value.get("path"):
            img = Image.open(_resolve(value["path"], base_dir))
        elif isinstance(value, (str, Path)) and str(value):
            img = Image.open(_resolve(value, base_dir))
        else:
            raise DataError(source, row, field, f"no image data (got {type(value).__name__})")
        img.load()
        return img.convert("RGB")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(source, row, field, f"image does not decode ({type(e).__name__}: {e})") from e


def _resolve(path: str | Path, base_dir: str | Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p
