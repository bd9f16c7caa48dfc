"""The constant-answer baseline: the best headline metric a "model" reaches by giving one and the
same answer to every sample of a benchmark, scored by the benchmark's own scorer and aggregation.

A trained row that does not beat it has learned at most the output format (and the answer
distribution), not the task. Candidates: every option letter any sample offers (multiple choice),
every distinct gold answer (free form; this includes the most common one, and for LogicVista the
several-letter sets), each given as ``\\boxed{<constant>}``. Pure: no model, nothing evaluated.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from harness.types import Sample

from evals.benchmarks.base import Benchmark

# Sample.meta keys the answer families read (evals/scoring.py; Benchmark.score reads "family"):
# two samples that agree on these, the gold, the options and the response score the same, so
# scores are memoised on them (tests/test_evals_smoke_rows.py checks the list against scoring.py).
SCORING_META = ("family", "letters", "multi_answer", "precision", "abs_tol", "answers")
_MEMO: dict[tuple, dict[str, Any]] = {}
_MEMO_MAX = 200_000


def constant_response(constant: str) -> str:
    return f"The answer is \\boxed{{{constant}}}."


def candidates(samples: list[Sample]) -> list[str]:
    """Constant answers worth trying: the option letters offered, then the distinct gold answers,
    most common first."""
    letters: set[str] = set()
    for s in samples:
        if s.answer_type == "multiple_choice" or s.meta.get("family") == "choice":
            letters.update(s.meta.get("letters") or (s.choices or {}).keys())
    golds = [a for a, _ in Counter(s.answer for s in samples).most_common()]
    return sorted(letters) + [g for g in golds if g not in letters]


def _score(bench: Benchmark, sample: Sample, response: str) -> dict[str, Any]:
    key = (type(bench).score, bench.family, response, sample.answer, sample.answer_type,
           tuple(sorted((sample.choices or {}).items())),
           json.dumps({k: sample.meta.get(k) for k in SCORING_META}, sort_keys=True, default=str))
    hit = _MEMO.get(key)
    if hit is None:
        if len(_MEMO) >= _MEMO_MAX:
            _MEMO.clear()
        hit = _MEMO[key] = bench.score(sample, response)
    return hit


def constant_answer_baseline(bench: Benchmark, samples: list[Sample], metric: str | None = None,
                             max_constants: int | None = None) -> dict[str, Any]:
    """Score every constant answer (see :func:`candidates`; the first ``max_constants`` when given)
    on ``samples`` with ``bench``'s scorer and ``metric_units`` (``metric``: the benchmark's headline
    by default) and return the best: ``{"benchmark", "metric", "constant", "value" (percent), "n",
    "values" (constant -> percent, every candidate)}``. Ties go to the earlier candidate."""
    if not samples:
        raise ValueError(f"{bench.name}: no samples for a constant-answer baseline")
    metric = metric or bench.headline
    values: dict[str, float] = {}
    for constant in candidates(samples)[:max_constants]:
        response = constant_response(constant)
        records = []
        for s in samples:
            res = _score(bench, s, response)
            records.append({"id": s.id, "score": res["score"], "correct": [res["correct"]],
                            "meta": s.meta})
        agg = bench.aggregate(records)
        if metric not in agg:
            raise KeyError(f"{bench.name}: no metric {metric!r} (has {', '.join(agg)})")
        values[constant] = agg[metric]
    best = max(values, key=lambda c: values[c])        # first maximum: candidates' order breaks ties
    return {"benchmark": bench.name, "metric": metric, "constant": best, "value": values[best],
            "n": len(samples), "values": values}
