"""Deterministic synthetic tasks with known answers, for the smoke profile and tests.

Three families, all returned as :class:`~harness.types.Sample` lists:

* :func:`text_math` — text problems in the style of orz-57k / Mixture-of-Thoughts math
  (arithmetic, linear equations, fractions, percentages, word problems). Every sample has a
  gold ``answer`` that math-verify parses and a short reference ``response`` ending in
  ``\\boxed{answer}`` (usable as an SFT target).
* :func:`visual` — tiny rendered images (56-112 px): counting shapes, reading a bar chart,
  the hypotenuse of a labelled right triangle, the other acute angle of a right triangle.
  Some are multiple choice (``choices`` + letter answer), the rest free-form.
* :func:`learnable` — a trivially learnable task for smoke RL tests (see its docstring).

Determinism: sample ``i`` of ``generator(n, seed)`` depends only on ``(seed, i)`` (its RNG is
seeded with a string of the two), so the same call gives byte-identical images and equal
text on every run and machine, and ``generator(n, seed)`` is a prefix of
``generator(m, seed)`` for ``m > n``. Text is drawn with Pillow's built-in bitmap font
(no FreeType), so the pixels do not depend on the installed fonts. Each sample's ``meta``
holds the generation parameters so tests can recompute the answer independently.
"""
from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Callable

from PIL import Image, ImageDraw, ImageFont

from harness.data.prompts import format_prompt
from harness.types import Sample

__all__ = ["text_math", "visual", "learnable", "TEXT_MATH_KINDS", "VISUAL_KINDS",
           "fraction_latex", "BAR_COLOR", "BACKGROUND"]

BACKGROUND = (255, 255, 255)
BAR_COLOR = (70, 110, 180)
SHAPE_COLORS = [(220, 50, 50), (40, 150, 60), (50, 90, 210), (230, 150, 20), (150, 60, 180)]
_FONT = ImageFont.load_default_imagefont()  # bitmap font embedded in Pillow: identical pixels everywhere
_NAMES = ["Alice", "Ben", "Chen", "Dana", "Eli", "Fatima", "Gus", "Hana"]
_ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies"]


def _rng(family: str, seed: int, i: int) -> random.Random:
    return random.Random(f"vlmrepro/{family}/{seed}/{i}")


def fraction_latex(x: Fraction) -> str:
    """LaTeX of a rational: ``\\frac{5}{6}``, ``-\\frac{1}{2}`` or an integer."""
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    return f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}"


def _fraction_plain(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def _signed(b: int) -> str:
    return f"+ {b}" if b >= 0 else f"- {-b}"


# ---------------------------------------------------------------- text math ----------------
# Each generator returns (question, gold answer, reasoning text before the boxed answer,
# LaTeX of the answer for the box, answer_type, hint, params).

def _arithmetic(rng: random.Random):
    a, b, c = rng.randint(2, 30), rng.randint(2, 30), rng.randint(2, 9)
    form = rng.choice(["a+b*c", "a*b-c", "(a+b)*c"])
    if form == "a+b*c":
        ans, q = a + b * c, f"{a} + {b} \\times {c}"
        steps = f"Multiplication first: {b} \\times {c} = {b * c}. Then {a} + {b * c} = {ans}."
    elif form == "a*b-c":
        ans, q = a * b - c, f"{a} \\times {b} - {c}"
        steps = f"Multiplication first: {a} \\times {b} = {a * b}. Then {a * b} - {c} = {ans}."
    else:
        ans, q = (a + b) * c, f"({a} + {b}) \\times {c}"
        steps = f"Parentheses first: {a} + {b} = {a + b}. Then {a + b} \\times {c} = {ans}."
    return (f"Compute ${q}$.", str(ans), steps, str(ans), "integer",
            "Apply the order of operations.", {"form": form, "a": a, "b": b, "c": c})


def _linear(rng: random.Random):
    a = rng.choice([k for k in range(-9, 10) if k not in (-1, 0, 1)])
    x, b = rng.randint(-12, 12), rng.randint(-20, 20)
    c = a * x + b
    steps = (f"Subtract {b} from both sides: ${a}x = {c - b}$. "
             f"Divide both sides by {a}: $x = {x}$.")
    return (f"Solve for $x$: ${a}x {_signed(b)} = {c}$.", str(x), steps, str(x), "integer",
            "Isolate the term with x first.", {"a": a, "b": b, "c": c})


def _fraction(rng: random.Random):
    p, r = Fraction(rng.randint(1, 9), rng.randint(2, 9)), Fraction(rng.randint(1, 9), rng.randint(2, 9))
    op = rng.choice(["+", "-", "*"])
    ans = p + r if op == "+" else p - r if op == "-" else p * r
    sym = {"+": "+", "-": "-", "*": "\\times"}[op]
    q = f"{fraction_latex(p)} {sym} {fraction_latex(r)}"
    steps = f"${q} = {fraction_latex(ans)}$ in lowest terms."
    return (f"Compute ${q}$. Give the answer as a fraction in lowest terms.", _fraction_plain(ans),
            steps, fraction_latex(ans), "numeric", "Use a common denominator.",
            {"p": [p.numerator, p.denominator], "r": [r.numerator, r.denominator], "op": op})


def _percentage(rng: random.Random):
    pct = rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 80])
    base = 20 * rng.randint(1, 20)
    part = Fraction(pct * base, 100)
    if rng.random() < 0.5:
        ans = part
        q = f"What is {pct}% of {base}?"
        steps = f"{pct}% of {base} is $\\frac{{{pct}}}{{100}} \\times {base} = {fraction_latex(ans)}$."
        form = "of"
    else:
        ans = base - part
        q = f"A jacket costs ${base} and is sold at a {pct}% discount. What is the sale price in dollars?"
        steps = f"The discount is {fraction_latex(part)}, so the price is {base} - {fraction_latex(part)} = {fraction_latex(ans)}."
        form = "discount"
    return (q, _fraction_plain(ans), steps, fraction_latex(ans), "numeric",
            "A percentage is a fraction of 100.", {"pct": pct, "base": base, "form": form})


def _word(rng: random.Random):
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    form = rng.choice(["bags", "speed", "share"])
    if form == "bags":
        a, b, c = rng.randint(2, 20), rng.randint(2, 6), rng.randint(2, 9)
        d = rng.randint(0, a + b * c)
        ans = a + b * c - d
        q = (f"{name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag, "
             f"then gives away {d} {item}. How many {item} does {name} have now?")
        steps = f"{name} gets {b} \\times {c} = {b * c} more, so {a} + {b * c} - {d} = {ans}."
        params = {"form": form, "a": a, "b": b, "c": c, "d": d}
    elif form == "speed":
        v, t = rng.randint(3, 12) * 10, rng.randint(2, 6)
        ans = v * t
        q = f"A train travels at {v} km per hour for {t} hours. How many kilometres does it travel?"
        steps = f"Distance is speed times time: {v} \\times {t} = {ans}."
        params = {"form": form, "v": v, "t": t}
    else:
        k, m = rng.randint(2, 9), rng.randint(2, 12)
        ans = k * m
        q = (f"{name} shares {ans} {item} equally among {k} friends. "
             f"How many {item} does each friend get?")
        ans, steps = m, f"Each friend gets {k * m} \\div {k} = {m}."
        params = {"form": form, "k": k, "total": k * m}
    return q, str(ans), steps, str(ans), "integer", "Write the quantities as one expression.", params


TEXT_MATH_KINDS: dict[str, Callable] = {
    "arithmetic": _arithmetic, "linear": _linear, "fraction": _fraction,
    "percentage": _percentage, "word": _word,
}


def _checked_kinds(kinds: list[str] | None, known: dict, generator: str) -> list[str]:
    """``kinds`` (default: every kind of ``known``), each checked against ``known``."""
    kinds = list(kinds or known)
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ValueError(f"unknown {generator} kinds {unknown}; known: {sorted(known)}")
    return kinds


def text_math(n: int, seed: int = 0, kinds: list[str] | None = None,
              instruction: str | None = "step_by_step") -> list[Sample]:
    """``n`` text math problems; kinds cycle in order (``kinds`` defaults to all of them).

    Each sample has ``answer`` (plain: ``"5"``, ``"-7/12"``), ``response`` (a reference solution
    ending in ``\\boxed{...}``), an answer-free ``hint`` and ``meta = {kind, params, question}``.
    """
    kinds = _checked_kinds(kinds, TEXT_MATH_KINDS, "text_math")
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        q, ans, steps, boxed, atype, hint, params = TEXT_MATH_KINDS[kind](_rng("text_math", seed, i))
        out.append(Sample(
            id=f"text_math-{seed}-{i}", prompt=format_prompt(q, instruction), answer=ans,
            response=f"{steps} The final answer is $\\boxed{{{boxed}}}$.", answer_type=atype,
            hint=hint, meta={"kind": kind, "params": params, "question": q, "source": "synthetic"}))
    return out


# ---------------------------------------------------------------- visual --------------------

def _mc(rng: random.Random, correct: str, distractors: list[str]) -> tuple[dict[str, str], str]:
    """Four options (correct + 3 distinct distractors) in random order -> (choices, letter)."""
    opts = [correct] + [d for d in dict.fromkeys(distractors) if d != correct][:3]
    rng.shuffle(opts)
    letters = "ABCD"[:len(opts)]
    return dict(zip(letters, opts)), letters[opts.index(correct)]


def _count(rng: random.Random):
    size = rng.choice([84, 112])
    cells = 4
    cell = size // cells
    kinds = ["circle", "square", "triangle"]
    target = rng.choice(kinds)
    n_shapes = rng.randint(3, 8)
    slots = rng.sample(range(cells * cells), n_shapes)
    shapes = [target] + [rng.choice(kinds) for _ in range(n_shapes - 1)]  # at least one target
    rng.shuffle(shapes)
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    placed = []
    for slot, kind in zip(slots, shapes):
        s = rng.randint(cell - 10, cell - 4)  # >= 11 px, and >= 2 px from the cell border
        x0 = (slot % cells) * cell + rng.randint(2, cell - s - 2)
        y0 = (slot // cells) * cell + rng.randint(2, cell - s - 2)
        color = rng.choice(SHAPE_COLORS)
        box = [x0, y0, x0 + s - 1, y0 + s - 1]
        if kind == "circle":
            draw.ellipse(box, fill=color)
        elif kind == "square":
            draw.rectangle(box, fill=color)
        else:
            draw.polygon([(x0, y0 + s - 1), (x0 + s - 1, y0 + s - 1), (x0 + (s - 1) / 2, y0)], fill=color)
        placed.append({"kind": kind, "box": box, "color": list(color)})
    count = sum(p["kind"] == target for p in placed)
    q = f"How many {target}s are there in the image?"
    meta = {"shapes": placed, "target": target, "size": size, "answer_value": count}
    if rng.random() < 0.5:
        choices, letter = _mc(rng, str(count), [str(count + d) for d in rng.sample([-2, -1, 1, 2, 3], 4) if count + d >= 0])
        return img, q, letter, choices, "Count the shapes row by row.", meta
    return img, q, str(count), None, "Count the shapes row by row.", meta


def _bar_chart(rng: random.Random):
    size, k = 112, rng.randint(3, 5)
    labels = "ABCDE"[:k]
    heights = rng.sample(range(1, 10), k)  # distinct, so "the tallest" is unique
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    left, bottom, unit = 16, size - 14, 9  # y = 10 lies 8 px below the top
    for v in range(0, 11):
        y = bottom - v * unit
        draw.line([(left, y), (size - 3, y)], fill=(225, 225, 225) if v else (0, 0, 0))
        if v % 2 == 0:
            draw.text((1 if v < 10 else 2, y - 5), str(v), font=_FONT, fill=(0, 0, 0))
    slot = (size - 3 - left) // k
    bar_w = slot - 6
    bars = []
    for j, (lab, h) in enumerate(zip(labels, heights)):
        x0 = left + j * slot + 3
        draw.rectangle([x0, bottom - h * unit, x0 + bar_w - 1, bottom - 1], fill=BAR_COLOR)
        draw.text((x0 + bar_w // 2 - 3, bottom + 2), lab, font=_FONT, fill=(0, 0, 0))
        bars.append({"label": lab, "value": h, "x0": x0, "width": bar_w})
    meta = {"bars": bars, "bottom": bottom, "unit": unit, "size": size}
    form = rng.choice(["value", "tallest", "difference"])
    meta["form"] = form
    if form == "value":
        b = rng.choice(bars)
        q = f"The bar chart shows the values of bars {', '.join(labels)}. What is the value of bar {b['label']}?"
        return img, q, str(b["value"]), None, "Read the bar's top against the axis.", meta
    if form == "tallest":
        q = "Which bar in the chart has the largest value?"
        best = max(bars, key=lambda b: b["value"])["label"]
        choices = {lab: f"bar {lab}" for lab in labels}
        return img, q, best, choices, "Compare the tops of the bars.", meta
    diff = max(heights) - min(heights)
    q = "What is the difference between the largest and the smallest value in the bar chart?"
    return img, q, str(diff), None, "Find the tallest and the shortest bar first.", meta


_TRIPLES = [(3, 4), (6, 8), (5, 12), (8, 15), (9, 12), (7, 24), (12, 16), (20, 21)]


def _triangle_canvas(rng: random.Random, a: float, b: float):
    """Right angle at the bottom-left; horizontal leg ``a``, vertical leg ``b`` (scaled to fit)."""
    size = rng.choice([84, 112])
    scale = (size - 34) / max(a, b)
    x0, y0 = 20, size - 16
    p_right, p_h, p_v = (x0, y0), (x0 + round(a * scale), y0), (x0, y0 - round(b * scale))
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.polygon([p_right, p_h, p_v], outline=(0, 0, 0))
    draw.rectangle([x0, y0 - 5, x0 + 5, y0], outline=(0, 0, 0))  # right-angle marker
    return img, draw, size, (p_right, p_h, p_v)


def _triangle_hypotenuse(rng: random.Random):
    if rng.random() < 0.6:
        a, b = rng.choice(_TRIPLES)
    else:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5:
        a, b = b, a
    img, draw, size, (pr, ph, pv) = _triangle_canvas(rng, a, b)
    draw.text(((pr[0] + ph[0]) // 2 - 4, pr[1] + 3), str(a), font=_FONT, fill=(0, 0, 0))
    draw.text((pr[0] - 4 - 6 * len(str(b)), (pr[1] + pv[1]) // 2 - 5), str(b), font=_FONT, fill=(0, 0, 0))
    draw.text(((ph[0] + pv[0]) // 2 + 3, (ph[1] + pv[1]) // 2 - 9), "?", font=_FONT, fill=(0, 0, 0))
    c2 = a * a + b * b
    r = math.isqrt(c2)
    ans = str(r) if r * r == c2 else f"\\sqrt{{{c2}}}"
    q = ("The image shows a right triangle with the lengths of its two legs labelled. "
         "What is the length of the hypotenuse (marked ?)")
    meta = {"legs": [a, b], "size": size}
    if r * r == c2 and rng.random() < 0.5:
        choices, letter = _mc(rng, ans, [str(a + b), str(r + 1), str(r - 1), str(abs(a - b) + 1), str(r + 2)])
        return img, q, letter, choices, "Use the Pythagorean theorem.", meta
    return img, q, ans, None, "Use the Pythagorean theorem.", meta


def _triangle_angle(rng: random.Random):
    angle = rng.randint(15, 75)
    a = 6.0
    b = a * math.tan(math.radians(angle))  # the marked angle sits at the horizontal leg's far end
    if b > 3 * a or b < a / 3:
        b = min(max(b, a / 3), 3 * a)  # keep the drawing legible; the label carries the value
    img, draw, size, (pr, ph, pv) = _triangle_canvas(rng, a, b)
    drawn = math.degrees(math.atan2(ph[1] - pv[1], ph[0] - pr[0]))  # angle at ph as drawn
    draw.arc([ph[0] - 9, ph[1] - 9, ph[0] + 9, ph[1] + 9], 180, 180 + drawn, fill=(0, 0, 0))
    draw.text((ph[0] - 14, ph[1] + 3), f"{angle}\u00b0", font=_FONT, fill=(0, 0, 0))
    ans = 90 - angle
    q = ("The image shows a right triangle with one acute angle marked. "
         "What is the measure of the other acute angle, in degrees?")
    meta = {"marked_angle": angle, "size": size}
    if rng.random() < 0.5:
        choices, letter = _mc(rng, str(ans), [str(angle), str(180 - angle), str(ans + 10), str(ans - 10)])
        return img, q, letter, choices, "The angles of a triangle add up to 180 degrees.", meta
    return img, q, str(ans), None, "The angles of a triangle add up to 180 degrees.", meta


VISUAL_KINDS: dict[str, Callable] = {
    "count": _count, "bar_chart": _bar_chart,
    "triangle_hypotenuse": _triangle_hypotenuse, "triangle_angle": _triangle_angle,
}


def visual(n: int, seed: int = 0, kinds: list[str] | None = None,
           instruction: str | None = "boxed") -> list[Sample]:
    """``n`` small visual reasoning problems; kinds cycle in order (default: all four).

    Multiple-choice samples have ``choices`` and a letter ``answer`` (``meta["answer_value"]``
    or the choice text holds the value); free-form ones a plain answer (``"5"``, ``"\\sqrt{41}"``).
    """
    kinds = _checked_kinds(kinds, VISUAL_KINDS, "visual")
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        img, q, ans, choices, hint, meta = VISUAL_KINDS[kind](_rng("visual", seed, i))
        if choices:
            atype = "multiple_choice"
        else:
            atype = "integer" if ans.lstrip("-").isdigit() else "free_form"
        out.append(Sample(
            id=f"visual-{seed}-{i}", prompt=format_prompt(q, instruction, choices), answer=ans,
            images=[img], choices=choices, answer_type=atype, hint=hint,
            meta={"kind": kind, "question": q, "source": "synthetic", **meta}))
    return out


# ---------------------------------------------------------------- learnable -----------------

_FILLERS = ["", "Quick check.", "Please respond.", "Here is a simple task.", "Ready?", "Test:",
            "Hello.", "One more time.", "Listen carefully.", "Final round."]


def learnable(n: int, seed: int = 0, target: str = "3") -> list[Sample]:
    """A task a tiny random model learns in a few dozen RL steps: "Answer with the digit 3."

    Every prompt asks for the same single digit ``target`` (with a varying filler sentence so
    prompts differ) and the gold answer is that digit, so the reward rises as soon as the
    policy moves probability mass onto the target token: no reasoning, no copying. The prompt
    deliberately asks for the bare digit (no ``\\boxed{}``): a random model never emits a
    well-formed box, so the reward must accept a bare final number (e.g. ``math_reward`` with
    a last-number fallback in ``extract_answer``, or exact match of the stripped response).
    Expected curve: mean reward starts near the chance rate of the target token and climbs
    towards 1 (tested by the trainer's smoke test, not here).
    """
    if not (len(target) == 1 and target.isdigit()):
        raise ValueError(f"target must be one digit, got {target!r}")
    out = []
    for i in range(n):
        filler = _rng("learnable", seed, i).choice(_FILLERS)
        q = f"{filler} Answer with the digit {target}.".strip()
        out.append(Sample(id=f"learnable-{seed}-{i}", prompt=q, answer=target, answer_type="integer",
                          response=target, meta={"kind": "constant_digit", "question": q,
                                                 "source": "synthetic"}))
    return out
