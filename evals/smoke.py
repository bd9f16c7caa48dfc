"""Where the benchmarks' smoke rows (``--source smoke``) get their items: real, held-out data,
written into each benchmark's own schema by its ``smoke_rows``.

* **Visual benchmarks**: questions about easy-vqa 1.0's **test** split
  (:func:`harness.data.packaged.easy_vqa_items`, ``split="test"`` always; smoke *training* uses
  train / validation, so smoke evaluation is held out by construction). The colour / shape
  questions need the image (their text does not name the answer); multiple-choice benchmarks ask
  them with balanced options (:func:`options`), free-form ones ask for the word.
* **Composite questions** (We-Math's multi-step problems, LogicVista's several-letter answers,
  HallusionBench's figure pairs, the counting benchmarks' grids) use an image's colour *and*
  shape: :func:`attributes` reads both from the data set's own colour / shape questions about
  that test image (791 of the 1,000 test images have both).
* **Counting** (CLEVR counting, TallyQA, VLMs-are-Blind): easy-vqa has one shape per image, so
  the image is a 2 x 2 grid of easy-vqa test images (:func:`grid`; blank cells white) with a
  known count.
* **Text benchmarks**: champ-dataset's **test** split (54 problems,
  :func:`harness.data.packaged.champ_split`); ``n`` above 54 is **capped** at 54 (no problem
  is repeated, so a bootstrap interval is not narrowed by copies).

Everything is deterministic in ``(benchmark, n, seed)``; another seed draws other items.
Composed images keep each easy-vqa image whole at a multiple of 64 pixels (the tests find the
test-split images in them pixel for pixel).
"""
from __future__ import annotations

import functools
import hashlib
import random
import re
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from harness.data.packaged import (EASY_VQA_COLORS, EASY_VQA_SHAPES, _champ_problems, _easy_vqa_rows, _package,
                                   champ_split, crop_to_shape, easy_vqa_items, option_letter)

TILE = 64                                   # easy-vqa images are 64 x 64
SIDES = {"circle": 0, "triangle": 3, "rectangle": 4}   # straight sides of each easy-vqa shape
# never-correct distractors that pad an option list to a benchmark's fixed option count
EXTRA_OPTIONS = {"shape": ("pentagon", "hexagon", "star", "heart", "cross", "arrow", "octagon"),
                 "color": ("purple", "orange", "pink")}
LETTERS = "ABCDEFGHIJ"
CHAMP_TEST = 54                             # champ test problems: the cap for text benchmarks

__all__ = ["TILE", "SIDES", "CHAMP_TEST", "EASY_VQA_COLORS", "key_int", "items", "options",
           "option_letter", "attributes", "full_ids", "test_image", "grid", "grid_name", "grid_of", "caption",
           "count_scene", "champ_test", "question_texts"]


def key_int(*parts: Any) -> int:
    """A stable integer from ``parts`` (sha256), for seeding and deterministic choices."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


LEARNABLE_KINDS = ("color",)
"""The easy-vqa question kinds single-image smoke items ask: colour only. A tiny smoke model learns
to name a cropped shape's colour in a few dozen supervised steps but stays at chance on shapes
(docs/smoke_profile.md), so shape items would only dilute a column's measurable effect; composite
questions (:func:`attributes`) still use both."""


def items(bench: str, n: int, seed: int, kinds: tuple[str, ...] = LEARNABLE_KINDS) -> list[dict[str, Any]]:
    """``n`` easy-vqa **test** items of ``kinds`` for benchmark ``bench`` (see ``easy_vqa_items``);
    each benchmark and seed draws its own sample."""
    return easy_vqa_items(n, "test", key_int("evals-smoke", bench, seed), kinds)


def options(answer: str, kind: str, key: str, k: int | None = None) -> dict[str, str]:
    """Options for an easy-vqa answer as a benchmark asks it: the three shapes, or the answer and
    three other colours drawn by ``key``; padded with never-correct distractors to exactly ``k``
    options when ``k`` is given; always shuffled by ``key``, so each letter is the gold about
    equally often and a constant letter scores chance."""
    rng = random.Random(f"evals-smoke-options/{key}/{k}")
    if kind == "shape":
        words = list(EASY_VQA_SHAPES)
    else:
        n_colors = min(k or 4, len(EASY_VQA_COLORS))
        words = [answer] + rng.sample([c for c in EASY_VQA_COLORS if c != answer], n_colors - 1)
    if k is not None and len(words) > k:
        words = [answer] + [w for w in words if w != answer][:k - 1]
    elif k is not None:
        words += list(EXTRA_OPTIONS[kind][:k - len(words)])
    rng.shuffle(words)
    return {LETTERS[i]: w for i, w in enumerate(words)}


@functools.lru_cache(maxsize=1)
def _test_paths() -> dict[int, str]:
    return {int(i): str(p) for i, p in _package("easy_vqa").get_test_image_paths().items()}


@functools.lru_cache(maxsize=1)
def attributes() -> dict[int, dict[str, str]]:
    """easy-vqa test image id -> ``{"color", "shape"}`` as far as the split's own colour / shape
    questions (not yes/no) state them: the answer, and a colour or shape the question names."""
    questions, answers, ids = _package("easy_vqa").get_test_questions()
    out: dict[int, dict[str, str]] = {}
    for q, a, i in zip(questions, answers, ids):
        if a not in EASY_VQA_COLORS and a not in EASY_VQA_SHAPES:
            continue
        found = out.setdefault(int(i), {})
        for w in [a] + re.findall(r"[a-z]+", q):
            if w in EASY_VQA_COLORS:
                found["color"] = w
            elif w in EASY_VQA_SHAPES:
                found["shape"] = w
    return out


@functools.lru_cache(maxsize=1)
def full_ids() -> tuple[int, ...]:
    """Test image ids whose colour and shape are both known (:func:`attributes`)."""
    return tuple(sorted(i for i, a in attributes().items() if len(a) == 2))


@functools.lru_cache(maxsize=1024)
def _load(image_id: int) -> Image.Image:
    with Image.open(_test_paths()[image_id]) as im:
        return crop_to_shape(im)


def test_image(image_id: int) -> Image.Image:
    """easy-vqa test image ``image_id``, cropped to its shape as every smoke image is
    (``crop_to_shape``; RGB, 64 x 64; a copy of a cached decode)."""
    return _load(int(image_id)).copy()


def grid(ids: list[int | None], cols: int = 2) -> Image.Image:
    """easy-vqa test images tiled ``cols`` per row (None: a blank white cell)."""
    rows = (len(ids) + cols - 1) // cols
    img = Image.new("RGB", (cols * TILE, rows * TILE), "white")
    for k, i in enumerate(ids):
        if i is not None:
            img.paste(test_image(i), ((k % cols) * TILE, (k // cols) * TILE))
    return img


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def caption(img: Image.Image, lines: list[str]) -> Image.Image:
    """``img`` with ``lines`` of text drawn below it (a question shown *in* the image, as in
    MathVerse's Vision Only version and MMMU-Pro's vision setting)."""
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = max([img.width] + [int(probe.textlength(line, font=font)) + 8 for line in lines])
    out = Image.new("RGB", (width, img.height + 14 * len(lines) + 6), "white")
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((4, img.height + 3 + 14 * k), line, fill="black", font=font)
    return out


@functools.lru_cache(maxsize=1)
def question_texts() -> dict[str, list[tuple[str, int, str]]]:
    """easy-vqa test colour / shape question text -> its (answer, image id, kind), in split order."""
    out: dict[str, list[tuple[str, int, str]]] = {}
    for q, a, i, kind, _ in _easy_vqa_rows("test"):
        out.setdefault(q, []).append((a, i, kind))
    return out


def champ_test(n: int, seed: int) -> list[dict[str, Any]]:
    """``min(n, 54)`` champ **test** problems (a seeded sample; capped, never repeated)."""
    rows = [p for p in _champ_problems() if champ_split(p["id"]) == "test"]
    return random.Random(f"evals-smoke-champ/{seed}").sample(rows, min(n, len(rows)))


def count_scene(key: str, target: str | None = None) -> tuple[list[int | None], int, str | None]:
    """A 2 x 2 grid of easy-vqa test images with a known count: ``target`` None fills 1-4 cells
    at random (count = filled cells); ``"shape"`` / ``"color"`` fills all four and counts the
    cells of one (random) shape / colour. Returns (cell ids, None for blank; count; the counted
    word or None)."""
    rng = random.Random(f"evals-smoke-count/{key}")
    ids, attrs = full_ids(), attributes()
    if target is None:
        k = rng.randint(1, 4)
        cells: list[int | None] = rng.sample(ids, k) + [None] * (4 - k)
        rng.shuffle(cells)
        return cells, k, None
    cells = rng.sample(ids, 4)
    word = attrs[rng.choice(cells) if rng.random() < 0.75 else rng.choice(ids)][target]
    return cells, sum(attrs[i][target] == word for i in cells), word


def grid_name(cells: list[int | None]) -> str:
    """A file name that records a grid's cells (``"12-x-40-7"``), read back by :func:`grid_of`."""
    return "-".join("x" if i is None else str(i) for i in cells)


def grid_of(name: str) -> Image.Image:
    """The grid image a :func:`grid_name` names (the stem of a path)."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("_", 1)[-1]
    return grid([None if c == "x" else int(c) for c in stem.split("-")])
