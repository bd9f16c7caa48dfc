"""HallusionBench (Guan et al., 2024), the image split of ``lmms-lab/HallusionBench``: yes/no
questions, some without an image (``visual_input == "0"``).

Metrics (the benchmark's own): ``accuracy`` = aAcc (all questions); ``figure_acc`` = fAcc (a
figure counts when every question about it is right); ``question_acc`` = qAcc (a question counts
when it is right on every figure variant).
Smoke items: sets of two easy-vqa test figures differing in colour or shape, each asked both yes/no
questions ("Is the shape in the image a circle?"; balanced yes / no) (evals/smoke.py).
"""
from __future__ import annotations

import random

from evals import smoke
from evals.benchmarks.base import Benchmark, group_scores


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
        # a set = two easy-vqa test figures that differ in one attribute (colour or shape) and two
        # questions, each asked of both figures: "Is the shape a circle?" is yes on one, no on the
        # other, so yes / no are balanced and fAcc / qAcc are meaningful
        attrs = smoke.attributes()
        ids = smoke.full_ids()
        rng = random.Random(smoke.key_int("evals-smoke", self.name, seed))
        rows = []
        for s in range(max(1, -(-n // 4))):
            kind = ("color", "shape")[s % 2]
            first = rng.choice(ids)
            second = rng.choice([i for i in ids if attrs[i][kind] != attrs[first][kind]])
            values = [attrs[first][kind], attrs[second][kind]]
            for fig, image_id in enumerate((first, second)):
                for qid, value in enumerate(values):
                    truth = attrs[image_id][kind] == value
                    rows.append({
                        "category": "VD", "subcategory": "figure", "visual_input": "1", "set_id": str(seed * 10000 + s),
                        "figure_id": str(fig), "sample_note": "easy-vqa 1.0 (test)", "question_id": str(qid),
                        "question": (f"Is the shape in the image {value}?" if kind == "color" else
                                     f"Is the shape in the image a {value}?"),
                        "gt_answer_details": (f"The shape is {attrs[image_id]['color']} and a "
                                              f"{attrs[image_id]['shape']}."),
                        "gt_answer": "1" if truth else "0",
                        "filename": f"VD/figure/{seed * 10000 + s}_{fig}.png", "image": smoke.test_image(image_id),
                    })
        return rows[:max(n, 1)]

    def metric_units(self, records):
        units = super().metric_units(records)
        units["figure_acc"] = [float(min(g) == 1.0) for g in group_scores(records, lambda r: r["meta"]["figure"])]
        units["question_acc"] = [float(min(g) == 1.0)
                                 for g in group_scores(records, lambda r: r["meta"]["question"])]
        return units


BENCHMARKS = [HallusionBench(
    name="hallusionbench", title="HallusionBench (image)", hf_id="lmms-lab/HallusionBench", split="image",
    size=951, tables=("REOPOLD visual table (§5.2): Hallusion",), family="vlm_yorn",
    scoring="yes/no (VLMEvalKit YOrN_Extraction); aAcc (headline), fAcc, qAcc",
    required=("category", "subcategory", "set_id", "figure_id", "question_id", "question", "gt_answer"),
    group_by=("category",), notes="REOPOLD's Hallusion column is read as aAcc (question-level accuracy)")]
