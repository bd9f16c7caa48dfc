"""LogicVista (Xiao et al., 2024): 448 visual logical-reasoning multiple-choice questions; some
have several correct letters (``"A, C"``), which must all be given and nothing else.
Sub-metrics: per skill and per broad capability.
"""
from __future__ import annotations

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import parse_inline_options
from evals.fixtures import make_image


class LogicVista(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        choices = parse_inline_options(row["question"])
        s = self.make_sample(str(row["id"]), row["question"], row["answer"], images=[img],
                             answer_type="multiple_choice", instruction=(
                                 "Answer with the letter(s) of the correct option(s), within \\boxed{}."),
                             meta={"skill": row.get("skill"), "broad_capability": row.get("broad_capability"),
                                   "letters": list(choices or "ABCDE"), "multi_answer": True})
        s.choices = choices or None
        return s

    def smoke_rows(self, n=2, seed=0):
        return [{
            "id": f"{seed * 100 + i}", "image": make_image(seed * 100 + i),
            "question": "Which shapes are circles? A. the first B. the second C. the third D. none",
            "answer": "A, C" if i % 2 else "B", "reasoning": "Look at the shapes.",
            "skill": "spatial" if i % 2 else "inductive", "broad_capability": "spatial reasoning",
            "specific_capability": "shape", "imagesource": "smoke", "sourcelink": "", "liscenced": "yes",
        } for i in range(n)]


BENCHMARKS = [LogicVista(
    name="logicvista", title="LogicVista", hf_id="lscpku/LogicVista", split="test", size=448,
    tables=("VOLD Tab.1-3,5: LogicVista", "VGS Tab.1,2,5: LogicVista", "PTD-PO Tab.1,2,4,5: LogicVista"),
    scoring="option letter set (exact)", family="choice",
    required=("id", "question", "answer", "image"), group_by=("skill", "broad_capability"))]
