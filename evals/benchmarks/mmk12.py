"""MMK12 (Meng et al., 2025), test split: K-12 maths / physics / chemistry / biology questions
with images; multiple-choice rows (gold a letter) are scored by letter, the rest by math-verify.
Sub-metric per subject.
Smoke items: easy-vqa test colour / shape questions, half multiple choice (options inline, letter
answer), half free form (the word) (evals/smoke.py).
"""
from __future__ import annotations

import re

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options


class MMK12(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        answer = str(row["answer"]).strip()
        meta = {"subject": row.get("subject")}
        if re.fullmatch(r"[A-F]", answer):
            choices = parse_inline_options(row["question"])
            s = self.make_sample(str(row["id"]), row["question"], answer, images=[img],
                                 answer_type="multiple_choice", instruction="choice",
                                 meta={**meta, "family": "choice", "letters": list(choices or "ABCDEF")})
            s.choices = choices or None
            return s
        return self.make_sample(str(row["id"]), row["question"], answer, images=[img], meta=meta)

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            key = f"{self.name}/{seed}/{i}/{it['image_id']}"
            opts = smoke.options(it["answer"], it["kind"], key) if smoke.key_int(key) % 2 == 0 else {}
            question = it["question"] + ("".join(f" {k}. {w}" for k, w in opts.items()) if opts else "")
            rows.append({"id": seed * 10000 + i, "subject": "math", "image": it["image"], "question": question,
                         "answer": smoke.option_letter(opts, it["answer"]) if opts else it["answer"]})
        return rows


BENCHMARKS = [MMK12(
    name="mmk12", title="MMK12 (test)", hf_id="FanqingM/MMK12", split="test", size=2000,
    tables=("PTD-PO Tab.1,2,4,5: MMK12",), family="math", scoring="letter (MC rows) / math-verify",
    required=("id", "image", "question", "answer"), group_by=("subject",),
    sampling={"temperature": 1.0, "k": 8})]
