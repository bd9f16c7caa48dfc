"""Regression tests of issue 17 (extraction time): inputs that were quadratic or exponential on the
old patterns; doubling each pathological input must at most triple the CPU time."""
from __future__ import annotations

import pytest

from cputime import doubling_ratio
from evals import scoring
from harness.answers import MAX_SCAN_CHARS, extract_answer, extract_choice, last_boxed
from harness.rewards import exact_match, format_reward, verify
from harness.types import Sample

MAX_RATIO = 3.0


def nested_boxes(k: int) -> str:
    return "\\boxed{" * k + "5" + "}" * k


def test_option_word_followed_by_whitespace_is_linear():
    # "Pick option" + n spaces + "1": the old (?:option|choice)\s*(?:is\s*)?:?\s* tried n^2 splits.
    ratio = doubling_ratio(lambda s: verify(s, "B", timeout_s=0), lambda n: "Pick option" + " " * n + "1", 4000)
    assert ratio <= MAX_RATIO


@pytest.mark.parametrize("entry", [
    last_boxed,
    extract_answer,
    lambda s: exact_match(s, "5"),
    lambda s: format_reward("<think>r</think>" + s),
    scoring.final_answer,
], ids=["last_boxed", "extract_answer", "exact_match", "format_reward", "evals.final_answer"])
def test_nested_boxes_unwrap_linearly(entry):
    assert last_boxed(nested_boxes(50)) == "5"
    assert doubling_ratio(entry, nested_boxes, 1000) <= MAX_RATIO


def test_multi_answer_letter_set_is_not_exponential():
    sample = Sample(id="t", prompt="q", answer="A", meta={"multi_answer": True})
    ratio = doubling_ratio(lambda s: scoring.letters_in_answer(s, sample), lambda k: "A" + " A" * k + "!", 8)
    assert ratio <= MAX_RATIO
    # the letter-set reading is unchanged
    assert scoring.letters_in_answer("A, C", sample) == "A, C"
    assert scoring.letters_in_answer("(A) and (C)", sample) == "A, C"
    assert scoring.letters_in_answer("A/B ; C", sample) == "A, B, C"


def test_answer_marker_with_long_whitespace_is_linear():
    ratio = doubling_ratio(extract_answer, lambda n: ("answer" + " " * 50 + "x ") * (n // 50) + "Answer: 5", 4000)
    assert ratio <= MAX_RATIO


def test_long_responses_are_read_from_their_tail():
    filler = "x" * (MAX_SCAN_CHARS + 10)
    assert extract_answer("\\boxed{" + filler + "} so \\boxed{7}") == "7"
    assert last_boxed("\\boxed{3}" + filler) is None  # beyond the window: no answer
    assert extract_choice(filler + " The answer is (C).") == "C"


# VLMEvalKit's rule functions (evals.vlmeval_families) on the responses that stress them: token
# lists, yes/no runs, digit runs, brace runs (its DynaMath rule looks for a JSON object)
def _score(bench: str, sample: Sample):
    from evals.benchmarks import REGISTRY

    return lambda s: REGISTRY[bench].score(sample, s)


_MC = Sample(id="t", prompt="q", answer="B", choices={"A": "3", "B": "12", "C": "7"}, meta={"benchmark": "mmstar"})
_YN = Sample(id="t", prompt="q", answer="yes", meta={"benchmark": "hallusionbench"})
_MV = Sample(id="t", prompt="q", answer="12", meta={"benchmark": "mathvista", "family": "mathvista",
                                                  "answer_type": "integer"})
_DM = Sample(id="t", prompt="q", answer="0.5", meta={"benchmark": "dynamath", "family": "dynamath",
                                                   "answer_type": "float"})


@pytest.mark.parametrize("bench,sample,make", [
    ("mmstar", _MC, lambda n: "A B C " * n),
    ("mmstar", _MC, lambda n: "12 " * n + "\n."),
    ("hallusionbench", _YN, lambda n: "yes, no; " * n + "\nok"),
    ("mathvista", _MV, lambda n: "9" * n + "\n."),
    ("dynamath", _DM, lambda n: "{" * n + "\"short answer\": 1" + "}" * n + "\n."),
], ids=["choice-letters", "choice-text", "yes-no", "mathvista-digits", "dynamath-braces"])
def test_vlmeval_rules_are_linear(bench, sample, make):
    _score(bench, sample)("warm up")          # loads VLMEvalKit's modules outside the measurement
    assert doubling_ratio(_score(bench, sample), make, 2000) <= MAX_RATIO
