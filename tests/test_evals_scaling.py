"""Property tests of the test-time scaling estimators (evals/scaling.py; REOPOLD Figure 1(b) /
Figure 13): Pass@k (Chen et al. 2021), Avg@k, Maj@k."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evals.scaling import item_curve, majority_vote, scaling_curve

SETTINGS = settings(max_examples=60, deadline=None)
draws = st.lists(st.booleans(), min_size=1, max_size=16)


@SETTINGS
@given(correct=draws)
def test_pass_at_1_is_the_mean_accuracy_and_pass_at_n_is_any_correct(correct):
    curve = item_curve(correct)
    n = len(correct)
    assert curve["pass"][1] == pytest.approx(sum(correct) / n)
    assert curve["pass"][n] == float(any(correct))
    assert curve["avg"][n] == pytest.approx(sum(correct) / n)


@SETTINGS
@given(correct=draws)
def test_pass_at_k_is_monotone_in_k_and_a_probability(correct):
    p = item_curve(correct)["pass"]
    values = [p[k] for k in sorted(p)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in zip(values, values[1:]))


@SETTINGS
@given(correct=draws, seed=st.randoms(use_true_random=False))
def test_pass_at_k_does_not_depend_on_the_draw_order(correct, seed):
    shuffled = list(correct)
    seed.shuffle(shuffled)
    assert item_curve(correct)["pass"] == pytest.approx(item_curve(shuffled)["pass"])


@SETTINGS
@given(correct=draws)
def test_pass_at_k_matches_brute_force_over_subsets(correct):
    from itertools import combinations

    n = len(correct)
    if n > 10:
        correct = correct[:10]
        n = 10
    p = item_curve(correct)["pass"]
    for k in range(1, n + 1):
        subsets = list(combinations(range(n), k))
        assert p[k] == pytest.approx(sum(any(correct[i] for i in s) for s in subsets) / len(subsets))


@SETTINGS
@given(answers=st.lists(st.sampled_from(["1", "2", "3", None, " "]), min_size=1, max_size=12))
def test_majority_vote_picks_the_most_frequent_answer_ties_to_the_first(answers):
    correct = [a is not None and a.strip() == "2" for a in answers]  # "2" is the right answer
    keys = [a.strip() for a in answers if a is not None and a.strip()]
    got = majority_vote(answers, correct)
    if not keys:
        assert got is False
        return
    top = max(keys.count(a) for a in set(keys))
    tied = [a for a in set(keys) if keys.count(a) == top]
    winner = min(tied, key=keys.index)
    assert got == (winner == "2")


@SETTINGS
@given(correct=draws)
def test_unanimous_answers_vote_their_own_correctness_and_maj_at_1_is_the_first_draw(correct):
    answers = ["x"] * len(correct)
    same = [correct[0]] * len(correct)
    assert majority_vote(answers, same) == correct[0]
    curve = item_curve(correct, [str(i % 3) for i in range(len(correct))])
    assert curve["maj"][1] == float(correct[0])


def test_scaling_curve_averages_items_in_percent():
    recs = [{"correct": [True, False, False, True], "extracted": ["a", "b", "b", "a"]},
            {"correct": [False, False, False, False], "extracted": ["c", "d", None, "d"]}]
    cur = scaling_curve(recs)
    assert cur["k"] == [1, 2, 3, 4] and cur["n_items"] == 2 and cur["n_draws"] == 4
    assert cur["pass"][0] == pytest.approx(25.0)  # mean accuracy
    assert cur["pass"][3] == pytest.approx(50.0)  # any-correct: first item only
    assert cur["avg"] == pytest.approx([50.0, 25.0, 100 / 6, 25.0])
    # maj: item 1 k=1 "a" ok; k=2 tie a/b -> a (first) ok; k=3 b wins -> wrong; k=4 tie -> a ok
    assert cur["maj"] == pytest.approx([50.0, 50.0, 0.0, 50.0])


def test_scaling_curve_reads_single_draw_records():
    cur = scaling_curve([{"correct": [True], "extracted": "7"}, {"correct": [False], "extracted": "3"}])
    assert cur["k"] == [1] and cur["pass"] == [50.0] and cur["maj"] == [50.0]
