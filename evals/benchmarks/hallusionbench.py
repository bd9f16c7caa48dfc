"""HallusionBench (Guan et al., 2024), the image split of ``lmms-lab/HallusionBench``: yes/no
questions, some without an image (``visual_input == "0"``).

Metrics (the benchmark's own): ``accuracy`` = aAcc (all questions); ``figure_acc`` = fAcc (a
figure counts when every question about it is right); ``question_acc`` = qAcc (a question counts
when it is right on every figure variant).
"""
from __future__ import annotations

from evals.benchmarks.base import Benchmark, group_scores
from evals.fixtures import make_image


class HallusionBench(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        has_image = str(row.get("visual_input", "1")) != "0" and row.get("image") is not None
        images = [self.image(row["image"], source, idx, "image")] if has_image else []
        gold = "yes" if str(row["gt_answer"]).strip() in ("1", "yes", "Yes") else "no"
        key = f"{row['category']}/{row['subcategory']}/{row['set_id']}"
        return self.make_sample(f"{key}/{row['figure_id']}/{row['question_id']}", row["question"], gold,
                                images=images, answer_type="yes_no",
                                extra="Answer yes or no.",
                                meta={"category": row["category"], "subcategory": row["subcategory"],
                                      "figure": f"{key}/{row['figure_id']}",
                                      "question": f"{key}/{row['question_id']}"})

    def smoke_rows(self, n=2, seed=0):
        return [{
            "category": "VD", "subcategory": "illusion", "visual_input": "1", "set_id": "0",
            "figure_id": str(i % 2), "sample_note": "smoke", "question_id": str(i // 2),
            "question": "Is the left shape red?", "gt_answer_details": "", "gt_answer": str(i % 2),
            "filename": f"VD/illusion/0_{i % 2}.png", "image": make_image(seed * 100 + i),
        } for i in range(n)]

    def metric_units(self, records):
        units = super().metric_units(records)
        units["figure_acc"] = [float(min(g) == 1.0) for g in group_scores(records, lambda r: r["meta"]["figure"])]
        units["question_acc"] = [float(min(g) == 1.0)
                                 for g in group_scores(records, lambda r: r["meta"]["question"])]
        return units


BENCHMARKS = [HallusionBench(
    name="hallusionbench", title="HallusionBench (image)", hf_id="lmms-lab/HallusionBench", split="image",
    size=951, tables=("REOPOLD visual table (§5.2): Hallusion",), family="yes_no",
    scoring="yes/no; aAcc (headline), fAcc, qAcc",
    required=("category", "subcategory", "set_id", "figure_id", "question_id", "question", "gt_answer"),
    group_by=("category",), notes="REOPOLD's Hallusion column is read as aAcc (question-level accuracy)")]
