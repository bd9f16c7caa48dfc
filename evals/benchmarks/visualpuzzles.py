"""VisualPuzzles (Song et al., 2025): 1,168 multiple-choice puzzles testing algorithmic,
analogical, deductive, inductive and spatial reasoning with minimal domain knowledge.
Scored by letter; sub-metric per category.
Smoke items: easy-vqa test colour / shape questions, 4 options as a list (category: Spatial for shape,
Inductive for colour) (evals/smoke.py).
"""
from __future__ import annotations

from evals import smoke
from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import choices_from_list, parse_list_field


class VisualPuzzles(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        options = parse_list_field(row.get("options"), source, idx, "options")
        return self.make_sample(str(row["id"]), row["question"], row["answer"], images=[img],
                                choices=choices_from_list(options) if options else None,
                                answer_type="multiple_choice",
                                meta={"category": row.get("category"), "letters": list("ABCD")})

    def smoke_rows(self, n=2, seed=0):
        rows = []
        for i, it in enumerate(smoke.items(self.name, n, seed)):
            opts = smoke.options(it["answer"], it["kind"], f"{self.name}/{seed}/{i}/{it['image_id']}", k=4)
            rows.append({"id": seed * 10000 + i, "category": "Spatial" if it["kind"] == "shape" else "Inductive",
                         "image": it["image"], "question": it["question"], "options": list(opts.values()),
                         "answer": smoke.option_letter(opts, it["answer"])})
        return rows


BENCHMARKS = [VisualPuzzles(
    name="visualpuzzles", title="VisualPuzzles", hf_id="neulab/VisualPuzzles", split="test", size=1168,
    tables=("VGS Tab.1,2,5: VisualPuzzles",), family="choice", scoring="option letter",
    required=("id", "image", "question", "answer"), group_by=("category",))]
