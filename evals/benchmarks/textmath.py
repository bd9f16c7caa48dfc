"""Shared loader for the text-only competition-math benchmarks (REOPOLD's math table): a question
field, a gold-answer field, math-verify equivalence, the DeepSeek-R1 style instruction
("Please reason step by step, and put your final answer within \\boxed{}.").
"""
from __future__ import annotations

from typing import Any, Callable

from evals.benchmarks.base import Benchmark

QUESTIONS = [("What is $1 + 2 \\cdot 3$?", "7"), ("Simplify $\\frac{6}{8}$.", "\\frac{3}{4}"),
             ("Find the positive root of $x^2 = 2$.", "\\sqrt{2}"), ("Compute $2^{10}$.", "1024")]
REOPOLD_SAMPLING = {"temperature": 0.6, "top_p": 0.95}


class TextMath(Benchmark):
    """``question_field`` / ``answer_field`` name the columns; ``answer_of`` post-processes the gold."""

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
        for i in range(n):
            q, a = QUESTIONS[(seed + i) % len(QUESTIONS)]
            row = {k: (v(i) if callable(v) else v) for k, v in self.extra_fields.items()}
            row[self.question_field] = q
            row[self.answer_field] = self.smoke_answer(a)
            if self.id_field:
                row[self.id_field] = row.get(self.id_field, i)
            rows.append(row)
        return rows
