"""Test-time scaling curves from k sampled generations per item: Pass@k, Avg@k and Maj@k for
every k up to the number of draws (REOPOLD §5.2 "Result 2" / Figure 1(b), App. D Figure 13:
Pass@k and Maj@k against k on Geometry3K and MathVerse).

All functions are pure: they read the per-draw ``correct`` flags and ``extracted`` answers that
``evals.run`` writes into ``records.jsonl`` in sample mode (one list entry per draw, in draw order).

- ``pass@k``: the unbiased estimator of Chen et al. (2021), ``1 - C(n - c, k) / C(n, k)`` from all
  n draws (``evals.stats.pass_at_k``): the probability that at least one of k draws is correct.
- ``avg@k``: the mean accuracy of the first k draws — what an evaluation with k samples reports as
  Avg@k (its expectation does not depend on k; the curve shows how far k draws pin it down).
- ``maj@k``: majority vote over the extracted answers of the first k draws; draws with no
  extracted answer abstain; ties go to the tied answer drawn first (deterministic); the item is
  correct when the voted answer's draw was scored correct; no vote (every draw abstained) is wrong.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from evals.stats import pass_at_k

METRICS = ("pass", "avg", "maj")


def _answer_key(answer: Any) -> Optional[str]:
    """The vote key of an extracted answer: its text with surrounding spaces removed; None (abstain)
    for a missing or empty answer."""
    if answer is None:
        return None
    text = str(answer).strip()
    return text or None


def majority_vote(answers: Sequence[Any], correct: Sequence[bool]) -> bool:
    """Whether the majority answer of these draws is correct (see the module docstring): the most
    frequent non-empty answer, ties to the one drawn first; no answer at all counts as wrong."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers for {len(correct)} correctness flags")
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, a in enumerate(answers):
        key = _answer_key(a)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    if not counts:
        return False
    best = min(counts, key=lambda a: (-counts[a], first[a]))
    return bool(correct[first[best]])


def item_curve(correct: Sequence[bool], answers: Optional[Sequence[Any]] = None,
               ks: Optional[Sequence[int]] = None) -> dict[str, dict[int, float]]:
    """Pass@k, Avg@k and (with ``answers``) Maj@k of one item, as fractions, for every k in ``ks``
    (default 1..n, n = number of draws)."""
    n = len(correct)
    if n == 0:
        raise ValueError("no draws")
    c = sum(bool(x) for x in correct)
    ks = list(ks) if ks is not None else list(range(1, n + 1))
    if any(k < 1 or k > n for k in ks):
        raise ValueError(f"k must be in 1..{n}, got {ks}")
    out: dict[str, dict[int, float]] = {
        "pass": {k: pass_at_k(n, c, k) for k in ks},
        "avg": {k: sum(bool(x) for x in correct[:k]) / k for k in ks},
    }
    if answers is not None:
        out["maj"] = {k: float(majority_vote(answers[:k], correct[:k])) for k in ks}
    return out


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def scaling_curve(records: Sequence[dict], ks: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Benchmark-level curves (percent) from sampled ``records`` (``correct``: list of bools, one per
    draw; ``extracted``: the answers, a list, or a single value when k = 1): for every k up to the
    smallest number of draws of any item, the item mean of Pass@k, Avg@k and Maj@k.
    Returns ``{"n_items", "n_draws", "k": [...], "pass": [...], "avg": [...], "maj": [...]}``."""
    if not records:
        raise ValueError("no records")
    draws = min(len(_as_list(r["correct"])) for r in records)
    ks = list(ks) if ks is not None else list(range(1, draws + 1))
    sums = {m: [0.0] * len(ks) for m in METRICS}
    for r in records:
        correct = _as_list(r["correct"])
        answers = _as_list(r.get("extracted")) if "extracted" in r else [None] * len(correct)
        curve = item_curve(correct, answers if len(answers) == len(correct) else [None] * len(correct), ks)
        for m in METRICS:
            for i, k in enumerate(ks):
                sums[m][i] += curve[m][k]
    n = len(records)
    return {"n_items": n, "n_draws": draws, "k": ks, **{m: [100.0 * s / n for s in sums[m]] for m in METRICS}}


__all__ = ["METRICS", "item_curve", "majority_vote", "scaling_curve"]
