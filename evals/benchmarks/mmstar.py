"""MMStar (Chen et al., 2024), val split: 1,500 vision-indispensable multiple-choice questions.

The options are written into the question (``"Options: A: ..., B: ..."``); scored by letter.
Sub-metrics: per core capability (category) and per l2 category.
"""
from __future__ import annotations

from harness.errors import DataError

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import split_question_options
from evals.fixtures import make_image


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
        return [{
            "index": seed * 100 + i, "image": make_image(seed * 100 + i),
            "question": "Which colour is the largest shape?\nOptions: A: red, B: blue, C: green, D: black",
            "answer": "ABCD"[i % 4], "category": "coarse perception", "l2_category": "image scene and topic",
            "meta_info": {"source": "smoke", "split": "val", "image_path": f"{i}.jpg"},
        } for i in range(n)]


BENCHMARKS = [MMStar(
    name="mmstar", title="MMStar", hf_id="Lin-Chen/MMStar", split="val", size=1500,
    tables=("VOLD Tab.1-3,5: MMStar",), scoring="option letter", family="choice",
    required=("index", "question", "image", "answer"), group_by=("category", "l2_category"))]
