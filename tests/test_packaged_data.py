"""The real small data sets of the smoke profile (harness.data.packaged): disjoint splits, answers
that need the image, hints beside the champ problems."""
from __future__ import annotations

import collections
import hashlib

import pytest

from harness.data import load_training_set
from harness.data.packaged import (
    EASY_VQA_COLORS,
    EASY_VQA_SHAPES,
    SPLITS,
    _champ_problems,
    _easy_vqa_rows,
    champ,
    champ_split,
    crop_to_shape,
    easy_vqa,
    easy_vqa_items,
)


def test_easy_vqa_splits_share_no_image():
    """validation is carved from train by image id; test images are other files: compared by content."""
    ids = {s: {r[2] for r in _easy_vqa_rows(s)} for s in SPLITS}
    assert not ids["train"] & ids["validation"]
    digest = {s: {hashlib.sha256(open(r[4], "rb").read()).hexdigest() for r in _easy_vqa_rows(s)} for s in SPLITS}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not digest[a] & digest[b], (a, b)


@pytest.mark.parametrize("split", SPLITS)
def test_easy_vqa_question_text_never_determines_the_answer(split):
    """Every question text occurs with several answers, and the best text-only guess (the most
    frequent answer of that text) is right at most ~chance: the image is needed."""
    by_text = collections.defaultdict(collections.Counter)
    for q, a, _, kind, _ in _easy_vqa_rows(split):
        assert a not in q and a in (EASY_VQA_COLORS if kind == "color" else EASY_VQA_SHAPES)
        by_text[q][a] += 1
    assert all(len(c) > 1 for c in by_text.values())
    best_text_only = sum(c.most_common(1)[0][1] for c in by_text.values()) / sum(sum(c.values()) for c in by_text.values())
    assert best_text_only < 0.3, best_text_only  # colours 1/8, shapes 1/3 by chance


def test_easy_vqa_samples_are_seeded_and_carry_the_image():
    a, b = easy_vqa(12, "train", seed=3), easy_vqa(12, "train", seed=3)
    assert [s.id for s in a] == [s.id for s in b] and len({s.id for s in a}) == 12
    for s in easy_vqa(12, "train", seed=3, form="free"):
        assert s.images[0].size == (64, 64) and s.answer in EASY_VQA_COLORS + EASY_VQA_SHAPES
        assert s.prompt.endswith("\\boxed{}.") and s.response == f"\\boxed{{{s.answer}}}" and not s.choices
    for s in easy_vqa(12, "train", seed=3, form="choice"):  # the letter names the true word, in a fixed order
        assert s.choices[s.answer] == s.meta["word"] and s.response == f"\\boxed{{{s.answer}}}"
        assert list(s.choices.values()) == list(EASY_VQA_SHAPES if s.meta["kind"] == "shape" else EASY_VQA_COLORS)
    assert {bool(s.choices) for s in easy_vqa(40, "train", seed=3, form="mixed")} == {True, False}
    assert [x.id for x in load_training_set("easy-vqa", "validation", limit=5)] == [x.id for x in easy_vqa(5, "validation")]


def test_every_easy_vqa_image_is_cropped_to_its_shape_unless_asked_otherwise():
    from PIL import Image

    rows = {r[2]: r[4] for r in _easy_vqa_rows("train")}
    for cropped, whole in zip(easy_vqa_items(6, "train", seed=5), easy_vqa_items(6, "train", seed=5, crop=False)):
        with Image.open(rows[cropped["image_id"]]) as im:
            assert cropped["image"].tobytes() == crop_to_shape(im).tobytes()
            assert whole["image"].tobytes() == im.convert("RGB").tobytes() != cropped["image"].tobytes()


def test_easy_vqa_color_is_the_free_form_colour_questions():
    rows = load_training_set("easy-vqa-color", "train", limit=40)
    assert len(rows) == 40 and all(s.meta["kind"] == "color" and not s.choices for s in rows)
    assert all(s.answer in EASY_VQA_COLORS and s.response == f"\\boxed{{{s.answer}}}" for s in rows)
    assert len({s.answer for s in rows}) >= 6                     # the colours vary
    held_out = {s.meta["image_id"] for s in load_training_set("easy-vqa-color", "validation", limit=40)}
    assert not held_out & {s.meta["image_id"] for s in rows}


def test_champ_split_is_disjoint_and_covers_every_problem():
    problems = _champ_problems()
    assert len(problems) == 270
    parts = {s: {p["id"] for p in problems if champ_split(p["id"]) == s} for s in SPLITS}
    assert sum(len(v) for v in parts.values()) == 270 and not (parts["train"] & parts["test"])
    assert [len(parts[s]) for s in SPLITS] == [186, 30, 54]
    rows = champ(None, "test")
    assert {r.id.removeprefix("champ-") for r in rows} == parts["test"]
    with_hint = [r for r in rows if r.hint]
    assert len(with_hint) >= len(rows) // 2 and all(r.hint not in r.prompt for r in with_hint)
    assert all(r.response.endswith(f"$\\boxed{{{r.answer}}}$.") for r in rows)


def test_unknown_split_is_one_line():
    with pytest.raises(ValueError, match="easy-vqa: unknown split 'dev'"):
        easy_vqa(2, "dev")
