"""Helpers the benchmark modules share: option lists, inline options, image placeholders."""
from __future__ import annotations

import ast
import json
import re
from typing import Any

from harness.errors import DataError

LETTERS = "ABCDEFGHIJKLMNOP"


def letters_for(n: int) -> str:
    return LETTERS[:n]


def parse_list_field(value: Any, where: str, idx: int, field: str) -> list[str]:
    """A list column, also when stored as its string repr (``"['3', '5']"``, MMMU-Pro)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return []
        try:
            out = json.loads(s)
        except json.JSONDecodeError:
            try:
                out = ast.literal_eval(s)   # literals only; never executes code
            except (ValueError, SyntaxError) as e:
                raise DataError(where, idx, field, f"not a list: {s[:80]!r}") from e
        if isinstance(out, (list, tuple)):
            return [str(v) for v in out]
    raise DataError(where, idx, field, f"not a list: {str(value)[:80]!r}")


def choices_from_list(options: list[str]) -> dict[str, str]:
    return {LETTERS[i]: str(o).strip() for i, o in enumerate(options)}


_MARK = re.compile(r"(?:(?<=^)|(?<=[\s(\[,;]))\(?([A-J])\s*[).:：]\s*")


def parse_inline_options(text: str) -> dict[str, str]:
    """Options written into a question's text, in order A, B, C, ...:
    ``"Options: A: 1, B: 2"``, ``"Choices:\\nA:2\\nB:4"``, ``"(A) 1 (B) 2"``, ``"A. 1; B. 2"``.
    Returns {} unless at least two consecutive letters from A are found."""
    marks = []
    expected = 0
    for m in _MARK.finditer(text):
        if m.group(1) == LETTERS[expected]:
            marks.append(m)
            expected += 1
    if len(marks) < 2:
        return {}
    out = {}
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out[m.group(1)] = text[m.end():end].strip().rstrip(",;").strip()
    return out


def split_question_options(text: str, header: str = r"(?:Options|Choices)\s*:") -> tuple[str, dict[str, str]]:
    """``"stem\\nOptions: A: x, B: y"`` -> (``"stem"``, {A: x, B: y}); no header -> (text, {})."""
    m = re.search(header, text)
    if not m:
        return text, {}
    opts = parse_inline_options(text[m.end():])
    return (text[:m.start()].strip(), opts) if opts else (text, {})


def strip_image_tokens(text: str) -> str:
    """Drop ``<image>`` / ``<image1>`` placeholders (the images are placed before the prompt)."""
    return re.sub(r"<image\s*\d*>", "", text).strip()
