"""Rewards and evaluation agree with a plain math-verify call on final answers our rules do not
mark: display math, relations, matrices, comma decimals, unmarked prose endings (issue 16).

The reference is math-verify itself, called here directly: ``verify(parse(gold), parse(response))``
with its LaTeX and expression extraction configs (trusted inputs, its own timeouts).
"""
from __future__ import annotations

import pytest

from evals.benchmarks import REGISTRY
from harness.rewards import mathverify_extract, verify
from harness.types import Sample

CASES = [  # (response, gold, kind)
    ("We simplify both sides and find\n$$x = 5$$\n", "5", "display math"),
    ("Collecting terms gives\n\\[ y = \\frac{3}{4} \\]\nwhich is the value.", "\\frac{3}{4}", "display math"),
    ("So the solution set is $x \\geq 2$.\nThis completes the proof.", "x \\geq 2", "relation"),
    ("Therefore the inequality holds for\n$$x < -1$$", "x<-1", "relation"),
    ("Multiplying out,\n$$\\begin{pmatrix}1 & 2\\\\ 3 & 4\\end{pmatrix}$$", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
     "matrix"),
    ("The answer is 3,5", "3.5", "comma decimal"),
    ("Answer: 0,25", "0.25", "comma decimal"),
    ("Adding the parts,\nthe total is 42 apples.", "42", "unmarked"),
    ("Adding the parts,\nthe total is 41 apples.", "42", "unmarked (wrong)"),
    ("Therefore, the final answer is $\\frac{1}{2}$. I hope it is correct.", "0.5", "final answer phrase"),
    ("We get\n$$x = 7$$", "5", "display math (wrong)"),
    ("I could not solve this\nproblem at all.", "3", "no answer"),
]


def plain_math_verify(response: str, gold: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    from math_verify import verify as mv_verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    return bool(mv_verify(parse(f"${gold}$", configs), parse(response, configs)))


@pytest.mark.parametrize("response,gold,kind", CASES, ids=[c[2] for c in CASES])
def test_rewards_agree_with_math_verify(response, gold, kind):
    expected = plain_math_verify(response, gold)
    assert verify(response, gold) == expected
    assert expected == ("wrong" not in kind and kind != "no answer")


@pytest.mark.parametrize("response,gold,kind", CASES, ids=[c[2] for c in CASES])
def test_evaluation_agrees_with_math_verify(response, gold, kind):
    sample = Sample(id="t", prompt="q", answer=gold, meta={"benchmark": "math500"})
    got = REGISTRY["math500"].score(sample, response)
    assert got["correct"] == plain_math_verify(response, gold)


def test_extraction_is_math_verifys_own():
    assert mathverify_extract("We find\n$$x = 5$$") == "x = 5"
    assert mathverify_extract("nothing to see here") is None
    assert mathverify_extract("") is None
    assert mathverify_extract("$$x=1$$", timeout_s=0) is None


def test_a_marked_answer_is_not_overridden():
    # our marker wins: math-verify's extraction is only the fallback for unmarked answers
    assert verify("The answer is 4.\n$$x = 5$$", "4")
    assert not verify("\\boxed{4}\n$$x = 5$$", "5")
