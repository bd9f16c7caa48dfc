"""InfographicVQA (Mathew et al., 2022), validation split of ``lmms-lab/DocVQA`` (config
``InfographicVQA``; test answers are hidden). Metric: ANLS (threshold 0.5) over the gold answers;
a response with ANLS >= 0.5 counts as correct for pass@k.
Smoke items: easy-vqa test colour / shape questions, free form (gold: the word; ANLS) (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark


class InfoVQA(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        answers = [str(a) for a in row["answers"]]
        return self.make_sample(str(row["questionId"]), row["question"], answers[0], images=[img],
                                answer_type="text", extra="Answer the question using a single word or phrase.",
                                meta={"answers": answers, "answer_type": (row.get("answer_type") or [None])[0]})

    def smoke_rows(self, n=2, seed=0):
        return [{
            "questionId": str(seed * 10000 + i), "question": it["question"], "answers": [it["answer"]],
            "answer_type": ["single span"], "image": it["image"], "image_url": "", "operation/reasoning": None,
            "ocr": "[]", "data_split": "val",
        } for i, it in enumerate(smoke.items(self.name, n, seed))]


BENCHMARKS = [InfoVQA(
    name="infovqa", title="InfographicVQA (val)", hf_id="lmms-lab/DocVQA", config="InfographicVQA",
    split="validation", size=2801, tables=("REOPOLD tool-use table (§5.3): InfoVQA",), family="anls",
    scoring="ANLS (tau = 0.5)", required=("questionId", "question", "answers", "image"),
    group_by=("answer_type",), sampling={"temperature": 1.0, "top_p": 1.0})]
