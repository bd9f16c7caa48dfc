"""VisualPuzzles (Song et al., 2025): 1,168 multiple-choice puzzles testing algorithmic,
analogical, deductive, inductive and spatial reasoning with minimal domain knowledge.
Scored by letter; sub-metric per category."""
from __future__ import annotations

from evals.benchmarks.base import Benchmark
from evals.benchmarks.common import choices_from_list, parse_list_field
from evals.fixtures import make_image


class VisualPuzzles(Benchmark):
    def to_sample(self, row, idx, source, split=None):
        img = self.image(row["image"], source, idx, "image")
        options = parse_list_field(row.get("options"), source, idx, "options")
        return self.make_sample(str(row["id"]), row["question"], row["answer"], images=[img],
                                choices=choices_from_list(options) if options else None,
                                answer_type="multiple_choice",
                                meta={"category": row.get("category"), "letters": list("ABCD")})

    def smoke_rows(self, n=2, seed=0):
        cats = ("Algorithmic", "Analogical", "Deductive", "Inductive", "Spatial")
        return [{"id": seed * 100 + i, "category": cats[i % 5], "image": make_image(seed * 100 + i),
                 "question": "Which option completes the pattern?", "options": ["A", "B", "C", "D"],
                 "answer": "ABCD"[(i + 2) % 4]} for i in range(n)]


BENCHMARKS = [VisualPuzzles(
    name="visualpuzzles", title="VisualPuzzles", hf_id="neulab/VisualPuzzles", split="test", size=1168,
    tables=("VGS Tab.1,2,5: VisualPuzzles",), family="choice", scoring="option letter",
    required=("id", "image", "question", "answer"), group_by=("category",))]
