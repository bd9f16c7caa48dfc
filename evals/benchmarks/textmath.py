"""Shared loader for the text-only competition-math benchmarks (REOPOLD's math table): a question
field, a gold-answer field, math-verify equivalence, the DeepSeek-R1 style instruction
("Please reason step by step, and put your final answer within \\boxed{}.").

Smoke items (all six): champ-dataset's **test** split (54 competition problems: inequalities,
number theory, polynomials, sequences, combinatorics), answers verbatim (some are phrases, e.g.
"0 is the only possible value"); ``n`` above 54 is capped at 54 (evals/smoke.py).
"""
from __future__ import annotations

from typing import Any, Callable

from evals import smoke
from evals.benchmarks.base import Benchmark

REOPOLD_SAMPLING = {"temperature": 0.6, "top_p": 0.95}


class TextMath(Benchmark):
    """``question_field`` / ``answer_field`` name the columns; ``answer_of`` post-processes the gold.
    ``extra_fields``: the schema's other columns for smoke rows, a value or ``f(i, problem)`` of the
    row's index and its champ problem (``id``, ``question``, ``answer``, ``category``, ``solution``)."""

    def __init__(self, *, question_field: str, answer_field: str, id_field: str | None = None,
                 answer_of: Callable[[Any], str] | None = None, extra_fields: dict | None = None,
                 meta_fields: tuple[str, ...] = (), smoke_answer: Callable[[str], Any] | None = None, **kw):
        kw.setdefault("family", "math")
        kw.setdefault("scoring", "math-verify equivalence of the last \\boxed{} answer")
        kw.setdefault("instruction", "step_by_step")
        kw.setdefault("kind", "text")
        kw.setdefault("sampling", REOPOLD_SAMPLING)
        kw.setdefault("required", (question_field, answer_field))
        kw.setdefault("group_by", meta_fields)
        super().__init__(**kw)
        self.question_field, self.answer_field, self.id_field = question_field, answer_field, id_field
        self.answer_of = answer_of or (lambda v: str(v))
        self.extra_fields = extra_fields or {}
        self.meta_fields = meta_fields
        self.smoke_answer = smoke_answer or (lambda a: a)

    def to_sample(self, row, idx, source, split=None):
        rid = row.get(self.id_field) if self.id_field else None
        meta = {k: row.get(k) for k in self.meta_fields}
        return self.make_sample(str(rid if rid is not None else idx), row[self.question_field],
                                self.answer_of(row[self.answer_field]), meta=meta)

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i, p in enumerate(smoke.champ_test(n, seed)):
            row = {k: (v(i, p) if callable(v) else v) for k, v in self.extra_fields.items()}
            row[self.question_field] = p["question"]
            row[self.answer_field] = self.smoke_answer(p["answer"])
            if self.id_field:
                row[self.id_field] = row.get(self.id_field, i)
            rows.append(row)
        return rows
