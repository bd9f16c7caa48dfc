"""Regression tests for bugs found in the correctness review of the committed code.

Each test failed before its fix; the docstring names the file and the defect.
"""
from __future__ import annotations

import pytest
import torch

from harness import losses
from harness.distributed import Strategy
from harness.rewards import verify
from harness.types import Sample, Trajectories
from harness.update import normalizers, select_rows


def _batch(mask: torch.Tensor) -> Trajectories:
    b, t = mask.shape
    return Trajectories(
        samples=[Sample(id=str(i), prompt="p") for i in range(b)],
        prompt_ids=torch.ones((b, 2), dtype=torch.long), prompt_mask=torch.ones((b, 2), dtype=torch.long),
        response_ids=torch.ones((b, t), dtype=torch.long), response_mask=mask,
        old_logp=torch.zeros((b, t)), group_ids=torch.arange(b), texts=[""] * b)


@pytest.mark.parametrize("agg", ["seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_global_sequence_count_matches_agg_loss_when_a_row_has_no_response_token(agg):
    """harness/update.py ``normalizers``: ``global_seqs`` counted every row, while ``agg_loss``
    defines N as the sequences with at least one valid token, so a row with an empty response
    mask made the micro-batched loss differ from the full-batch loss."""
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]])
    values = torch.randn(4, 3)
    full = losses.agg_loss(values, mask, agg, max_len=3)
    norm = normalizers(_batch(mask), Strategy("cpu"), max_len=3)
    pieces = sum(losses.agg_loss(values[i:i + 2], mask[i:i + 2], agg, global_tokens=norm.global_tokens,
                                 global_seqs=norm.global_seqs, max_len=norm.max_len) for i in (0, 2))
    assert torch.allclose(pieces, full), (float(pieces), float(full))
    # and the split along rows (what accumulate_update does) keeps each row whole
    assert len(select_rows(_batch(mask), [1, 3])) == 2


def test_multiple_choice_reward_needs_a_stated_answer():
    """harness/rewards.py ``verify``: with a letter gold, a response with no final answer at all
    scored whenever the letter appeared once as a word anywhere in its reasoning (VLMEvalKit's
    whole-text token rule), contradicting the module's rule "no extractable final answer: False"
    and rewarding answer-free responses during RL."""
    reasoning = ("Let B be the midpoint of the segment.\n"
                 "Then the triangle is isosceles and the angle at the apex is 40 degrees.")
    assert verify(reasoning, "B") is False
    # stated answers still count
    assert verify(reasoning + "\nSo the correct option is B.", "B") is True
    assert verify(reasoning + "\nTherefore the answer is (B).", "B") is True
    assert verify(reasoning + "\nWe pick (B).", "B") is True
    assert verify("B", "B") is True and verify(r"\boxed{B}", "B") is True
    assert verify(reasoning + "\nSo the correct option is C.", "B") is False


def test_dynamath_average_accuracy_is_bootstrapped_over_seed_questions():
    """evals/benchmarks/dynamath.py ``metric_units``: the average accuracy's units were the 5,010
    rows, so its bootstrap CI treated the 10 variants of one seed question as independent
    (too narrow). Units are now seed questions (mean over their variants); the mean is unchanged
    when every seed question has all its variants."""
    from evals.benchmarks import REGISTRY
    from evals.stats import bootstrap_ci

    bench = REGISTRY["dynamath"]
    records = []
    for q, ok in (("1", True), ("2", False), ("3", True)):
        for v in range(1, 11):
            right = ok if v != 10 else not ok
            records.append({"score": float(right), "correct": [right],
                            "meta": {"qid": q, "variant": v, "subject": "algebra", "knowledge_level": "hs",
                                     "answer_type": "float"}})
    units = bench.metric_units(records)
    assert len(units["accuracy"]) == 3
    assert sum(units["accuracy"]) / 3 == pytest.approx(sum(r["score"] for r in records) / len(records))
    assert len(units["worst_case"]) == 3 and len(units["subject=algebra"]) == 3
    lo, hi = bootstrap_ci(units["accuracy"])
    assert hi - lo > 0.5  # three clusters: the interval is wide, not the +-0.17 of 30 iid rows


def test_a_list_of_option_letters_is_not_a_choice():
    """harness/answers.py ``extract_choice``: the leading-letter rule accepted a comma after the
    letter, so ``\\boxed{A, B}`` (two options) was read as ``A`` and rewarded for gold A, while
    VLMEvalKit's ``can_infer_option`` rejects two letters."""
    from harness.answers import extract_choice

    for text in (r"\boxed{A, B}", r"\boxed{A,B,C,D}", "Answer: A, B"):
        assert extract_choice(text) is None, text
        assert verify(text, "A") is False, text
    assert extract_choice(r"\boxed{B, 12}") == "B"  # a letter followed by its option's value
    assert extract_choice(r"\boxed{B. 12}") == "B" and extract_choice(r"\boxed{B: 12}") == "B"
