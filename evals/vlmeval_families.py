"""Answer families that score with VLMEvalKit's own rule functions (``evals.vlmeval_rules``).

What the rule reads (the *prediction*): the response's explicit final answer when it has one
(``\\boxed{}``, ``<answer>``, an "answer is" / "Answer:" marker, a trailing ``(B)``, a short bare
reply: ``evals.scoring.final_answer``), else the whole response (its tail). VLMEvalKit hands the
whole response to the rule and, when the rule finds nothing, to its judge; our prompts ask for a
boxed answer, so the box's content is what its judge would extract (evals/README.md, "Scoring").

- ``vlm_choice``: ``can_infer`` (option letter standing alone among the last tokens, else the one
  option text contained in it); ``"Z"`` (a refusal) is never right.
- ``vlm_yorn``: ``YOrN_Extraction`` (yes only when "yes" occurs and "no" does not).
- ``mathvista``: ``post_check`` (multiple choice by ``can_infer``; integers / floats compared
  exactly after ``int()`` / ``float()``).
- ``mathvision``: ``can_infer`` then ``is_equal`` (without ``eval``, see ``mathv_is_equal``).
- ``dynamath``: ``DynaMath_auxeval`` without a judge (JSON "short answer", else the prediction).
- ``mathverse``: ``post_check_score`` (equal as text) or, where VLMEvalKit asks its judge,
  math-verify equivalence (``evals.scoring.check_math``).
"""
from __future__ import annotations

from harness.types import Sample

from evals import vlmeval_rules as vr

_MAX_PRED = 20_000


def prediction(response: str) -> str:
    """The text a VLMEvalKit rule reads: the explicit final answer, else the response's tail."""
    from evals.scoring import final_answer

    ans = final_answer(response or "")
    if ans is not None:
        return ans
    text = (response or "").strip()
    return text[-_MAX_PRED:]


def _letter(text: str, sample: Sample) -> str | None:
    if sample.choices:
        return vr.can_infer(text, sample.choices)
    letters = sample.meta.get("letters") or list("ABCDE")
    return vr.modules().utils.can_infer_option(str(text), {k: k for k in letters}) or None


# ------------------------------------------------------------------ vlm_choice
def extract_vlm_choice(response: str, sample: Sample) -> str | None:
    return _letter(prediction(response), sample)


def check_vlm_choice(ans: str, sample: Sample) -> float:
    got = _letter(ans, sample)
    return float(got is not None and got != "Z" and got == (sample.answer or "").strip())


# ------------------------------------------------------------------ vlm_yorn
def extract_vlm_yorn(response: str, sample: Sample) -> str | None:
    got = vr.yorn_extraction(prediction(response))
    return None if got == "Unknown" else got.lower()


def check_vlm_yorn(ans: str, sample: Sample) -> float:
    return float(vr.yorn_extraction(ans).lower() == (sample.answer or "").strip().lower())


# ------------------------------------------------------------------ MathVista
def mathvista_line(sample: Sample, pred: str) -> dict:
    """The VLMEvalKit row of a MathVista sample with ``pred`` as both prediction and extraction."""
    mc = bool(sample.choices)
    answer = sample.choices.get(sample.answer or "", sample.answer) if mc else sample.answer
    return vr.mathvista_line(answer, "multi_choice" if mc else "free_form",
                             "text" if mc else str(sample.meta.get("answer_type") or "text"),
                             list(sample.choices.values()) if mc else None, pred)


def extract_prediction(response: str, sample: Sample) -> str | None:
    return prediction(response) or None


def check_mathvista(ans: str, sample: Sample) -> float:
    return float(vr.mathvista_post_check(mathvista_line(sample, ans)) is True)


# ------------------------------------------------------------------ MathVision
def check_mathvision(ans: str, sample: Sample) -> float:
    if sample.choices:
        got = vr.can_infer(ans, sample.choices)
        return float(got is not None and vr.mathv_is_equal(got, sample.answer or ""))
    return float(vr.mathv_is_equal(ans, sample.answer or ""))


# ------------------------------------------------------------------ DynaMath
def dynamath_type(sample: Sample) -> str:
    atype = str(sample.meta.get("answer_type") or "").lower()
    return "multiple choice" if "choice" in atype else ("float" if atype == "float" else "free form")


def check_dynamath(ans: str, sample: Sample) -> float:
    return float(bool(vr.dynamath_auxeval(ans, sample.answer or "", dynamath_type(sample))["correct"]))


# ------------------------------------------------------------------ MathVerse (free form)
def check_mathverse(ans: str, sample: Sample) -> float:
    if vr.mathverse_post_check(ans, sample.answer or ""):
        return 1.0
    from evals.scoring import check_math

    return check_math(ans, sample)
