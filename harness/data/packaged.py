"""Real small data sets shipped inside registry packages, for the offline smoke profile.

* ``easy-vqa`` 1.0 (MIT, ``pip install easy-vqa``): 64x64 PNG images of one coloured shape
  (circle / rectangle / triangle; 8 colours) with questions about its colour, its shape, or
  yes/no. 38,575 train questions over 4,000 images and 9,673 test questions over 1,000 others.
  :func:`easy_vqa` keeps the *colour* and *shape* questions whose text does not name the answer
  (``"what color is the shape?"``, ``"what is the blue shape?"``), so the answer needs the image:
  ``tests/test_packaged_data.py`` checks that no question text determines its answer.
* ``champ-dataset`` 1.0.0 (MIT, ``pip install champ-dataset``): 270 competition math problems
  (combinatorics, number theory, inequalities, polynomials, sequences) with step-wise
  solutions, final answers and answer-free hints. :func:`champ` gives them as text math with
  the hints in ``Sample.hint`` (as PTD-PO's privileged hints).

Splits are disjoint by construction: easy-vqa's own train/test image sets, with ``validation``
carved out of train *images* (every 10th image id, so no image is in two splits); champ's 270
problems are split 70 / 10 / 20 % (train / validation / test) by a fixed hash of the problem id
(:func:`champ_split`), the split every user of champ in this project shares.
"""
from __future__ import annotations

import functools
import hashlib
import random
from collections import Counter
from typing import Any

import numpy as np
from PIL import Image

from harness.data.prompts import format_prompt
from harness.types import Sample

EASY_VQA_COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
EASY_VQA_SHAPES = ("circle", "rectangle", "triangle")
SPLITS = ("train", "validation", "test")


def _package(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as e:  # a dependency of the project; a clear line if it is missing
        raise ImportError(f"the smoke data needs the `{name.replace('_', '-')}` package "
                          f"(pip install {name.replace('_', '-')})") from e


def _check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r}; known: {', '.join(SPLITS)}")


def _easy_vqa_kind(question: str, answer: str) -> str | None:
    """``color`` / ``shape`` when the answer needs the image (the question does not name it)."""
    if answer in question:
        return None
    if answer in EASY_VQA_COLORS:
        return "color"
    if answer in EASY_VQA_SHAPES:
        return "shape"
    return None  # yes / no questions: half of them are answered by a constant


EASY_VQA_CROP_SIZE = 64
"""Side of a cropped easy-vqa image (the package's own image size)."""


def crop_to_shape(image: Image.Image, threshold: int = 30, size: int = EASY_VQA_CROP_SIZE) -> Image.Image:
    """The easy-vqa ``image`` cropped to its shape's bounding box and resized to ``size`` x ``size``.

    easy-vqa draws one small shape (often 4-15 % of the picture) at a random place on a random
    pastel background; at a tiny processor's few image tokens its colour is a faint part of one
    patch, and a tiny model learns neither colour nor shape from it (docs/smoke_profile.md). The
    background is the most common border colour; the shape is every pixel more than ``threshold``
    (sum of absolute RGB differences) away from it. The crop keeps what answers the questions: the
    colour fills the picture, and a rectangle fills its box where a circle or triangle leaves
    background in the corners. An image with no such pixel is returned resized, uncropped.
    The smoke profile's default (``easy_vqa_items(crop=True)``): every easy-vqa image a smoke model
    trains or is evaluated on is cropped, since only then can it learn colour naming."""
    a = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    background = np.array(Counter(map(tuple, border.tolist())).most_common(1)[0][0], dtype=np.int16)
    ys, xs = np.nonzero(np.abs(a - background).sum(-1) > threshold)
    box = (0, 0, a.shape[1], a.shape[0]) if len(ys) == 0 else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return image.convert("RGB").crop(tuple(int(v) for v in box)).resize((size, size), Image.BILINEAR)


@functools.lru_cache(maxsize=4)
def _easy_vqa_rows(split: str) -> tuple[tuple[str, str, int, str, str], ...]:
    """(question, answer, image id, kind, image path) of ``split``, in the package's order."""
    ev = _package("easy_vqa")
    if split == "test":
        questions, answers, image_ids = ev.get_test_questions()
        paths = ev.get_test_image_paths()
    else:
        questions, answers, image_ids = ev.get_train_questions()
        paths = ev.get_train_image_paths()
        held = split == "validation"
        keep = [(image_id % 10 == 0) == held for image_id in image_ids]
        questions = [q for q, k in zip(questions, keep) if k]
        answers = [a for a, k in zip(answers, keep) if k]
        image_ids = [i for i, k in zip(image_ids, keep) if k]
    rows = []
    for q, a, i in zip(questions, answers, image_ids):
        kind = _easy_vqa_kind(q, a)
        if kind is not None:
            rows.append((q, a, int(i), kind, str(paths[i])))
    return tuple(rows)


def easy_vqa_items(n: int, split: str = "train", seed: int = 0,
                   kinds: tuple[str, ...] = ("color", "shape"), crop: bool = True) -> list[dict[str, Any]]:
    """``n`` easy-vqa questions of ``kinds`` from ``split`` as plain items (a seeded sample without
    replacement; all of them when ``n`` exceeds what there is): ``question`` (capitalised),
    ``answer`` (the word), ``kind``, ``image`` (PIL RGB; cropped to the shape by
    :func:`crop_to_shape` when ``crop``), ``image_id``. Benchmarks' smoke rows and the
    training set below are both built from these."""
    _check_split(split, "easy-vqa")
    rows = [r for r in _easy_vqa_rows(split) if r[3] in kinds]
    rng = random.Random(f"easy-vqa/{split}/{seed}")
    picked = rng.sample(rows, min(n, len(rows)))
    out = []
    for q, a, image_id, kind, path in picked:
        with Image.open(path) as im:
            image = crop_to_shape(im) if crop else im.convert("RGB")
        out.append({"question": q[0].upper() + q[1:], "answer": a, "kind": kind, "image": image,
                    "image_id": image_id, "split": split})
    return out


def easy_vqa_options(kind: str) -> dict[str, str]:
    """Multiple-choice options for an easy-vqa training question, in a fixed order: the three shapes
    (A circle, B rectangle, C triangle) or the eight colours (A red ... H yellow). A fixed order
    makes the letter a function of the image alone (a classification a tiny model can learn), not
    a pointer into shuffled option text; a constant letter scores the majority class's share."""
    words = EASY_VQA_SHAPES if kind == "shape" else EASY_VQA_COLORS
    return {chr(ord("A") + i): w for i, w in enumerate(words)}


def option_letter(choices: dict[str, str], answer: str) -> str:
    """The letter whose option is ``answer``."""
    return next(letter for letter, word in choices.items() if word == answer)


EASY_VQA_FORMS = ("free", "choice", "mixed")


def easy_vqa(n: int, split: str = "train", seed: int = 0, kinds: tuple[str, ...] = ("color", "shape"),
             instruction: str | None = "boxed", form: str = "mixed", crop: bool = True) -> list[Sample]:
    """``n`` easy-vqa questions as training samples (see :func:`easy_vqa_items`).

    ``form``: ``free`` (``answer`` is the word, ``"teal"``), ``choice`` (options from
    :func:`easy_vqa_options` written into the prompt, ``answer`` the letter) or ``mixed`` (each
    item one or the other by a fixed hash of its id: the smoke benchmarks ask both ways).
    ``crop``: images cropped to the shape (:func:`crop_to_shape`).
    ``response`` is a one-line reference answer in the instruction's format."""
    if form not in EASY_VQA_FORMS:
        raise ValueError(f"easy-vqa: unknown form {form!r}; known: {', '.join(EASY_VQA_FORMS)}")
    out = []
    for item in easy_vqa_items(n, split, seed, kinds, crop=crop):
        a, kind, image_id = item["answer"], item["kind"], item["image_id"]
        sid = f"easy-vqa-{split}-{image_id}-{kind}"
        choice = form == "choice" or (form == "mixed" and hashlib.sha256(sid.encode()).digest()[0] % 2 == 1)
        choices = easy_vqa_options(kind) if choice else None
        gold = option_letter(choices, a) if choices else a
        out.append(Sample(id=sid, prompt=format_prompt(item["question"], instruction, choices),
                          answer=gold, images=[item["image"]], response=f"\\boxed{{{gold}}}", choices=choices,
                          answer_type="multiple_choice" if choices else "free_form",
                          meta={"kind": kind, "question": item["question"], "image_id": image_id, "split": split,
                                "word": a, "source": "easy-vqa 1.0"}))
    return out


def tool_trace_box(width: int, height: int) -> list[int]:
    """The box a scripted tool-use trace crops: the central region without an eighth of each side
    (``[8, 8, 56, 56]`` on a 64 x 64 easy-vqa image): always a valid ``crop_image`` box."""
    return [width // 8, height // 8, width - width // 8, height - height // 8]


def easy_vqa_tool_traces(n: int, split: str = "train", seed: int = 0, kinds: tuple[str, ...] = ("color", "shape"),
                         instruction: str | None = "boxed", form: str = "mixed") -> list[Sample]:
    """``n`` scripted tool-use SFT traces on easy-vqa questions (the smoke profile's stand-in for a
    tool-using warm start such as Pixel-Reasoner's SFT): the system prompt names the tools
    (``harness.tools.tool_system_prompt``); the response is one ``crop_image`` call on the central
    region (:func:`tool_trace_box`), the tool's real observation (the cropped image, computed by
    ``harness.tools.execute_tool_call`` exactly as a multi-turn rollout would), then the answer in
    ``\\boxed{}``. ``meta["response_segments"]`` holds the three parts (text / Observation / text):
    ``harness.scoring.encode_pairs`` trains on the call and the answer and masks the observation.
    Questions, forms and splits as :func:`easy_vqa`."""
    import json

    from harness.rollout.multiturn import observation_text
    from harness.tools import CALL_CLOSE, CALL_OPEN, ToolCall, execute_tool_call, tool_system_prompt

    system = tool_system_prompt(["crop_image"])
    out = []
    for s in easy_vqa(n, split, seed, kinds, instruction=instruction, form=form):
        w, h = s.images[0].size
        args = {"bbox_2d": tool_trace_box(w, h)}   # target_image defaults to 1 (the original image)
        call = f'{CALL_OPEN}{json.dumps({"name": "crop_image", "arguments": args})}{CALL_CLOSE}'
        obs = execute_tool_call(ToolCall("crop_image", args), s.images)
        if obs.error:  # never for easy-vqa's 64 x 64 images; a trace must show a successful call
            raise ValueError(f"{s.id}: scripted crop failed: {obs.text}")
        answer = f"\\boxed{{{s.answer}}}"
        s.system = system
        s.id = s.id.replace("easy-vqa-", "easy-vqa-tool-", 1)
        s.response = call + observation_text(obs) + answer
        s.meta = {**s.meta, "response_segments": [call, obs, answer], "tool_call": args,
                  "source": "easy-vqa 1.0 (scripted tool-use trace)"}
        out.append(s)
    return out


def champ_split(problem_id: str) -> str:
    """The split of a champ problem: 70 / 10 / 20 % by the first byte of sha256(id)."""
    b = hashlib.sha256(problem_id.encode()).digest()[0]
    return "train" if b < 179 else ("validation" if b < 205 else "test")


@functools.lru_cache(maxsize=1)
def _champ_problems() -> tuple[dict[str, Any], ...]:
    ds = _package("champ_dataset").load("v0")
    out = []
    for pid, p in sorted(ds.problems.items()):
        hints = [ds.hints[h].text for h in p.ch_list if h in ds.hints]
        out.append({"id": pid, "question": p.text, "answer": p.answer, "category": p.category,
                    "solution": " ".join(step.text for step in p.solution.steps), "hints": hints})
    return tuple(out)


def champ(n: int | None = None, split: str = "train", instruction: str | None = "step_by_step") -> list[Sample]:
    """The first ``n`` (all when None) champ problems of ``split`` in id order. ``hint`` joins the
    problem's hints (answer-free by the data set's design); ``response`` is the reference
    solution ending in the boxed answer."""
    _check_split(split, "champ")
    rows = [p for p in _champ_problems() if champ_split(p["id"]) == split]
    out = []
    for p in rows[:n]:
        hint = "\n".join(f"{i + 1}. {h}" for i, h in enumerate(p["hints"])) or None
        out.append(Sample(id=f"champ-{p['id']}", prompt=format_prompt(p["question"], instruction), answer=p["answer"],
                          response=f"{p['solution']} The final answer is $\\boxed{{{p['answer']}}}$.", hint=hint,
                          meta={"category": p["category"], "question": p["question"], "split": split,
                                "source": "champ-dataset 1.0.0"}))
    return out
