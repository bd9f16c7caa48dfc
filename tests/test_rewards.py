"""Answer extraction and verification: notations, adversarial text, hard time limit, no execution."""
from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.answers import last_boxed, normalize_answer
from harness.rewards import (
    exact_match,
    extract_answer,
    extract_choice,
    format_reward,
    match_choice_text,
    math_reward,
    verifier_stats,
    verify,
)

# 9^(9^9) has ~370 million digits: math-verify/sympy spends minutes on it (measured > 30 s in the
# worker, under its memory cap) — a real pathological input, not a mocked sleep.
SLOW = r"The answer is \boxed{9^{9^{9}}}."
SLACK_S = 1.5  # IPC + killing/reaping the worker, on a loaded 2-core machine


# ---------------------------------------------------------------- extraction
@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),  # nested braces
        (r"\boxed{\boxed{5}}", "5"),  # a box wrapping a box
        (r"first \boxed{1}, then \boxed{2}", "2"),  # the last box counts
        (r"\boxed{\text{a } \{x\}}", r"\text{a } \{x\}"),  # escaped braces are not groups
        (r"\fbox{7}", "7"),
        (r"\boxed {$12$}", "12"),
        (r"\boxed{3} and then \boxed{4", None),  # truncated last box: no boxed answer
        ("<think>hm</think><answer> 42 </answer>", "42"),
        ("<answer>1</answer> <answer>2</answer>", "2"),
        ("Thus the answer is $\\frac{3}{4}$. Done.", r"\frac{3}{4}"),
        ("Answer: 17.", "17"),
        ("**Final Answer:** 5.5 cm.", "5.5 cm"),
        ("Final answer:\n  x = 3", "x = 3"),
        ("The answer is (C).", "C"),
        ("Reasoning...\nTherefore we pick (D)", "D"),
        ("12", "12"),  # a bare short answer
        ("I think about it.\nLong reasoning without any final statement", None),
        ("", None),
        ("   \n", None),
        (r"\boxed{}", None),
        (r"\boxed{n!}", "n!"),  # "!" is a factorial, not punctuation
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(B)", "B"),
        ("B.", "B"),
        ("B) 12", "B"),
        ("Answer: B", "B"),
        (r"\boxed{B}", "B"),
        (r"\boxed{B. 12}", "B"),
        (r"\boxed{(C) 3/11}", "C"),
        (r"\boxed{\text{D}}", "D"),
        ("The correct option is B because it fits.", "B"),
        ("The answer is Option A.", "A"),
        (r"\boxed{12}", None),  # a value, not a letter: match_choice_text's job
        ("A cat sits on a mat and looks at B and C", None),  # ambiguous
        (r"\boxed{K}", None),  # not an offered letter
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, letters="ABCDEFGHIJ") == expected


def test_match_choice_text():
    choices = {"A": "1", "B": "12", "C": "red apple"}
    assert match_choice_text(r"\boxed{12}", choices) == "B"  # "1" does not occur in "12"
    assert match_choice_text("The answer is Red Apple.", choices) == "C"
    assert match_choice_text("It is either 1 or 12", choices) is None  # ambiguous
    assert match_choice_text("banana", choices) is None
    assert verify(r"\boxed{12}", "B", choices=choices)
    assert not verify(r"\boxed{1}", "B", choices=choices)


# ---------------------------------------------------------------- equivalence
@pytest.mark.parametrize(
    "response, gold, expected",
    [
        (r"\boxed{\frac{1}{2}}", "0.5", True),
        (r"\boxed{0.5}", r"\frac{1}{2}", True),
        (r"\boxed{\dfrac{3}{4}}", "0.75", True),
        (r"\boxed{\tfrac12}", r"\frac{1}{2}", True),
        (r"\boxed{0.3}", r"\frac{1}{3}", False),
        # percent: p% equals p and p/100; plain 50 is not 0.5
        (r"\boxed{50\%}", "0.5", True),
        (r"\boxed{50\%}", "50", True),
        (r"\boxed{50}", "50%", True),
        (r"\boxed{0.5}", r"50\%", True),
        (r"\boxed{50}", "0.5", False),
        (r"\boxed{40\%}", "0.5", False),
        # units are dropped
        (r"\boxed{12 \text{ cm}}", "12", True),
        (r"\boxed{12\,\mathrm{cm}}", "12", True),
        ("The answer is 12 cm.", "12", True),
        (r"\boxed{90^\circ}", "90", True),
        (r"\boxed{13 \text{ cm}}", "12", False),
        # sets and intervals
        (r"\boxed{\{2,1\}}", r"\{1,2\}", True),
        (r"\boxed{\{1,3\}}", r"\{1,2\}", False),
        (r"\boxed{[1,2)}", "[1, 2)", True),
        (r"\boxed{(1,2]}", "[1, 2)", False),
        # LaTeX vs plain, symbolic
        (r"\boxed{x^{2}+1}", "1 + x^2", True),
        (r"\boxed{\sqrt{12}}", r"2\sqrt{3}", True),
        (r"\boxed{\frac{\sqrt{2}}{2}}", "sqrt(2)/2", True),
        (r"\boxed{x = 3}", "3", True),
        (r"\boxed{\pi}", "3.14159265", True),
        # signs, separators, words, gold given boxed
        (r"\boxed{-3}", "-3", True),
        (r"\boxed{-3}", "3", False),
        (r"\boxed{-\frac{1}{2}}", "-0.5", True),
        (r"\boxed{1,000}", "1000", True),
        (r"\boxed{1{,}000}", "1000", True),
        (r"\boxed{1,000}", "100", False),
        (r"\boxed{Yes}", "yes", True),
        (r"\boxed{7}", r"\boxed{7}", True),
        # multiple choice
        (r"\boxed{B. 12}", "(B)", True),
        ("(B)", "B", True),
        ("Answer: C", "B", False),
        # no answer
        ("I am not sure.\nMaybe later.", "5", False),
        ("", "5", False),
    ],
)
def test_verify_notations(response, gold, expected):
    assert verify(response, gold) is expected
    assert math_reward(response, gold) == (1.0 if expected else 0.0)


def test_exact_match_is_strict():
    assert exact_match(r"so \boxed{ \dfrac{1}{2} }.", r"\frac{1}{2}")
    assert exact_match(r"\boxed{\left(1, 2\right)}", "(1,2)")
    assert exact_match(r"\boxed{12\,\text{cm}}", "12cm")
    assert not exact_match(r"\boxed{0.5}", r"\frac{1}{2}")  # equivalent, but not the same string
    assert not exact_match("The answer is 5", "5")  # no box, no match
    assert not exact_match(r"\boxed{5", "5")
    assert normalize_answer(r"$ \left[ 1 , 2 \right) $.") == "[1,2)"


def test_format_reward():
    good = "<think>\nadd them up\n</think>\nThe sum is \\boxed{4}."
    assert format_reward(good) == 1.0
    assert format_reward("<think> </think> \\boxed{4}") == 0.0  # empty reasoning
    assert format_reward("<think>x</think> the answer is 4") == 0.0  # no box
    assert format_reward("<think>x</think><think>y</think>\\boxed{4}") == 0.0  # two blocks
    assert format_reward("\\boxed{4} <think>x</think>") == 0.0  # box before reasoning only
    assert format_reward("<think>x \\boxed{4}</think>") == 0.0  # box inside the reasoning
    assert format_reward("<think>x</think> \\boxed{4") == 0.0  # unclosed box
    assert format_reward("x</think> \\boxed{4}", opened_in_prompt=True) == 1.0
    assert format_reward("<reason>x</reason> \\boxed{4}", think_tag="reason") == 1.0
    assert format_reward("just \\boxed{4}", think_tag=None) == 1.0
    assert format_reward("just 4", think_tag=None) == 0.0


# ---------------------------------------------------------------- robustness (hypothesis)
LATEX_BITS = st.sampled_from(
    ["\\boxed{", "\\fbox{", "{", "}", "\\{", "\\}", "\\", "$", "\\frac", "^", "_", "10^{10^{10}}",
     "<answer>", "</answer>", "Answer:", "the answer is", "(B)", "B.", "1,000", "%", "\\text{",
     "\\left(", "\\right)", "\\sqrt", "x", "=", "0.5", " ", "\n", "é", "\\infty", "!"]
)
ADVERSARIAL = st.one_of(
    st.text(max_size=300),
    st.lists(LATEX_BITS, max_size=60).map("".join),
    st.integers(1, 3000).map(lambda n: "\\boxed{" + "{" * n + "1" + "}" * n + "}"),
    st.integers(1, 3000).map(lambda n: "\\boxed{" * n),  # unclosed, deeply nested
    st.integers(1, 3000).map(lambda n: "\\boxed{" + "(" * n + "}"),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(ADVERSARIAL)
def test_extraction_never_raises_and_is_fast(text):
    t0 = time.monotonic()
    ans = extract_answer(text)
    assert ans is None or (isinstance(ans, str) and ans)
    choice = extract_choice(text)
    assert choice is None or choice in "ABCDEFGHIJ"
    match_choice_text(text, {"A": "1", "B": "x"})
    format_reward(text)
    exact_match(text, "1")
    assert time.monotonic() - t0 < 0.5


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(ADVERSARIAL, st.sampled_from(["5", r"\frac{1}{2}", "x^2", r"\{1,2\}", "B", "[0, 1)"]))
def test_verify_never_raises_and_respects_limit(text, gold):
    t0 = time.monotonic()
    assert verify(text, gold, timeout_s=1.0) in (True, False)
    assert time.monotonic() - t0 < 1.0 + SLACK_S + 3.0  # + a possible worker restart


@pytest.mark.parametrize(
    "response",
    [
        r"\boxed{10^{10^{10}}}",
        r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}",
        r"\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}",
        "The answer is " + "2^" * 200 + "2",
        r"\boxed{" + "x+" * 3000 + "1}",
    ],
    ids=["tower", "deep-braces", "deep-parens", "power-chain", "long-sum"],
)
def test_pathological_latex_returns_false_in_time(response):
    _warm()
    t0 = time.monotonic()
    assert verify(response, "5", timeout_s=1.0) is False
    assert time.monotonic() - t0 < 1.0 + SLACK_S


# ---------------------------------------------------------------- the hard time limit
def _warm() -> None:
    """Start a worker (the one-off ~1 s import) so that timings measure only the limit."""
    assert verify(r"\boxed{2x}", "x + x", timeout_s=60.0)


def test_time_limit_is_enforced_by_killing_the_worker():
    _warm()
    before = verifier_stats().timeouts
    t0 = time.monotonic()
    assert verify(SLOW, "5", timeout_s=1.0) is False
    assert time.monotonic() - t0 < 1.0 + SLACK_S
    assert verifier_stats().timeouts == before + 1  # it was the limit, not a quick "no"
    assert verify(r"\boxed{2x}", "x + x", timeout_s=30.0)  # a fresh worker took over


def test_time_limit_holds_in_worker_threads():
    _warm()
    jobs = [(SLOW, "5"), (r"\boxed{\frac{1}{2}}", "0.5"), (SLOW, "7"), (r"\boxed{2x}", "x+x")]
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda job: verify(*job, timeout_s=1.0), jobs))
    # two slow jobs can each start a worker (~1 s) and then run out their 1 s limit
    assert time.monotonic() - t0 < 2 * (1.0 + SLACK_S) + 2.0
    assert results == [False, True, False, True]


def _verify_in_child(response: str, gold: str) -> tuple[bool, float, int]:
    verify(r"\boxed{2x}", "x + x", timeout_s=60.0)  # warm this process's own worker
    t0 = time.monotonic()
    result = verify(response, gold, timeout_s=1.0)
    return result, time.monotonic() - t0, verifier_stats().timeouts


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_time_limit_holds_in_multiprocessing_worker(method):
    _warm()  # with "fork", the child must not reuse the parent's worker pipes
    with mp.get_context(method).Pool(1) as pool:  # a daemonic process
        result, elapsed, timeouts = pool.apply(_verify_in_child, (SLOW, "5"))
        assert result is False and elapsed < 1.0 + SLACK_S and timeouts == 1
        assert pool.apply(_verify_in_child, (r"\boxed{0.5}", r"\frac{1}{2}"))[0] is True
    assert verify(r"\boxed{2x}", "x + x", timeout_s=30.0)  # the parent's pool still works


# ---------------------------------------------------------------- nothing is executed
@pytest.mark.parametrize(
    "template",
    [
        r"\boxed{{__import__('os').system('touch {path}')}}",
        "The answer is __import__('os').system('touch {path}')",
        "Answer: 1 + __import__('os').system('touch {path}')",
        r"$\boxed{{\text{{exec}}(\text{{\"import os; os.system('touch {path}')\"}})}}$",
        "<answer>eval(\"__import__('os').system('touch {path}')\")</answer>",
    ],
)
def test_model_output_is_never_executed(tmp_path, template):
    marker = tmp_path / "pwned"
    response = template.format(path=marker)
    for gold in ["0", "x", r"\frac{1}{2}", "B"]:
        verify(response, gold, timeout_s=5.0)
        exact_match(response, gold)
    assert not marker.exists()


def test_last_boxed_matches_braces_linearly():
    text = r"\boxed{" + "a{" * 20000 + "}" * 20000 + "}"
    t0 = time.monotonic()
    assert last_boxed(text) == "a{" * 20000 + "}" * 20000
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("response,expected", [
    ("Option B is right, and option C is rejected.", None),   # several options named: not settled
    ("Choice B fits; choice B it is", "B"),
    ("The answer is B; C is ruled out.", "B"),                 # the answer, then a clause about C
    ("The answer is B. It is not C.", "B"),
])
def test_choice_kinds_of_issue_16(response, expected):
    from harness.answers import extract_choice

    assert extract_choice(response) == expected
    assert verify(response, "B", timeout_s=0) == (expected == "B")
