"""MMStar (Chen et al., 2024), val split: 1,500 vision-indispensable multiple-choice questions.

The options are written into the question (``"Options: A: ..., B: ..."``); scored by letter.
Sub-metrics: per core capability (category) and per l2 category.
Smoke items: easy-vqa test colour / shape questions as 4-option multiple choice (evals/smoke.py).
"""
from __future__ import annotations

from harness.errors import DataError

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import split_question_options


class MMStar(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        stem, choices = split_question_options(row["question"])
        if not choices:
            raise DataError(source, idx, "question", "no 'Options: A: ..., B: ...' in the question")
        img = self.image(row["image"], source, idx, "image")
        return self.make_sample(str(row["index"]), stem, row["answer"], images=[img], choices=choices,
                                answer_type="multiple_choice",
                                meta={"category": row.get("category"), "l2_category": row.get("l2_category")})

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            opts = smoke.options(it["answer"], it["kind"], f"{self.name}/{seed}/{i}/{it['image_id']}", k=4)
            rows.append({
                "index": seed * 10000 + i, "image": it["image"],
                "question": f"{it['question']}\nOptions: " + ", ".join(f"{k}: {v}" for k, v in opts.items()),
                "answer": smoke.option_letter(opts, it["answer"]), "category": "fine-grained perception",
                "l2_category": "attribute & celebrity recognition",
                "meta_info": {"source": "easy-vqa 1.0 (test)", "split": "val",
                              "image_path": f"easy-vqa/test/{it['image_id']}.png"},
            })
        return rows


BENCHMARKS = [MMStar(
    name="mmstar", title="MMStar", hf_id="Lin-Chen/MMStar", split="val", size=1500,
    tables=("VOLD Tab.1-3,5: MMStar",), scoring="option letter (VLMEvalKit can_infer)", family="vlm_choice",
    required=("index", "question", "image", "answer"), group_by=("category", "l2_category"))]
